"""Localisation AUPRC / AP / AUROC of attribution maps, as an ``evaluate`` metric module.

Load it offline by path: ``evaluate.load(hazyzoo.evaluation.metric_path("localization_auprc"))``.
Every datum is scored by ``hazyzoo.evaluation.prospector.localization_scores`` (the prospector
heads paper's protocol), so the module and ``hazyzoo eval prospector`` give the same numbers;
it therefore needs hazyzoo (and scikit-learn) besides ``evaluate`` and ``datasets``.
"""

import math

import datasets
import evaluate
import torch

from hazyzoo.evaluation.prospector import localization_scores

_CITATION = """\
@inproceedings{machiraju2024prospector,
  title={Prospector Heads: Generalized Feature Attribution for Large Models \\& Data},
  author={Machiraju, Gautam and Derry, Alexander and Desai, Arjun and Guha, Neel and
          Karimi, Amir-Hossein and Zou, James and Altman, Russ B. and R{\\'e}, Christopher and
          Mallick, Parag},
  booktitle={Proceedings of the 41st International Conference on Machine Learning},
  year={2024}
}
"""

_DESCRIPTION = """\
How well per-token attribution maps localise the tokens that carry the evidence. Each map is
scored against its 0/1 token ground truth: NaN positions (e.g. the background of a grid map)
are dropped, the map is min-max rescaled to [0, 1] (a constant map becomes all zeros), then
AUPRC is the trapezoidal area under scikit-learn's precision-recall curve
(auc(recall, precision), the prospector heads paper's number), AP is average_precision_score
and AUROC roc_auc_score. The results are the plain means over the scored data; a datum whose
ground truth is all 0 or all 1 over its scored positions cannot be scored: it is skipped and
counted (or, with skip_unscorable=False, an error).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one attribution map per datum, a list of floats (a sequence) or a list of
        rows of floats (a grid); NaN (or None) marks positions not to score.
    references: the 0/1 ground truth of each datum, the same shape as its map.
    skip_unscorable (bool, default True): skip data whose scored ground truth is all 0 or
        all 1 (counted in num_skipped) instead of raising a ValueError.
    return_per_datum (bool, default False): also return every scored datum's numbers.
Returns:
    auprc, ap, auroc (float): means over the scored data.
    num_scored, num_skipped (int): how many data were scored and skipped.
    per_datum (dict of lists): with return_per_datum=True, "auprc", "ap", "auroc" and
        "index" (the input position of each scored datum).
Examples:
    >>> metric = evaluate.load(path_to_this_folder)
    >>> metric.compute(predictions=[[0.1, 0.9, 0.8, 0.2]], references=[[0, 1, 1, 0]])
    {'auprc': 1.0, 'ap': 1.0, 'auroc': 1.0, 'num_scored': 1, 'num_skipped': 0}
"""

_SEQUENCE = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("float64")),
        "references": datasets.Sequence(datasets.Value("int64")),
    }
)
_GRID = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
        "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
    }
)


def _as_tensor(index, name, value, dtype):
    """A list (of lists) as a tensor, None read as NaN; ragged rows are an error."""

    def clean(v):
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return math.nan if v is None else v

    try:
        return torch.tensor(clean(value), dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}[{index}] is not a rectangular array of numbers: {err}") from err


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LocalizationAuprc(evaluate.Metric):
    """Mean localisation AUPRC, AP and AUROC of attribution maps against token ground truth."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[_SEQUENCE, _GRID],
            reference_urls=["https://arxiv.org/abs/2402.11729"],
        )

    def _compute(self, predictions, references, skip_unscorable=True, return_per_datum=False):
        if not references:
            raise ValueError("no data: predictions and references are empty")
        per = {"auprc": [], "ap": [], "auroc": [], "index": []}
        skipped = 0
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            attribution = _as_tensor(index, "predictions", prediction, torch.float64)
            truth = _as_tensor(index, "references", reference, torch.float64)
            if attribution.shape != truth.shape:
                raise ValueError(
                    f"predictions[{index}] has shape {tuple(attribution.shape)} but "
                    f"references[{index}] has shape {tuple(truth.shape)}"
                )
            kept = truth[~torch.isnan(attribution)]
            if skip_unscorable and kept.numel() and bool((kept == kept[0]).all()):
                if bool(((kept == 0) | (kept == 1)).all()):
                    skipped += 1
                    continue
            scores = localization_scores(attribution, truth)
            for key in ("auprc", "ap", "auroc"):
                per[key].append(scores[key])
            per["index"].append(index)
        if not per["index"]:
            raise ValueError(
                f"none of the {len(references)} data can be scored: every ground truth is all "
                "0 or all 1 over its scored positions"
            )
        n = len(per["index"])
        result = {key: sum(per[key]) / n for key in ("auprc", "ap", "auroc")}
        result.update(num_scored=n, num_skipped=skipped)
        if return_per_datum:
            result["per_datum"] = per
        return result

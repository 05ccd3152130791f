"""nDCG@k for ranked retrieval, as an ``evaluate`` metric module (computed with pytrec_eval).

Load it offline by path: ``evaluate.load(hazyzoo.evaluation.metric_path("ndcg_at_k"))``.
The module is self-contained (it needs ``evaluate``, ``datasets`` and ``pytrec_eval``, not
hazyzoo), so the folder can also be copied or pushed to the Hub as it is.
"""

import math

import datasets
import evaluate
import pytrec_eval

_CITATION = """\
@article{jarvelin2002cumulated,
  title={Cumulated gain-based evaluation of IR techniques},
  author={J{\\"a}rvelin, Kalervo and Kek{\\"a}l{\\"a}inen, Jaana},
  journal={ACM Transactions on Information Systems},
  volume={20},
  number={4},
  pages={422--446},
  year={2002}
}
"""

_DESCRIPTION = """\
Normalised discounted cumulative gain at cut-off k (nDCG@k) of ranked retrieval results with
binary relevance: DCG@k = sum over the first k retrieved documents of rel / log2(rank + 1),
divided by the DCG@k of the ideal ranking. Computed by pytrec_eval (trec_eval's ndcg_cut.k),
so equal scores are ordered by document id, descending, as trec_eval does. A query with no
retrieved documents scores 0; every query needs at least one relevant document. The result is
the mean over queries (the LoCoV1 and BEIR metric is nDCG@10).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one entry per query, either
        {"ids": [doc id, ...], "scores": [float, ...]} (retrieved documents and their scores;
        higher is better), or a plain list of doc ids, best first.
        Every entry must have the same form.
    references: one list per query of the ids of its relevant documents (binary relevance).
    k (int, default 10): the cut-off.
    return_per_query (bool, default False): also return the score of every query.
Returns:
    ndcg_at_k (float): the mean nDCG@k over queries.
    k (int): the cut-off used.
    per_query (list of float): with return_per_query=True, in the order of the inputs.
Examples:
    >>> metric = evaluate.load(path_to_this_folder)
    >>> metric.compute(
    ...     predictions=[{"ids": ["d1", "d2", "d3"], "scores": [0.9, 0.5, 0.1]}],
    ...     references=[["d3"]],
    ...     k=10,
    ... )
    {'ndcg_at_k': 0.5, 'k': 10}
"""

_SCORED = datasets.Features(
    {
        "predictions": {
            "ids": datasets.Sequence(datasets.Value("string")),
            "scores": datasets.Sequence(datasets.Value("float64")),
        },
        "references": datasets.Sequence(datasets.Value("string")),
    }
)
_RANKED = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("string")),
        "references": datasets.Sequence(datasets.Value("string")),
    }
)


def _ranked_scores(index, prediction):
    """{doc id: score} of one prediction (a ranked list gets scores n, n-1, ..., 1)."""
    if isinstance(prediction, dict):
        ids, scores = list(prediction["ids"]), list(prediction["scores"])
        if len(ids) != len(scores):
            raise ValueError(f"predictions[{index}] has {len(ids)} ids but {len(scores)} scores")
    else:
        ids = list(prediction)
        scores = [float(len(ids) - rank) for rank in range(len(ids))]
    run = {}
    for doc_id, score in zip(ids, scores):
        if doc_id in run:
            raise ValueError(f"predictions[{index}] retrieves {doc_id!r} more than once")
        if score is None or not math.isfinite(score):
            raise ValueError(f"predictions[{index}] gives {doc_id!r} the score {score!r}")
        run[doc_id] = float(score)
    return run


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NdcgAtK(evaluate.Metric):
    """nDCG@k of ranked retrieval with binary relevance (pytrec_eval's ndcg_cut)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[_SCORED, _RANKED],
            reference_urls=["https://github.com/cvangysel/pytrec_eval"],
        )

    def _compute(self, predictions, references, k=10, return_per_query=False):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if not references:
            raise ValueError("no queries: predictions and references are empty")
        width = len(str(len(references)))
        qrels, run = {}, {}
        for index, (prediction, relevant) in enumerate(zip(predictions, references)):
            qid = f"q{index:0{width}d}"
            if not relevant:
                raise ValueError(
                    f"references[{index}] is empty; nDCG is undefined without a relevant id"
                )
            qrels[qid] = {doc_id: 1 for doc_id in relevant}
            ranked = _ranked_scores(index, prediction)
            if ranked:
                run[qid] = ranked
        measured = {}
        if run:
            evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
            measured = evaluator.evaluate(run)
        key = f"ndcg_cut_{k}"
        per_query = [float(measured[q][key]) if q in measured else 0.0 for q in qrels]
        result = {"ndcg_at_k": sum(per_query) / len(per_query), "k": k}
        if return_per_query:
            result["per_query"] = per_query
        return result

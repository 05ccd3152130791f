"""pass@k (coverage) of repeated sampling, as an ``evaluate`` metric module.

Load it offline by path: ``evaluate.load(hazyzoo.evaluation.metric_path("pass_at_k"))``.
The numbers come from ``hazyzoo.evaluation.coverage_metrics.coverage_curve`` (the unbiased
estimator of Chen et al. 2021, in float64 product form), so the module and the rest of the
repeated-sampling evaluation agree; it therefore needs hazyzoo besides ``evaluate`` and
``datasets``.
"""

import datasets
import evaluate

from hazyzoo.evaluation.coverage_metrics import coverage_curve

_CITATION = """\
@article{chen2021evaluating,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and Tworek, Jerry and Jun, Heewoo and Yuan, Qiming and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
@article{brown2024monkeys,
  title={Large Language Monkeys: Scaling Inference Compute with Repeated Sampling},
  author={Brown, Bradley and Juravsky, Jordan and Ehrlich, Ryan and Clark, Ronald and
          Le, Quoc V. and R{\\'e}, Christopher and Mirhoseini, Azalia},
  journal={arXiv preprint arXiv:2407.21787},
  year={2024}
}
"""

_DESCRIPTION = """\
pass@k: the chance that at least one of k samples drawn for a problem is correct, averaged
over problems (the "coverage" of repeated sampling). From n samples per problem of which c
are correct, each problem contributes the unbiased estimate 1 - C(n-c, k) / C(n, k), which is
exactly 1 when n - c < k; it is computed as a float64 product of at most min(c, k) factors,
so n of ten thousand or more is fine. Every k must be at most the smallest n.
"""

_KWARGS_DESCRIPTION = """
Args:
    num_correct: one int per problem, how many of its samples are correct.
    num_samples: one int per problem, how many samples were drawn for it (>= num_correct).
    k (int or list of int, default [1]): the k to report; each 1 <= k <= min(num_samples).
Returns:
    "pass@<k>" (float) for every k, in the order given.
Examples:
    >>> metric = evaluate.load(path_to_this_folder)
    >>> metric.compute(num_correct=[0, 5], num_samples=[10, 10], k=[1, 10])
    {'pass@1': 0.25, 'pass@10': 0.5}
"""

_COUNTS = datasets.Features(
    {
        "num_correct": datasets.Value("int64"),
        "num_samples": datasets.Value("int64"),
    }
)


def _ks(k):
    """``k`` as a list of ints; a repeated k would collide in the result, so it is an error."""
    ks = [k] if isinstance(k, int) and not isinstance(k, bool) else list(k)
    if len(set(ks)) != len(ks):
        raise ValueError(f"k lists the same value more than once: {ks}")
    return ks


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAtK(evaluate.Metric):
    """Unbiased pass@k from per-problem sample and correct counts."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_COUNTS,
            reference_urls=["https://arxiv.org/abs/2107.03374", "https://arxiv.org/abs/2407.21787"],
        )

    def _compute(self, num_correct, num_samples, k=(1,)):
        ks = _ks(k)
        coverage = coverage_curve(num_samples, num_correct, ks)
        return {f"pass@{value}": float(c) for value, c in zip(ks, coverage)}

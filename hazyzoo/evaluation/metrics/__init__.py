"""``evaluate``-loadable metric modules shipped with hazyzoo, each a folder of its own.

``evaluate.load(metric_path("ndcg_at_k"))`` loads one offline (Hub metrics do not load
offline; a local folder does). :data:`METRICS` lists the folders.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRICS = ("localization_auprc", "ndcg_at_k", "pass_at_k")


def metric_path(name: str) -> str:
    """The folder of the metric module ``name``, for ``evaluate.load``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {list(METRICS)}")
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"the metric module {path / f'{name}.py'} is missing from this installation "
            "(is the metrics folder in setup.cfg [options.package_data]?)"
        )
    return str(path)


__all__ = ["METRICS", "METRICS_DIR", "metric_path"]

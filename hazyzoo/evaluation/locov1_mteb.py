"""LoCoV1 as mteb 2.x retrieval tasks (optional: ``pip install 'hazyzoo[mteb]'``).

One ``AbsTaskRetrieval`` subclass per LoCoV1 task (``LoCoV1GovReportRetrieval``, ...; main score
``ndcg_at_10``, split ``test``), whose data comes from :func:`hazyzoo.datasets_scripts.locov1.load_task`
(so the Hub datasets or a local copy, with the builder's checks)::

    import mteb
    from hazyzoo.evaluation.locov1_mteb import locov1_mteb_tasks
    from hazyzoo.integrations.sentence_transformers import load_sentence_transformer

    tasks = locov1_mteb_tasks(["gov_report", "qmsum"])  # or queries_source=..., documents_source=...
    results = mteb.evaluate(load_sentence_transformer("m2-32k"), tasks, cache=None)

mteb is imported only when a task class is built; nothing else in hazyzoo imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["locov1_mteb_task_class", "locov1_mteb_tasks", "mteb_task_name"]

_CLASSES: dict[str, type] = {}
_DOMAINS = {
    "summ_screen_fd": ["Spoken", "Fiction"],
    "gov_report": ["Government", "Non-fiction"],
    "qmsum": ["Spoken"],
    "qasper_title": ["Academic"],
    "qasper_abstract": ["Academic"],
    "multifieldqa": ["Non-fiction"],
    "2wikimqa": ["Encyclopaedic"],
    "passage_retrieval": ["Encyclopaedic"],
    "courtlistener_HTML": ["Legal"],
    "courtlistener_Plain_Text": ["Legal"],
    "legal_case_reports": ["Legal"],
    "stackoverflow": ["Programming"],
}


def _import_mteb() -> Any:
    try:
        import mteb
    except ImportError as err:
        raise ImportError(
            "the LoCoV1 mteb tasks need mteb 2.x: pip install 'hazyzoo[mteb]' (or pip install mteb)"
        ) from err
    return mteb


def mteb_task_name(task: str) -> str:
    """``gov_report`` -> ``LoCoV1GovReportRetrieval``."""
    camel = "".join(part[:1].upper() + part[1:] for part in task.replace("-", "_").split("_"))
    return f"LoCoV1{camel}Retrieval"


def locov1_mteb_task_class(task: str) -> type:
    """The mteb ``AbsTaskRetrieval`` subclass of one LoCoV1 task (built once)."""
    from hazyzoo.datasets_scripts.locov1 import load_task
    from hazyzoo.datasets_scripts.locov1_names import QUERIES_HUB_ID, TASKS

    if task not in TASKS:
        raise ValueError(f"unknown LoCoV1 task {task!r}; valid: {list(TASKS)}")
    if task in _CLASSES:
        return _CLASSES[task]
    _import_mteb()
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=mteb_task_name(task),
        description=f"LoCoV1 {task}: long-document retrieval (Saad-Falcon et al. 2024).",
        reference="https://arxiv.org/abs/2402.07440",
        dataset={"path": QUERIES_HUB_ID, "revision": "main"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=_DOMAINS[task],
        task_subtypes=[],
        license="not specified",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation=(
            "@article{saadfalcon2024benchmarking, title={Benchmarking and Building Long-Context "
            "Retrieval Models with LoCo and M2-BERT}, author={Saad-Falcon, Jon and Fu, Daniel "
            "Y. and Arora, Simran and Guha, Neel and R{\\'e}, Christopher}, "
            "journal={arXiv:2402.07440}, year={2024}}"
        ),
    )

    class LoCoV1Retrieval(AbsTaskRetrieval):
        """One LoCoV1 task; ``queries_source`` / ``documents_source`` as in the builder."""

        def __init__(
            self,
            *,
            queries_source: str | os.PathLike | None = None,
            documents_source: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.sources = dict(
                queries_source=queries_source,
                documents_source=documents_source,
                cache_dir=cache_dir,
            )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            """Corpus, queries and relevance judgements from the LoCoV1 builder."""
            if self.data_loaded:
                return
            data = load_task(task, **self.sources)
            self.corpus = {"test": dict(data.corpus)}
            self.queries = {"test": dict(data.queries)}
            self.relevant_docs = {"test": {q: dict(d) for q, d in data.qrels.items()}}
            self.convert_v1_dataset_format_to_v2(num_proc)
            self.data_loaded = True

    LoCoV1Retrieval.metadata = metadata
    LoCoV1Retrieval.__name__ = LoCoV1Retrieval.__qualname__ = metadata.name
    _CLASSES[task] = LoCoV1Retrieval
    return LoCoV1Retrieval


def locov1_mteb_tasks(
    tasks: Sequence[str] | None = None,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[Any]:
    """Instances of the mteb tasks of ``tasks`` (None: all 12), reading the given sources."""
    from hazyzoo.datasets_scripts.locov1_names import TASKS

    names = list(TASKS) if tasks is None else list(tasks)
    return [
        locov1_mteb_task_class(name)(
            queries_source=queries_source, documents_source=documents_source, cache_dir=cache_dir
        )
        for name in names
    ]

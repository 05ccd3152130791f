"""LoCoV1 as mteb 2.x retrieval tasks (optional extra: ``pip install mteb``).

One ``mteb.abstasks.retrieval.AbsTaskRetrieval`` subclass per LoCoV1 task
(``LoCoV1GovReportRetrieval``, ..., see :data:`MTEB_TASK_NAMES`; split ``test``, main score
``ndcg_at_10``, the LoCoV1 metric). Their data comes from
:func:`hazyzoo.datasets_scripts.locov1.load_task`, so from the Hub datasets or a local copy
(``queries_source`` / ``documents_source``), with the builder's checks and cache. mteb itself
needs no network for these tasks: give a local copy (or a warm ``datasets`` cache) and a
``ResultCache`` folder or ``cache=None``::

    import mteb
    from hazyzoo.evaluation.locov1_mteb import locov1_mteb_tasks

    tasks = locov1_mteb_tasks(["gov_report", "qmsum"])  # or queries_source=..., documents_source=...
    results = mteb.evaluate(model, tasks, cache=mteb.ResultCache("mteb_results"))
    print({r.task_name: r.get_score() for r in results.task_results})

The classes are built on first use (:func:`locov1_mteb_task_class`), so importing this module
does not import mteb; nothing else in hazyzoo imports mteb.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hazyzoo.datasets_scripts.locov1_names import QUERIES_HUB_ID, TASKS

__all__ = ["MTEB_TASK_NAMES", "locov1_mteb_task_class", "locov1_mteb_tasks"]

MTEB_TASK_NAMES: dict[str, str] = {
    task: f"LoCoV1{camel}Retrieval"
    for task, camel in zip(
        TASKS,
        (
            "SummScreenFD",
            "GovReport",
            "QMSum",
            "QasperTitle",
            "QasperAbstract",
            "MultiFieldQA",
            "TwoWikiMQA",  # a class name cannot hold "LoCoV1" + "2..." without misreading as V12
            "PassageRetrieval",
            "CourtListenerHTML",
            "CourtListenerPlainText",
            "LegalCaseReports",
            "StackOverflow",
        ),
    )
}
"""LoCoV1 task -> the mteb task (and class) name."""

_DOMAINS: dict[str, list[str]] = {
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
    "stackoverflow": ["Programming", "Web"],
}
_BIBTEX = r"""@article{saadfalcon2024benchmarking,
  author = {Saad-Falcon, Jon and Fu, Daniel Y. and Arora, Simran and Guha, Neel and R{\'e}, Christopher},
  journal = {arXiv preprint arXiv:2402.07440},
  title = {Benchmarking and Building Long-Context Retrieval Models with LoCo and M2-BERT},
  year = {2024},
}"""
_CLASSES: dict[str, type] = {}


def _import_mteb() -> Any:
    """mteb, or an ImportError that says how to install it."""
    try:
        import mteb
        from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: F401  (2.x layout)
    except ImportError as err:
        raise ImportError(
            "the LoCoV1 mteb tasks need mteb 2.x, which is an optional extra: pip install mteb "
            f"(or pip install 'hazyzoo[mteb]'); importing it failed: {err}"
        ) from err
    return mteb


def _check_task(task: Any) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown LoCoV1 task {task!r}; valid: {list(TASKS)}")


def locov1_mteb_task_class(task: str) -> type:
    """The mteb retrieval task class of one LoCoV1 task (made once, then reused).

    Instances take ``queries_source``, ``documents_source`` and ``cache_dir`` (as
    :func:`~hazyzoo.datasets_scripts.locov1.load_task`) besides mteb's own arguments."""
    _check_task(task)
    if task in _CLASSES:
        return _CLASSES[task]
    _import_mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    name = MTEB_TASK_NAMES[task]
    metadata = TaskMetadata(
        name=name,
        description=(
            f"LoCoV1 {task}: long-document retrieval (Saad-Falcon et al. 2024), the rows of "
            f"task {task} in {QUERIES_HUB_ID} / -Documents; relevance is binary."
        ),
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
        task_subtypes=["Article retrieval"],
        license="not specified",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation=_BIBTEX,
    )

    def __init__(
        self: Any,
        *,
        queries_source: str | os.PathLike | None = None,
        documents_source: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        AbsTaskRetrieval.__init__(self, **kwargs)
        self.sources = {
            "queries_source": queries_source,
            "documents_source": documents_source,
            "cache_dir": cache_dir,
        }

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        """Corpus, queries and relevance judgements from the LoCoV1 builder, in mteb 2.x's
        split format (``dataset[subset][split]`` = corpus/queries datasets + qrels dict)."""
        if self.data_loaded:
            return
        from hazyzoo.datasets_scripts.locov1 import load_task

        data = load_task(task, **self.sources)
        split = {
            "corpus": Dataset.from_dict(
                {"id": list(data.corpus), "text": list(data.corpus.values())}
            ),
            "queries": Dataset.from_dict(
                {"id": list(data.queries), "text": list(data.queries.values())}
            ),
            "relevant_docs": {qid: dict(pids) for qid, pids in data.qrels.items()},
            "top_ranked": None,
        }
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True

    cls = type(
        name,
        (AbsTaskRetrieval,),
        {
            "__doc__": f"LoCoV1 {task} as an mteb retrieval task (nDCG@10 on split test).",
            "__module__": __name__,
            "__init__": __init__,
            "load_data": load_data,
            "metadata": metadata,
            "locov1_task": task,
        },
    )
    _CLASSES[task] = cls
    return cls


def locov1_mteb_tasks(
    tasks: Sequence[str] | None = None,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[Any]:
    """Instances of the mteb tasks of ``tasks`` (None: all 12, in LoCoV1's order), each reading
    the given sources (default: the Hub datasets) when mteb loads its data."""
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of LoCoV1 task names or None, got {tasks!r}")
    names = list(TASKS) if tasks is None else list(tasks)
    for name in names:
        _check_task(name)
    if len(set(names)) != len(names):
        raise ValueError(f"tasks {names} name a task more than once")
    return [
        locov1_mteb_task_class(name)(
            queries_source=queries_source, documents_source=documents_source, cache_dir=cache_dir
        )
        for name in names
    ]

"""LoCoV1's task names and Hub datasets, importable without ``datasets`` (the evaluation runner
and the mteb tasks name tasks before any data is loaded)."""

from __future__ import annotations

# The 12 tasks, in the paper's order (the values of the published ``dataset`` column).
TASKS: tuple[str, ...] = (
    "summ_screen_fd",
    "gov_report",
    "qmsum",
    "qasper_title",
    "qasper_abstract",
    "multifieldqa",
    "2wikimqa",
    "passage_retrieval",
    "courtlistener_HTML",
    "courtlistener_Plain_Text",
    "legal_case_reports",
    "stackoverflow",
)
QUERIES_HUB_ID = "hazyresearch/LoCoV1-Queries"
DOCUMENTS_HUB_ID = "hazyresearch/LoCoV1-Documents"

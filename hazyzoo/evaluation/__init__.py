"""Evaluation runners: one per paper's evaluation (``hazyzoo eval ...`` runs them).

- :mod:`hazyzoo.evaluation.recall`: recall-intensive tasks (SWDE, FDA, SQuAD-completion and a
  local synthetic task), plain prompts versus JRT-Prompt (Arora et al. 2024).
"""

from __future__ import annotations

from hazyzoo.evaluation.recall import (
    HUB_IDS,
    PROMPTS,
    TASKS,
    RecallExample,
    RecallResult,
    contains_answer,
    evaluate_recall,
    format_table,
    load_recall_task,
    score,
    synthetic_documents,
    synthetic_examples,
    synthetic_tokenizer,
    synthetic_vocabulary,
)

__all__ = [
    "HUB_IDS",
    "PROMPTS",
    "TASKS",
    "RecallExample",
    "RecallResult",
    "contains_answer",
    "evaluate_recall",
    "format_table",
    "load_recall_task",
    "score",
    "synthetic_documents",
    "synthetic_examples",
    "synthetic_tokenizer",
    "synthetic_vocabulary",
]

"""Evaluation runners: one per paper's evaluation (``hazyzoo eval ...`` runs them).

- :mod:`hazyzoo.evaluation.recall`: recall-intensive tasks (SWDE, FDA, SQuAD-completion and a
  local synthetic task), plain prompts versus JRT-Prompt (Arora et al. 2024).
- :mod:`hazyzoo.evaluation.retrieval`: dense retrieval on any corpus/queries/qrels task: a text
  encoder adapter for transformers models (:class:`HFTextEncoder`), cosine top-k search and
  nDCG@k with pytrec_eval.
- :mod:`hazyzoo.evaluation.locov1`: the LoCoV1 long-document retrieval benchmark (12 tasks,
  nDCG@10 and their average; Saad-Falcon et al. 2024), its table, JSON and bar chart. Its data
  loader needs ``datasets`` and is imported only when a task is loaded by name.
- :mod:`hazyzoo.evaluation.locov1_mteb`: the LoCoV1 tasks as mteb 2.x retrieval tasks (optional;
  not imported here).
- :mod:`hazyzoo.evaluation.mad`: the MAD synthetic-task benchmark (Poli et al. 2024): trains
  architectures with ``transformers.Trainer`` on the six tasks, macro accuracy, MAD scores,
  table, JSON and heatmap (``hazyzoo eval mad``; not imported here).
- :mod:`hazyzoo.evaluation.vq`: VQ-VAEs with each gradient estimator trained side by side on
  scikit-learn's digits: reconstruction MSE, codebook usage per 256 images, perplexity,
  quantization error, a PNG grid (``hazyzoo eval vq``; not imported here).
- :mod:`hazyzoo.evaluation.prospector`: prospector heads fitted on planted motifs, localisation
  AUPRC / AP / AUROC and a heatmap (``hazyzoo eval prospector``; not imported here).
- :mod:`hazyzoo.evaluation.gpt4all`: the GPT4All task list through lm-eval's Python API
  (``hazyzoo eval gpt4all``; needs ``lm-eval``; not imported here).
- :mod:`hazyzoo.evaluation.cookbook`: Cookbook's alignment score (held-out rule following),
  template mixing, and the fine-tuning experiment (``hazyzoo eval cookbook``; not imported here).
- :mod:`hazyzoo.evaluation.coverage`: repeated sampling (Large Language Monkeys, Brown et al.
  2024): :mod:`~hazyzoo.evaluation.sampling` (resumable, Hydragen where it applies),
  :mod:`~hazyzoo.evaluation.verifiers` (math-verify, sandboxed code, exact match),
  :mod:`~hazyzoo.evaluation.coverage_metrics` (pass@k, coverage, power-law fit, selection
  curves), :mod:`~hazyzoo.evaluation.coverage_data` (monkey_business and JSONL samples) and
  :mod:`~hazyzoo.evaluation.arithmetic` (the embedded problems); ``hazyzoo eval coverage``;
  not imported here.
- :mod:`hazyzoo.evaluation.metrics`: ``evaluate``-loadable metric modules
  (``evaluate.load(metric_path("ndcg_at_k"))``).

Importing this package needs neither ``datasets`` nor ``evaluate`` nor ``pytrec_eval``.
"""

from __future__ import annotations

from hazyzoo.evaluation import locov1, metrics, recall, retrieval
from hazyzoo.evaluation.locov1 import LOCOV1_TASKS, LoCoV1Results, evaluate_locov1
from hazyzoo.evaluation.metrics import metric_path
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
from hazyzoo.evaluation.retrieval import (
    HFTextEncoder,
    RetrievalResult,
    TextEncoder,
    evaluate_retrieval,
    ndcg_at_k,
    search,
)

__all__ = [
    "HUB_IDS",
    "LOCOV1_TASKS",
    "PROMPTS",
    "TASKS",
    "HFTextEncoder",
    "LoCoV1Results",
    "RecallExample",
    "RecallResult",
    "RetrievalResult",
    "TextEncoder",
    "contains_answer",
    "evaluate_locov1",
    "evaluate_recall",
    "evaluate_retrieval",
    "format_table",
    "load_recall_task",
    "locov1",
    "metric_path",
    "metrics",
    "ndcg_at_k",
    "recall",
    "retrieval",
    "score",
    "search",
    "synthetic_documents",
    "synthetic_examples",
    "synthetic_tokenizer",
    "synthetic_vocabulary",
]

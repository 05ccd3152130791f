"""The LoCoV1 mteb 2.x tasks: mteb's own evaluation (offline, no results cache) of a saved
M2-BERT through sentence-transformers gives the nDCG@10 that pytrec_eval gives on the model's
embeddings (mteb rounds scores to 5 decimals)."""

from __future__ import annotations

import pytest
import torch

mteb = pytest.importorskip("mteb")
pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")

import hazyzoo  # noqa: E402
from hazyzoo.evaluation.locov1 import evaluate_locov1  # noqa: E402
from hazyzoo.evaluation.locov1_mteb import (  # noqa: E402
    locov1_mteb_task_class,
    locov1_mteb_tasks,
    mteb_task_name,
)
from hazyzoo.evaluation.retrieval import HFTextEncoder  # noqa: E402
from hazyzoo.integrations.sentence_transformers import load_sentence_transformer  # noqa: E402
from tests.evaluation.test_locov1_m2bert import SOURCES, fixture_tokenizer  # noqa: E402


def test_mteb_scores_equal_the_runners(tmp_path):
    tokenizer = fixture_tokenizer()
    torch.manual_seed(0)
    config = hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer))
    model = hazyzoo.M2BertForTextEncoding(config).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    names = ["gov_report", "courtlistener_Plain_Text"]
    tasks = locov1_mteb_tasks(names, **SOURCES, cache_dir=tmp_path / "cache")
    assert [t.metadata.name for t in tasks] == [
        "LoCoV1GovReportRetrieval",
        "LoCoV1CourtlistenerPlainTextRetrieval",
    ]
    encoder = load_sentence_transformer(tmp_path / "model", device="cpu")
    results = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False)
    got = {r.task_name: r.scores["test"][0]["ndcg_at_10"] for r in results.task_results}
    ours = evaluate_locov1(
        HFTextEncoder(model, tokenizer, padding="max_length"),
        names,
        **SOURCES,
        cache_dir=tmp_path / "cache",
    )
    for name in names:
        assert got[mteb_task_name(name)] == pytest.approx(ours.results[name].ndcg, abs=1e-5)


def test_task_classes_and_errors():
    cls = locov1_mteb_task_class("2wikimqa")
    assert cls is locov1_mteb_task_class("2wikimqa")
    assert cls.metadata.main_score == "ndcg_at_10" and cls.metadata.eval_splits == ["test"]
    assert mteb_task_name("2wikimqa") == "LoCoV12wikimqaRetrieval"
    assert len(locov1_mteb_tasks()) == 12
    with pytest.raises(ValueError, match="unknown LoCoV1 task"):
        locov1_mteb_task_class("gov")

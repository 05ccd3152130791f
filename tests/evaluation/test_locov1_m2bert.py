"""The whole LoCoV1 path a user runs: a saved hazyzoo M2-BERT text encoder and its tokenizer,
``hazyzoo eval locov1`` on the published-schema fixture, and nDCG@10 checked against
pytrec_eval on embeddings computed directly with the model."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("datasets")
pytrec_eval = pytest.importorskip("pytrec_eval")

import hazyzoo  # noqa: E402
from hazyzoo.cli import main  # noqa: E402
from hazyzoo.datasets_scripts.locov1 import load_tasks  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

FIXTURE = REPO_ROOT / "tests" / "data" / "locov1"
SOURCES = {
    "queries_source": FIXTURE / "queries.jsonl",
    "documents_source": FIXTURE / "documents.jsonl",
}


def fixture_tokenizer(max_words: int | None = None):
    """A word-level tokenizer over the fixture's words (the first ``max_words`` in sorted order,
    the rest unknown) with BERT's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = set()
    for name in ("queries.jsonl", "documents.jsonl"):
        for line in (FIXTURE / name).read_text().splitlines():
            row = json.loads(line)
            words.update((row.get("query") or row.get("passage")).split())
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate([*specials, *sorted(words)[:max_words]])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.mark.parametrize("padding_invariant", [False, True])
def test_cli_ndcg_equals_pytrec_eval_on_direct_embeddings(tmp_path, padding_invariant):
    tokenizer = fixture_tokenizer()
    torch.manual_seed(0)
    config = hazyzoo.M2BertConfig.tiny(
        vocab_size=len(tokenizer), padding_invariant=padding_invariant
    )
    model = hazyzoo.M2BertForTextEncoding(config).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    padding = "longest" if padding_invariant else "max_length"
    out = tmp_path / "results"
    names = "gov_report,2wikimqa,courtlistener_Plain_Text"  # the fixture's tasks
    argv = ["eval", "locov1", "--model", str(tmp_path / "model"), "--tasks", names]
    argv += ["--queries-source", str(SOURCES["queries_source"])]
    argv += ["--documents-source", str(SOURCES["documents_source"])]
    argv += ["--device", "cpu", "--batch-size", "3", "--padding", padding]
    argv += ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    written = json.loads((out / "locov1_results.json").read_text())

    tasks = load_tasks(**SOURCES, cache_dir=tmp_path / "cache")

    def encode(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(
            texts,
            padding=padding,
            truncation=True,
            max_length=config.max_input_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        with torch.no_grad():
            return torch.nn.functional.normalize(model(**batch).sentence_embedding, dim=-1)

    scores = []
    for name, task in tasks.items():
        q = encode(list(task.queries.values()))
        d = encode(list(task.corpus.values()))
        sims = (q @ d.T).tolist()
        run = {
            qid: dict(zip(task.corpus, map(float, row), strict=True))
            for qid, row in zip(task.queries, sims, strict=True)
        }
        evaluator = pytrec_eval.RelevanceEvaluator(task.qrels, {"ndcg_cut.10"})
        per_query = [m["ndcg_cut_10"] for m in evaluator.evaluate(run).values()]
        want = sum(per_query) / len(per_query)
        got = written["tasks"][name]["ndcg"]
        assert got == pytest.approx(want, abs=1e-6), name
        scores.append(want)
    assert written["average"] == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert 0 < written["average"] < 1  # the fixture is neither trivial nor impossible


def test_cli_default_padding_follows_the_model(tmp_path):
    """Without --padding: longest for a padding-invariant M2-BERT, max_length otherwise."""
    tokenizer = fixture_tokenizer()
    for invariant in (False, True):
        config = hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer), padding_invariant=invariant)
        model_dir = tmp_path / f"model{invariant}"
        hazyzoo.M2BertForTextEncoding(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        out = tmp_path / f"out{invariant}"
        argv = ["eval", "locov1", "--model", str(model_dir), "--tasks", "gov_report"]
        argv += ["--queries-source", str(SOURCES["queries_source"])]
        argv += ["--documents-source", str(SOURCES["documents_source"])]
        argv += ["--device", "cpu", "--output-dir", str(out), "--cache-dir", str(tmp_path / "c")]
        assert main(argv) == 0
        settings = json.loads((out / "locov1_results.json").read_text())["settings"]
        assert settings["padding"] == ("longest" if invariant else "max_length")


def test_encoder_default_length_is_the_models_not_the_tokenizers():
    """bert-base-uncased says 512; a 32k M2-BERT must still see its own max_length inputs."""
    from hazyzoo.evaluation.retrieval import HFTextEncoder

    tokenizer = fixture_tokenizer()
    tokenizer.model_max_length = 16
    config = hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer))
    encoder = HFTextEncoder(hazyzoo.M2BertForTextEncoding(config), tokenizer)
    assert encoder.max_length == config.max_input_length == 64

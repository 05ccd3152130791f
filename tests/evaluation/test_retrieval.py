"""Dense retrieval: cosine search, nDCG@k against independent computations, the HF encoder."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytrec_eval
import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import BaseModelOutput, ModelOutput

from hazyzoo.evaluation import (
    HFTextEncoder,
    RetrievalResult,
    TextEncoder,
    evaluate_retrieval,
    metric_path,
    ndcg_at_k,
    search,
)

# --- helpers (also used by test_locov1_eval.py) -------------------------------------------


@dataclass(frozen=True)
class ToyTask:
    """The shape of hazyzoo.datasets_scripts.locov1.RetrievalTask."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


class HashingEncoder:
    """Bag of words: each word is a fixed random vector seeded by its CRC32; a text is the sum.
    Deterministic, and ties between documents are (almost surely) absent."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def word(self, word: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(word.encode()))
        return torch.randn(self.dim, generator=gen, dtype=torch.float64)

    def encode(self, texts, *, batch_size: int, show_progress: bool) -> torch.Tensor:
        self.calls.append(len(texts))
        rows = [
            sum(
                (self.word(w) for w in t.lower().split()),
                torch.zeros(self.dim, dtype=torch.float64),
            )
            for t in texts
        ]
        return torch.stack(rows).float()


class FixedEncoder:
    """Looks the embedding of each text up in a table (for hand-checked rankings)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts, *, batch_size: int, show_progress: bool) -> torch.Tensor:
        return torch.tensor([self.table[t] for t in texts], dtype=torch.float32)


WORDS = (
    "river stone court ruling appeal tax report budget senate meeting summary episode "
    "detective murder python error stack list memory thread paper abstract title model "
    "retrieval long document legal case judge contract wiki question answer city film"
).split()


def toy_task(name: str = "toy", num_docs: int = 30, num_queries: int = 12, seed: int = 0):
    """Documents of random words; each query is a few words of one or two of them, so the
    rankings are varied (relevant documents at all sorts of ranks)."""
    gen = torch.Generator().manual_seed(seed)

    def words(n: int) -> list[str]:
        return [WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=gen).tolist()]

    corpus = {f"{name}-d{i:02d}": " ".join(words(12)) for i in range(num_docs)}
    pids = list(corpus)
    queries, qrels = {}, {}
    for q in range(num_queries):
        chosen = torch.randperm(num_docs, generator=gen)[: 1 + q % 2].tolist()
        text = []
        for j in chosen:
            text += corpus[pids[j]].split()[:2]
        text += words(3)  # noise
        qid = f"{name}-q{q:02d}"
        queries[qid] = " ".join(text)
        qrels[qid] = {pids[j]: 1 for j in chosen}
    return ToyTask(name, corpus, queries, qrels)


def cosine_matrix(encoder, task) -> tuple[list[str], list[str], torch.Tensor]:
    """The full query x document cosine matrix in float64, independently of search()."""
    qids, pids = list(task.queries), list(task.corpus)
    q = encoder.encode([task.queries[i] for i in qids], batch_size=4, show_progress=False)
    d = encoder.encode([task.corpus[i] for i in pids], batch_size=4, show_progress=False)
    q, d = q.double(), d.double()
    scores = (q / q.norm(dim=1, keepdim=True)) @ (d / d.norm(dim=1, keepdim=True)).T
    return qids, pids, scores


def pytrec_direct(task, qids, pids, scores, k: int = 10) -> dict[str, float]:
    """pytrec_eval on the whole dense score matrix (no top-k cut)."""
    run = {q: {p: float(scores[i, j]) for j, p in enumerate(pids)} for i, q in enumerate(qids)}
    evaluator = pytrec_eval.RelevanceEvaluator(task.qrels, {f"ndcg_cut.{k}"})
    return {q: v[f"ndcg_cut_{k}"] for q, v in evaluator.evaluate(run).items()}


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def bert_tokenizer(words=WORDS, model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """A word-level BERT-style tokenizer ([CLS] text [SEP], pad id 0) built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=model_max_length,
    )


def tiny_bert(vocab_size: int, max_positions: int = 64, seed: int = 0) -> BertModel:
    """A random two-layer BertModel (its output has pooler_output)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        pad_token_id=0,
    )
    return BertModel(config).eval()


def save_tiny_bert(directory: Path) -> Path:
    """A tiny BertModel and its tokenizer saved in ``directory`` (for the CLI)."""
    tok = bert_tokenizer()
    tiny_bert(len(tok)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


# --- search -------------------------------------------------------------------------------


def test_search_keeps_the_top_k_by_cosine_in_any_chunking():
    gen = torch.Generator().manual_seed(1)
    q, d = torch.randn(7, 5, generator=gen), torch.randn(20, 5, generator=gen) * 3
    qids, pids = [f"q{i}" for i in range(7)], [f"p{j}" for j in range(20)]
    full = torch.nn.functional.cosine_similarity(q[:, None], d[None], dim=-1)
    run = search(q, d, query_ids=qids, doc_ids=pids, top_k=4, chunk_size=3)
    whole = search(q, d, query_ids=qids, doc_ids=pids, top_k=4, chunk_size=1000)
    for qid in qids:  # float32 matmuls of other shapes may differ in the last bit
        assert list(run[qid]) == list(whole[qid])
        assert list(run[qid].values()) == pytest.approx(list(whole[qid].values()), abs=1e-6)
    for i, qid in enumerate(qids):
        best = full[i].argsort(descending=True)[:4].tolist()
        assert list(run[qid]) == [pids[j] for j in best]
        for j in best:
            assert run[qid][pids[j]] == pytest.approx(float(full[i, j]), abs=1e-6)
    # fewer documents than top_k: all of them; default ids are the row numbers
    small = search(q[:2], d[:3], top_k=100)
    assert list(small) == ["0", "1"] and sorted(small["0"]) == ["0", "1", "2"]


def test_search_handles_ten_thousand_squared_on_cpu():
    gen = torch.Generator().manual_seed(2)
    q, d = torch.randn(10_000, 16, generator=gen), torch.randn(10_000, 16, generator=gen)
    run = search(q, d, top_k=10)
    assert len(run) == 10_000 and all(len(v) == 10 for v in run.values())
    cosine = torch.nn.functional.normalize(d) @ torch.nn.functional.normalize(q[123], dim=0)
    nearest = int(cosine.argmax())
    assert next(iter(run["123"])) == str(nearest)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k must be >= 1"),
        ({"query_ids": ["a"]}, ValueError, "query_ids has 1 ids for 2 embeddings"),
        ({"doc_ids": ["x", "x", "y"]}, ValueError, "'x' more than once"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ],
)
def test_search_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        search(torch.ones(2, 3), torch.ones(3, 3), **kwargs)


def test_search_rejects_bad_embeddings():
    with pytest.raises(ValueError, match="dim 3 but doc_emb has dim 4"):
        search(torch.ones(2, 3), torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        search(torch.tensor([[float("nan"), 1.0]]), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"non-empty \[n, dim\]"):
        search(torch.ones(0, 3), torch.ones(3, 3))


# --- nDCG ---------------------------------------------------------------------------------


def test_ndcg_from_the_formula_for_hand_checked_queries():
    # One query; four documents whose cosine to the query falls in the order a, b, c, d.
    table = {
        "query one": [1.0, 0.0],
        "query two": [0.0, 1.0],
        "doc a": [1.0, 0.0],
        "doc b": [1.0, 0.2],
        "doc c": [1.0, 0.5],
        "doc d": [0.0, 1.0],
    }
    task = ToyTask(
        "hand",
        corpus={"a": "doc a", "b": "doc b", "c": "doc c", "d": "doc d"},
        queries={"q1": "query one", "q2": "query two"},
        # q1: relevant c is third -> 1/log2(4). q2 ranks d, c, b, a: relevant d 1st, a 4th.
        qrels={"q1": {"c": 1}, "q2": {"d": 1, "a": 1}},
    )
    result = evaluate_retrieval(FixedEncoder(table), task, top_k=10, k=10)
    q2 = (1 / math.log2(2) + 1 / math.log2(5)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert result.per_query["q1"] == pytest.approx(1 / math.log2(4), abs=1e-12)
    assert result.per_query["q1"] == pytest.approx(0.5, abs=1e-12)
    assert result.per_query["q2"] == pytest.approx(q2, abs=1e-12)
    assert result.ndcg == pytest.approx((0.5 + q2) / 2, abs=1e-12)
    # k = 2 cuts q1's relevant document (third) and q2's second relevant one (fourth)
    short = evaluate_retrieval(FixedEncoder(table), task, top_k=10, k=2)
    assert short.per_query["q1"] == 0.0
    assert short.per_query["q2"] == pytest.approx(1 / (1 + 1 / math.log2(3)), abs=1e-12)


def test_evaluate_retrieval_equals_pytrec_eval_on_the_dense_matrix():
    task, encoder = toy_task(num_docs=40, num_queries=16), HashingEncoder()
    qids, pids, scores = cosine_matrix(encoder, task)
    expected = pytrec_direct(task, qids, pids, scores)
    # top_k below the corpus size (a real cut) and above it (everything retrieved)
    for top_k in (10, 100):
        result = evaluate_retrieval(encoder, task, batch_size=4, top_k=top_k, k=10)
        assert isinstance(result, RetrievalResult)
        assert result.per_query.keys() == expected.keys()
        for qid, value in expected.items():
            assert result.per_query[qid] == pytest.approx(value, abs=1e-9)
        assert result.ndcg == pytest.approx(sum(expected.values()) / len(expected), abs=1e-9)
        assert (result.num_queries, result.num_documents, result.top_k) == (16, 40, top_k)
        assert result.encode_seconds >= 0 and result.search_seconds >= 0
    assert 0.0 < result.ndcg < 1.0  # a non-trivial ranking: neither perfect nor hopeless
    assert len({round(v, 6) for v in result.per_query.values()}) > 3


def test_sklearn_ndcg_score_agrees_with_binary_relevance_and_no_ties():
    from sklearn.metrics import ndcg_score

    task, encoder = toy_task(num_docs=25, num_queries=10, seed=3), HashingEncoder()
    qids, pids, scores = cosine_matrix(encoder, task)
    for row in scores:  # the comparison needs distinct scores
        assert len(set(row.tolist())) == len(pids)
    y_true = [[task.qrels[q].get(p, 0) for p in pids] for q in qids]
    result = evaluate_retrieval(encoder, task, k=10)
    assert result.ndcg == pytest.approx(ndcg_score(y_true, scores.numpy(), k=10), abs=1e-9)
    for i, qid in enumerate(qids):
        one = ndcg_score([y_true[i]], scores[i : i + 1].numpy(), k=10)
        assert result.per_query[qid] == pytest.approx(one, abs=1e-9)


def test_the_evaluate_metric_module_gives_the_same_numbers():
    import evaluate

    task, encoder = toy_task(num_docs=30, num_queries=12, seed=4), HashingEncoder()
    qids, pids = list(task.queries), list(task.corpus)
    q = encoder.encode([task.queries[i] for i in qids], batch_size=4, show_progress=False)
    d = encoder.encode([task.corpus[i] for i in pids], batch_size=4, show_progress=False)
    run = search(q, d, query_ids=qids, doc_ids=pids, top_k=100)
    result = evaluate_retrieval(encoder, task, k=10)
    metric = evaluate.load(metric_path("ndcg_at_k"))
    references = [sorted(task.qrels[qid]) for qid in qids]
    scored = [{"ids": list(run[qid]), "scores": list(run[qid].values())} for qid in qids]
    out = metric.compute(predictions=scored, references=references, k=10, return_per_query=True)
    assert out["k"] == 10
    assert out["ndcg_at_k"] == pytest.approx(result.ndcg, abs=1e-9)
    assert out["per_query"] == pytest.approx([result.per_query[q] for q in qids], abs=1e-9)
    # the ranked-list form (ids best first) gives the same number
    ranked = [list(run[qid]) for qid in qids]
    assert metric.compute(predictions=ranked, references=references)["ndcg_at_k"] == (
        pytest.approx(result.ndcg, abs=1e-9)
    )
    # another cut-off, and batches added one at a time
    for s, r in zip(scored, references):
        metric.add(prediction=s, reference=r)
    expected_3 = ndcg_at_k({qid: task.qrels[qid] for qid in qids}, run, k=3)[0]
    assert metric.compute(k=3)["ndcg_at_k"] == pytest.approx(expected_3, abs=1e-9)
    with pytest.raises(ValueError, match=r"references\[0\] is empty"):
        metric.compute(predictions=[["a"]], references=[[]])
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        metric.compute(predictions=[{"ids": ["a", "b"], "scores": [1.0]}], references=[["a"]])
    with pytest.raises(ValueError, match="don't match the expected format"):
        metric.compute(predictions=[{"ids": ["a"], "scores": ["x"]}], references=[["a"]])


def test_metric_path_names_the_folder_and_rejects_unknown_metrics():
    path = Path(metric_path("ndcg_at_k"))
    assert (path / "ndcg_at_k.py").is_file() and (path / "README.md").is_file()
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metric_path("bleu")
    # evaluate's import scanner wants one import per line
    for line in (path / "ndcg_at_k.py").read_text().splitlines():
        if line.startswith(("import ", "from ")):
            assert "," not in line, line


def test_ndcg_conventions_missing_and_empty_queries_score_zero():
    qrels = {"q1": {"a": 1, "b": 0}, "q2": {"x": 1}, "q3": {"y": 1}}
    run = {"q1": {"a": 0.9, "b": 0.1}, "q2": {}, "q9": {"z": 1.0}}  # q3 missing, q9 unjudged
    mean, per_query = ndcg_at_k(qrels, run, k=10)
    assert per_query == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert mean == pytest.approx(1 / 3, abs=1e-12)
    assert ndcg_at_k(qrels, {}, k=10) == (0.0, {"q1": 0.0, "q2": 0.0, "q3": 0.0})


def test_ndcg_ties_are_broken_by_document_id_descending():
    # a and b tie: trec_eval ranks b first whatever the run's order, so a is second.
    expected = (1 / math.log2(3)) / 1.0
    for run in ({"q": {"a": 0.5, "b": 0.5}}, {"q": {"b": 0.5, "a": 0.5}}):
        assert ndcg_at_k({"q": {"a": 1}}, run)[0] == pytest.approx(expected, abs=1e-12)
    assert ndcg_at_k({"q": {"b": 1}}, {"q": {"a": 0.5, "b": 0.5}})[0] == 1.0


@pytest.mark.parametrize(
    ("qrels", "run", "k", "error", "match"),
    [
        ({"q": {}}, {"q": {"a": 1.0}}, 10, ValueError, "'q' has no relevant document"),
        ({"q": {"a": 0}}, {"q": {"a": 1.0}}, 10, ValueError, "'q' has no relevant document"),
        ({}, {}, 10, ValueError, "qrels must be a non-empty"),
        ({"q": {"a": 1}}, {"q": {"a": 1.0}}, 0, ValueError, "k must be >= 1"),
        ({"q": {"a": 1.5}}, {"q": {"a": 1.0}}, 10, TypeError, "int relevance"),
        ({"q": {"a": 1}}, {"q": {"a": float("inf")}}, 10, ValueError, "scores must be finite"),
    ],
)
def test_ndcg_rejects_bad_input(qrels, run, k, error, match):
    with pytest.raises(error, match=match):
        ndcg_at_k(qrels, run, k=k)


# --- the runner's checks ------------------------------------------------------------------


def test_evaluate_retrieval_rejects_bad_tasks_and_arguments():
    task, encoder = toy_task(), HashingEncoder()
    with pytest.raises(ValueError, match=r"top_k \(5\) must be >= k \(10\)"):
        evaluate_retrieval(encoder, task, top_k=5, k=10)
    with pytest.raises(ValueError, match="'empty' has an empty corpus"):
        evaluate_retrieval(encoder, ToyTask("empty", {}, {"q": "x"}, {"q": {"d": 1}}))
    with pytest.raises(ValueError, match="'t' has no queries"):
        evaluate_retrieval(encoder, ToyTask("t", {"d": "x"}, {}, {}))
    with pytest.raises(ValueError, match="document 'nope', which is not in the corpus"):
        evaluate_retrieval(encoder, ToyTask("t", {"d": "x"}, {"q": "x"}, {"q": {"nope": 1}}))
    with pytest.raises(ValueError, match="1 queries have no relevance judgements"):
        evaluate_retrieval(encoder, ToyTask("t", {"d": "x"}, {"q": "x", "r": "y"}, {"q": {"d": 1}}))
    with pytest.raises(TypeError, match="has no 'name'; a retrieval task has name, corpus"):
        evaluate_retrieval(encoder, object())
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_retrieval(encoder, task, batch_size=0)


def test_query_encoder_is_used_for_queries_only():
    task = toy_task(num_docs=20, num_queries=6)
    docs, queries = HashingEncoder(), HashingEncoder()
    result = evaluate_retrieval(docs, task, query_encoder=queries)
    assert docs.calls == [20] and queries.calls == [6]
    assert result.ndcg == evaluate_retrieval(HashingEncoder(), task).ndcg


# --- the transformers encoder -------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    tok = bert_tokenizer()
    return tiny_bert(len(tok)), tok


TEXTS = [
    "river",
    "court ruling appeal tax report budget senate meeting",
    "python error",
    "summary episode detective murder python error stack list memory thread paper",
    "legal case",
    "film",
]


def test_hf_encoder_is_a_text_encoder_and_reports_pooler_output(bert):
    model, tok = bert
    encoder = HFTextEncoder(model, tok, padding="longest")
    assert isinstance(encoder, TextEncoder)
    emb = encoder.encode(TEXTS, batch_size=4, show_progress=False)
    assert emb.shape == (len(TEXTS), 32) and emb.dtype == torch.float32
    assert emb.device.type == "cpu"
    assert encoder.pooling == "pooler_output"
    assert encoder.max_length == 64 and encoder.last_truncated == 0


def test_longest_padding_batches_equal_one_text_at_a_time_in_input_order(bert):
    model, tok = bert
    encoder = HFTextEncoder(model, tok, padding="longest")
    batched = encoder.encode(TEXTS, batch_size=3, show_progress=True)
    single = torch.cat([encoder.encode([t], batch_size=1, show_progress=False) for t in TEXTS])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    # and the same as the model itself on each text, unpadded
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            ref = model(**tok(text, return_tensors="pt")).pooler_output[0]
            torch.testing.assert_close(batched[i], ref, atol=1e-5, rtol=1e-5)


def test_max_length_padding_pads_every_batch_to_max_length(bert):
    model, tok = bert
    seen: list[tuple[tuple[int, ...], set[str]]] = []

    def hook(module, args, kwargs):
        seen.append((tuple(kwargs["input_ids"].shape), set(kwargs)))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        HFTextEncoder(model, tok, padding="max_length", max_length=24).encode(
            TEXTS, batch_size=4, show_progress=False
        )
        HFTextEncoder(model, tok, padding="longest").encode(
            TEXTS, batch_size=4, show_progress=False
        )
    finally:
        handle.remove()
    assert [shape for shape, _ in seen[:2]] == [(4, 24), (2, 24)]
    # longest: sorted by length, so the first batch holds the longest texts
    # (11 words + [CLS] + [SEP], then "river" and "film")
    assert [shape for shape, _ in seen[2:]] == [(4, 13), (2, 3)]
    # BertModel.forward takes token_type_ids, so they are passed
    assert all(keys == {"input_ids", "attention_mask", "token_type_ids"} for _, keys in seen)


def test_truncation_is_counted(bert):
    model, tok = bert
    encoder = HFTextEncoder(model, tok, padding="longest", max_length=5)
    encoder.encode(TEXTS, batch_size=2, show_progress=False)
    # [CLS] + words + [SEP] > 5 tokens: the texts with more than 3 words
    assert encoder.last_truncated == sum(len(t.split()) > 3 for t in TEXTS) == 2


class MeanOnly(torch.nn.Module):
    """A model whose forward takes no token_type_ids and returns only last_hidden_state."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert, self.config = bert, bert.config
        self.seen: list[set[str]] = []

    def forward(self, input_ids, attention_mask):
        self.seen.append({"input_ids", "attention_mask"})
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return BaseModelOutput(last_hidden_state=out.last_hidden_state)


@dataclass
class SentenceOutput(ModelOutput):
    sentence_embedding: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class SentenceHead(MeanOnly):
    """Like hazyzoo's M2BertForTextEncoding: the output has sentence_embedding."""

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return SentenceOutput(
            sentence_embedding=out.last_hidden_state[:, 0] * 2, pooler_output=out.pooler_output
        )


def test_pooling_falls_back_from_sentence_embedding_to_pooler_to_mean(bert):
    model, tok = bert
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        out = model(**batch)
    mask = batch["attention_mask"][..., None].float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)

    mean_only = MeanOnly(model)
    encoder = HFTextEncoder(mean_only, tok, padding="longest")
    torch.testing.assert_close(encoder.encode(TEXTS[:2], batch_size=2, show_progress=False), mean)
    assert encoder.pooling == "mean"

    head = HFTextEncoder(SentenceHead(model), tok, padding="longest")
    emb = head.encode(TEXTS[:2], batch_size=2, show_progress=False)
    torch.testing.assert_close(emb, out.last_hidden_state[:, 0] * 2)
    assert head.pooling == "sentence_embedding"


def test_prefix_is_prepended(bert):
    model, tok = bert
    plain = HFTextEncoder(model, tok, padding="longest")
    prefixed = HFTextEncoder(model, tok, padding="longest", prefix="question ")
    torch.testing.assert_close(
        prefixed.encode(["river"], batch_size=1, show_progress=False),
        plain.encode(["question river"], batch_size=1, show_progress=False),
    )


def test_hf_encoder_rejects_bad_settings_and_input(bert):
    model, tok = bert
    with pytest.raises(ValueError, match="unknown padding 'max'"):
        HFTextEncoder(model, tok, padding="max")
    with pytest.raises(ValueError, match=r"max_length 65 is longer than the model allows \(config"):
        HFTextEncoder(model, tok, max_length=65)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        HFTextEncoder(model, tok, max_length=0)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        HFTextEncoder(model, tok, dtype="fp8")
    encoder = HFTextEncoder(model, tok)
    with pytest.raises(ValueError, match="texts is empty"):
        encoder.encode([], batch_size=2, show_progress=False)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("river", batch_size=2, show_progress=False)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        encoder.encode(["river", 3], batch_size=2, show_progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encoder.encode(["river"], batch_size=0, show_progress=False)
    no_pad = bert_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="has no pad_token"):
        HFTextEncoder(model, no_pad)


def test_max_length_above_the_tokenizer_default_is_allowed_up_to_the_model_limit():
    # The long-context M2-BERT models reuse bert-base-uncased (model_max_length 512).
    tok = bert_tokenizer(model_max_length=16)
    model = tiny_bert(len(tok), max_positions=64)
    assert HFTextEncoder(model, tok).max_length == 16  # default: the smaller limit
    encoder = HFTextEncoder(model, tok, max_length=48)
    emb = encoder.encode([" ".join(WORDS * 2)], batch_size=1, show_progress=False)
    assert emb.shape == (1, 32) and encoder.last_truncated == 1


def test_hf_encoder_end_to_end_retrieval_equals_pytrec_eval(bert):
    model, tok = bert
    task = toy_task(num_docs=15, num_queries=6, seed=5)
    encoder = HFTextEncoder(model, tok, padding="longest")
    # A random tiny BERT gives nearly parallel embeddings, so float32 and float64 cosines can
    # rank differently; the reference is pytrec_eval on the whole float32 cosine matrix.
    qids, pids = list(task.queries), list(task.corpus)
    q = encoder.encode([task.queries[i] for i in qids], batch_size=4, show_progress=False)
    d = encoder.encode([task.corpus[i] for i in pids], batch_size=4, show_progress=False)
    norm = torch.nn.functional.normalize
    expected = pytrec_direct(task, qids, pids, norm(q) @ norm(d).T)
    result = evaluate_retrieval(encoder, task, batch_size=4)
    for qid, value in expected.items():
        assert result.per_query[qid] == pytest.approx(value, abs=1e-9)
    assert result.pooling == "pooler_output"
    assert result.truncated_documents == 0 and result.truncated_queries == 0

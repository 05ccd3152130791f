"""Dense retrieval evaluation: encode queries and documents, rank by cosine, score nDCG@k.

The pieces are separate so that each can be used (and tested) on its own:

- :class:`TextEncoder` is what the runner needs from a model: ``encode(texts) -> [n, d]``.
  :class:`HFTextEncoder` adapts any transformers model whose output has ``sentence_embedding``
  (hazyzoo's M2-BERT head), else ``pooler_output``, else ``last_hidden_state`` (mean over the
  attention mask); :attr:`HFTextEncoder.pooling` says which one it used.
- :func:`search` ranks documents by cosine similarity in chunks (10k x 10k fits on a CPU) and
  keeps the ``top_k`` best per query.
- :func:`ndcg_at_k` scores a run against relevance judgements with ``pytrec_eval`` (the C
  ``trec_eval``; package ``pytrec-eval-terrier``).
- :func:`evaluate_retrieval` chains the three on one task (corpus, queries, qrels).

Conventions (they decide numbers, so they are stated here):

- **Queries missing from the run count as 0.** ``pytrec_eval`` only scores queries present in
  the run (BEIR's ``EvaluateRetrieval``, which LoCo's released code uses, then averages over
  those); :func:`ndcg_at_k` scores every judged query and gives 0 to one with no retrieved
  documents, as ``trec_eval -c`` does. :func:`evaluate_retrieval` retrieves for every query, so
  both conventions give the same number there. Run queries without judgements are not scored.
- **A judged query needs a relevant document**: nDCG is 0/0 without one, so that is an error.
- **Ties**: ``trec_eval`` orders documents of equal score by document id, descending (``"b"``
  before ``"a"``), whatever order the run lists them in. :func:`search` cuts at ``top_k`` with
  ``torch.topk``, so documents tied exactly at the cut-off are kept in no defined order.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PADDING = ("max_length", "longest")
POOLINGS = ("sentence_embedding", "pooler_output", "mean")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Tokenizers without a known limit report a huge model_max_length (transformers' sentinel).
_NO_LIMIT = 1_000_000_000


def _check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; give at least one text to encode")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__} {text!r}")
    return texts


# --- encoders -----------------------------------------------------------------------------


@runtime_checkable
class TextEncoder(Protocol):
    """What the retrieval runner needs from a model: texts in, one embedding per text out."""

    def encode(self, texts: Sequence[str], *, batch_size: int, show_progress: bool) -> torch.Tensor:
        """Embeddings of ``texts`` in their order: a float32 CPU tensor ``[len(texts), dim]``."""
        ...


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; choose from {list(DTYPES)} or a torch.dtype")


class HFTextEncoder:
    """A :class:`TextEncoder` over a transformers model and its tokenizer.

    ``padding="max_length"`` pads every batch to ``max_length``, as the released M2-BERT
    retrieval models expect; ``"longest"`` pads to the longest text of the batch and sorts the
    texts by length first (fewer pad tokens; the output keeps the input order). Texts are
    truncated to ``max_length`` tokens (default: a hazyzoo encoder's ``config.max_input_length``,
    else the smaller of the tokenizer's ``model_max_length`` and the model's
    ``config.max_position_embeddings``);
    :attr:`last_truncated` counts the texts the last :meth:`encode` cut. A ``max_length`` above
    ``max_position_embeddings`` is an error; one above the tokenizer's ``model_max_length`` is
    allowed (that is only the tokenizer's default, e.g. 512 for bert-base-uncased, which the
    long-context M2-BERT models reuse). ``prefix`` is put before every text (e.g.
    ``"query: "``). ``device`` and ``dtype`` move and cast the model; the model is put in eval
    mode. ``token_type_ids`` are passed only when the model's ``forward`` takes them.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        padding: str = "max_length",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        prefix: str = "",
    ) -> None:
        if padding not in PADDING:
            raise ValueError(f"unknown padding {padding!r}; choose from {list(PADDING)}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__} {prefix!r}")
        if getattr(tokenizer, "pad_token", None) is None:
            raise ValueError(
                f"the tokenizer {type(tokenizer).__name__} has no pad_token; set one "
                "(e.g. tokenizer.pad_token = tokenizer.eos_token) before encoding in batches"
            )
        torch_dtype = _resolve_dtype(dtype)
        if device is not None:
            model = model.to(device)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.padding = padding
        self.prefix = prefix
        self.max_length = self._resolve_max_length(max_length)
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}
        self._pass_token_type_ids = "token_type_ids" in params
        self.pooling: str | None = None
        self.last_truncated: int | None = None

    def _model_limit(self) -> int | None:
        config = getattr(self.model, "config", None)
        limit = getattr(config, "max_input_length", None)  # hazyzoo encoders state it
        if limit is None:
            limit = getattr(config, "max_position_embeddings", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    def _model_states_its_length(self) -> bool:
        """Whether the model config states its input length itself (hazyzoo's encoders): then
        that, not the tokenizer's default ``model_max_length``, is the default length."""
        return isinstance(
            getattr(getattr(self.model, "config", None), "max_input_length", None), int
        )

    def _resolve_max_length(self, max_length: int | None) -> int | None:
        model_limit = self._model_limit()
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if not isinstance(tok_limit, int) or tok_limit <= 0 or tok_limit >= _NO_LIMIT:
            tok_limit = None
        if max_length is not None:
            _check_int("max_length", max_length)
            if model_limit is not None and max_length > model_limit:
                raise ValueError(
                    f"max_length {max_length} is longer than the model allows "
                    f"(config.max_input_length or max_position_embeddings = {model_limit})"
                )
            return max_length
        if model_limit is not None and self._model_states_its_length():
            # e.g. a 32k M2-BERT with bert-base-uncased's tokenizer (model_max_length 512):
            # the released models must see inputs padded to their own length
            return model_limit
        known = [n for n in (model_limit, tok_limit) if n is not None]
        if known:
            return min(known)
        if self.padding == "max_length":
            raise ValueError(
                "padding 'max_length' needs a max_length: neither the model config "
                "(max_position_embeddings) nor the tokenizer (model_max_length) gives one"
            )
        return None  # "longest" padding and no known limit: nothing to truncate to

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (inputs are moved there)."""
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _tokenize(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], int]:
        """A padded batch for the model, and how many of ``texts`` were truncated."""
        tok = self.tokenizer
        truncated = 0
        if self.max_length is not None:
            # Capped at max_length + 1, a text is longer than that cap exactly when the real
            # tokenization at max_length would cut it.
            lengths = tok(
                texts, truncation=True, max_length=self.max_length + 1, return_length=True
            )["length"]
            truncated = sum(int(n) > self.max_length for n in lengths)
        batch = tok(
            texts,
            padding=self.padding,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
            return_token_type_ids=self._pass_token_type_ids,
        )
        keep = ["input_ids", "attention_mask"]
        if self._pass_token_type_ids and "token_type_ids" in batch:
            keep.append("token_type_ids")
        return {k: batch[k] for k in keep}, truncated

    def _pool(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        for name in ("sentence_embedding", "pooler_output"):
            value = getattr(output, name, None)
            if isinstance(value, torch.Tensor):
                self._note_pooling(name)
                return value
        hidden = getattr(output, "last_hidden_state", None)
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(
                f"the model output {type(output).__name__} has none of sentence_embedding, "
                "pooler_output, last_hidden_state; the encoder cannot make an embedding"
            )
        self._note_pooling("mean")
        mask = attention_mask.to(hidden.device, torch.float32).unsqueeze(-1)
        summed = (hidden.float() * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1.0)

    def _note_pooling(self, name: str) -> None:
        if self.pooling != name:
            logger.info("HFTextEncoder: embeddings from the model output's %s", name)
        self.pooling = name

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 8, show_progress: bool = False
    ) -> torch.Tensor:
        """Embeddings of ``texts`` (``prefix`` prepended), in input order: float32 on CPU."""
        texts = _check_texts(texts)
        _check_int("batch_size", batch_size)
        texts = [self.prefix + t for t in texts]
        order = list(range(len(texts)))
        if self.padding == "longest":
            # Longest first: similar lengths share a batch, and an out-of-memory shows at once.
            order.sort(key=lambda i: -len(texts[i]))
        device = self.device
        chunks: list[torch.Tensor] = []
        truncated = 0
        with (
            torch.inference_mode(),
            tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress) as bar,
        ):
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                inputs, cut = self._tokenize([texts[i] for i in index])
                truncated += cut
                inputs = {k: v.to(device) for k, v in inputs.items()}
                output = self.model(**inputs)
                emb = self._pool(output, inputs["attention_mask"])
                if emb.dim() != 2 or emb.shape[0] != len(index):
                    raise ValueError(
                        f"the model's {self.pooling} has shape {tuple(emb.shape)}; expected "
                        f"[batch={len(index)}, dim]"
                    )
                chunks.append(emb.float().cpu())
                bar.update(len(index))
        self.last_truncated = truncated
        stacked = torch.cat(chunks)
        out = torch.empty_like(stacked)
        out[torch.tensor(order)] = stacked  # back to the input order
        return out


# --- search -------------------------------------------------------------------------------


def _check_ids(name: str, ids: Sequence[str] | None, n: int) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} ids for {n} embeddings")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{name} holds the id {i!r} more than once")
        seen.add(i)
    return ids


def _check_embeddings(name: str, emb: Any) -> torch.Tensor:
    if not isinstance(emb, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(emb).__name__}")
    if emb.dim() != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [n, dim] tensor, got {tuple(emb.shape)}")
    if not torch.isfinite(emb).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return emb


def search(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    *,
    query_ids: Sequence[str] | None = None,
    doc_ids: Sequence[str] | None = None,
    top_k: int = 100,
    chunk_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """The ``top_k`` documents by cosine similarity for each query: ``{qid: {pid: score}}``.

    Rows are L2-normalised (a zero row has similarity 0 to everything) and scored in float32,
    ``chunk_size`` queries at a time, so the full score matrix is never held. Ids default to
    the row numbers as strings. Fewer than ``top_k`` documents: all of them. ``top_k`` must be
    at least the cut-off of the metric that reads the run (10 for nDCG@10):
    :func:`evaluate_retrieval` checks that.
    """
    query_emb = _check_embeddings("query_emb", query_emb)
    doc_emb = _check_embeddings("doc_emb", doc_emb)
    if query_emb.shape[1] != doc_emb.shape[1]:
        raise ValueError(
            f"query_emb has dim {query_emb.shape[1]} but doc_emb has dim {doc_emb.shape[1]}"
        )
    query_ids = _check_ids("query_ids", query_ids, query_emb.shape[0])
    doc_ids = _check_ids("doc_ids", doc_ids, doc_emb.shape[0])
    _check_int("top_k", top_k)
    _check_int("chunk_size", chunk_size)
    keep = min(top_k, len(doc_ids))
    docs = F.normalize(doc_emb.float(), dim=1).to(query_emb.device)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), chunk_size):
        queries = F.normalize(query_emb[start : start + chunk_size].float(), dim=1)
        scores, index = torch.topk(queries @ docs.T, keep, dim=1)
        for qid, row_scores, row_index in zip(
            query_ids[start : start + chunk_size], scores.tolist(), index.tolist()
        ):
            run[qid] = {doc_ids[j]: s for j, s in zip(row_index, row_scores)}
    return run


# --- scoring ------------------------------------------------------------------------------


def _import_pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "nDCG is computed with pytrec_eval: pip install pytrec-eval-terrier"
        ) from err
    return pytrec_eval


def _check_qrels(qrels: Any) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping) or not qrels:
        raise ValueError("qrels must be a non-empty {qid: {pid: relevance}} mapping")
    out: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if not isinstance(judged, Mapping):
            raise TypeError(f"qrels[{qid!r}] must be a {{pid: relevance}} mapping")
        row = {}
        for pid, rel in judged.items():
            if isinstance(rel, bool) or not isinstance(rel, int):
                raise TypeError(f"qrels[{qid!r}][{pid!r}] must be an int relevance, got {rel!r}")
            row[str(pid)] = rel
        if not any(rel > 0 for rel in row.values()):
            raise ValueError(
                f"query {qid!r} has no relevant document in qrels; nDCG is undefined for it"
            )
        out[str(qid)] = row
    return out


def _check_run(run: Any) -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a {{qid: {{pid: score}}}} mapping, got {type(run).__name__}")
    out: dict[str, dict[str, float]] = {}
    for qid, ranked in run.items():
        if not isinstance(ranked, Mapping):
            raise TypeError(f"run[{qid!r}] must be a {{pid: score}} mapping")
        row = {}
        for pid, score in ranked.items():
            value = float(score)
            if not math.isfinite(value):
                raise ValueError(f"run[{qid!r}][{pid!r}] is {score!r}; scores must be finite")
            row[str(pid)] = value
        out[str(qid)] = row
    return out


def ndcg_at_k(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    k: int = 10,
) -> tuple[float, dict[str, float]]:
    """nDCG@k of ``run`` under ``qrels``: the mean over judged queries, and per query.

    Computed by ``pytrec_eval`` (``ndcg_cut.k``: gain = relevance, discount 1/log2(rank + 1)).
    Every query in ``qrels`` is scored; one absent from ``run`` or with no retrieved documents
    scores 0 (``trec_eval -c``). Run queries absent from ``qrels`` are ignored. Equal scores are
    ranked by document id, descending (``trec_eval``'s rule).
    """
    _check_int("k", k)
    qrels = _check_qrels(qrels)
    run = _check_run(run)
    pytrec_eval = _import_pytrec_eval()
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
    judged_run = {qid: ranked for qid, ranked in run.items() if qid in qrels and ranked}
    measured = evaluator.evaluate(judged_run) if judged_run else {}
    key = f"ndcg_cut_{k}"
    per_query = {qid: float(measured[qid][key]) if qid in measured else 0.0 for qid in qrels}
    return sum(per_query.values()) / len(per_query), per_query


# --- the runner ---------------------------------------------------------------------------


@dataclass
class RetrievalResult:
    """nDCG@k of one task, per query too, with the task's size and the time spent encoding.

    ``truncated_queries``/``truncated_documents`` count texts the encoder cut to its
    ``max_length`` (``None`` when the encoder does not report it).
    """

    task: str
    k: int
    ndcg: float
    per_query: dict[str, float]
    num_queries: int
    num_documents: int
    top_k: int
    encode_seconds: float
    search_seconds: float
    pooling: str | None = None
    truncated_queries: int | None = None
    truncated_documents: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything in the result."""
        return asdict(self)


def check_task(task: Any) -> None:
    """Fail with a ValueError naming the problem unless ``task`` is a usable retrieval task:
    ``name``, a non-empty ``corpus`` and ``queries`` of strings, and ``qrels`` judging every
    query, only with known query and document ids."""
    for attr in ("name", "corpus", "queries", "qrels"):
        if not hasattr(task, attr):
            raise TypeError(
                f"task {task!r} has no {attr!r}; a retrieval task has name, corpus, queries, qrels"
            )
    name = task.name
    for attr in ("corpus", "queries", "qrels"):
        if not isinstance(getattr(task, attr), Mapping):
            raise TypeError(f"task {name!r}: {attr} must be a mapping")
    if not task.corpus:
        raise ValueError(f"task {name!r} has an empty corpus; there is nothing to retrieve")
    if not task.queries:
        raise ValueError(f"task {name!r} has no queries")
    for what, texts in (("corpus", task.corpus), ("queries", task.queries)):
        for key, text in texts.items():
            if not isinstance(text, str):
                raise TypeError(f"task {name!r}: {what}[{key!r}] is a {type(text).__name__}")
    unjudged = [qid for qid in task.queries if not task.qrels.get(qid)]
    if unjudged:
        raise ValueError(
            f"task {name!r}: {len(unjudged)} queries have no relevance judgements "
            f"(first: {unjudged[0]!r}); every query needs qrels"
        )
    for qid, judged in task.qrels.items():
        if qid not in task.queries:
            raise ValueError(f"task {name!r}: qrels name the query {qid!r}, not in queries")
        missing = [pid for pid in judged if pid not in task.corpus]
        if missing:
            raise ValueError(
                f"task {name!r}: qrels of query {qid!r} name document {missing[0]!r}, "
                "which is not in the corpus"
            )


def _encode(encoder: Any, texts: list[str], batch_size: int, show_progress: bool) -> Any:
    emb = encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
    if not isinstance(emb, torch.Tensor):
        emb = torch.as_tensor(emb)
    if emb.dim() != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"{type(encoder).__name__}.encode returned shape {tuple(emb.shape)} for "
            f"{len(texts)} texts; expected [{len(texts)}, dim]"
        )
    return emb.float().cpu()


def evaluate_retrieval(
    encoder: TextEncoder,
    task: Any,
    *,
    batch_size: int = 8,
    top_k: int = 100,
    k: int = 10,
    query_encoder: TextEncoder | None = None,
    show_progress: bool = False,
) -> RetrievalResult:
    """nDCG@k of dense retrieval on ``task`` (``name``, ``corpus``, ``queries``, ``qrels``).

    Encodes the corpus with ``encoder`` and the queries with ``query_encoder`` (default: the
    same encoder), retrieves the ``top_k`` documents of every query with :func:`search` and
    scores them with :func:`ndcg_at_k`. ``top_k`` must be >= ``k``.
    """
    _check_int("k", k)
    _check_int("top_k", top_k)
    _check_int("batch_size", batch_size)
    if top_k < k:
        raise ValueError(f"top_k ({top_k}) must be >= k ({k}): nDCG@{k} reads {k} documents")
    check_task(task)
    query_encoder = encoder if query_encoder is None else query_encoder
    qids, pids = list(task.queries), list(task.corpus)
    start = time.perf_counter()
    doc_emb = _encode(encoder, [task.corpus[p] for p in pids], batch_size, show_progress)
    doc_cut = getattr(encoder, "last_truncated", None)
    query_emb = _encode(query_encoder, [task.queries[q] for q in qids], batch_size, show_progress)
    query_cut = getattr(query_encoder, "last_truncated", None)
    encoded = time.perf_counter()
    run = search(query_emb, doc_emb, query_ids=qids, doc_ids=pids, top_k=top_k)
    searched = time.perf_counter()
    mean, per_query = ndcg_at_k({q: task.qrels[q] for q in qids}, run, k=k)
    return RetrievalResult(
        task=task.name,
        k=k,
        ndcg=mean,
        per_query=per_query,
        num_queries=len(qids),
        num_documents=len(pids),
        top_k=top_k,
        encode_seconds=encoded - start,
        search_seconds=searched - encoded,
        pooling=getattr(encoder, "pooling", None),
        truncated_queries=query_cut,
        truncated_documents=doc_cut,
    )


__all__ = [
    "DTYPES",
    "PADDING",
    "POOLINGS",
    "HFTextEncoder",
    "RetrievalResult",
    "TextEncoder",
    "check_task",
    "evaluate_retrieval",
    "ndcg_at_k",
    "search",
]

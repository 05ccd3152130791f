"""From raw text to the inputs of a prospector head: sentence splitting and frozen-encoder
embeddings with any transformers encoder (``AutoModel``) and its tokenizer.

A prospector head (:class:`~hazyzoo.modeling.modeling_prospector.ProspectorModel`) reads one
``[n, hidden_size]`` tensor per datum. :func:`embed_texts` gives it for a list of texts, at one
of two levels:

* ``level="sentence"`` -- :func:`split_sentences` splits each text; each sentence is encoded
  on its own (with the tokenizer's special tokens) and pooled to one row: the mean of the last
  hidden state over the attention mask (special tokens included, as sentence-transformers'
  mean pooling), the first token (``pooling="cls"``), or the encoder's own sentence embedding
  (``pooling="model"``: ``sentence_embedding``, e.g. hazyzoo's ``M2BertForTextEncoding``, else
  ``pooler_output``). A sentence longer than ``max_length`` is truncated with a warning.
* ``level="token"`` -- each text is tokenized once; its tokens (the tokenizer's special tokens
  excluded) get one row each, the last hidden state. A text longer than ``max_length`` is read in
  overlapping windows (see :func:`embed_texts`) and stitched so that every token gets exactly
  one row.

Each result is a :class:`TextEmbedding`: the rows, the units they stand for (sentences or
token strings) and the units' character spans in the text, so that a prospector map (one score
per row) goes straight back onto the text::

    items = embed_texts(encoder, tokenizer, texts)
    head = ProspectorModel(ProspectorConfig(hidden_size=encoder.config.hidden_size))
    head.fit(to_prospector_inputs(items), labels)
    scores = head.prospect(items[0].embeddings)  # one score per sentence of texts[0]

Encoders are run in eval mode under ``torch.inference_mode()`` (their modes are restored
afterwards); rows are float32 on the CPU, whatever the encoder's device and dtype.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LEVELS",
    "POOLINGS",
    "TextEmbedding",
    "embed_texts",
    "encoder_max_length",
    "sentence_spans",
    "split_sentences",
    "to_prospector_inputs",
]

LEVELS = ("sentence", "token")
POOLINGS = ("mean", "cls", "model")

# A tokenizer's model_max_length above this is transformers' "no limit" placeholder (1e30).
_SANE_TOKENIZER_LIMIT = 10**7


# --- sentences -----------------------------------------------------------------------------
# A run of end punctuation, then any closing quotes/brackets, then (lookahead) whitespace.
_TERMINATOR = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_LINE = re.compile(r"[^\r\n]+")
_LAST_WORD = re.compile(r"(\S+)$")
_NEXT_CHAR = re.compile(r"\s+(\S)")
# Words that a single "." after them does not end a sentence ("Dr. Smith", "et al. The").
ABBREVIATIONS = frozenset(
    {"Mr", "Mrs", "Ms", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "vs", "cf", "al", "Fig", "Eq"}
)


def _is_abbreviation(before: str, terminator: str) -> bool:
    """Whether a lone ``"."`` after ``before`` ends an abbreviation rather than a sentence."""
    if terminator != ".":
        return False
    match = _LAST_WORD.search(before)
    if match is None:
        return False
    word = match.group(1).lstrip("\"'\u201c\u2018([")
    if word in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isupper():  # an initial: "J. Smith"
        return True
    return "." in word  # dotted abbreviations and initialisms: "e.g.", "i.e.", "U.S."


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    start += len(piece) - len(piece.lstrip())
    return start, start + len(stripped)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text`` (see
    :func:`split_sentences` for the rules); ``text[start:end]`` is each sentence, stripped of
    surrounding whitespace. Deterministic and pure Python (no nltk, no model)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    spans: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        base, segment, cut = line.start(), line.group(), 0
        for match in _TERMINATOR.finditer(segment):
            nxt = _NEXT_CHAR.match(segment, match.end())
            if nxt is None or nxt.group(1).islower():
                continue  # end of the line (handled below), or "e.g. the" / "wait... then"
            if _is_abbreviation(segment[cut : match.start()], match.group()):
                continue
            span = _strip_span(text, base + cut, base + match.end())
            if span is not None:
                spans.append(span)
            cut = match.end()
        span = _strip_span(text, base + cut, base + len(segment))
        if span is not None:
            spans.append(span)
    return spans


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with a few deterministic rules:

    1. Every line break (``\\n``, ``\\r\\n``, ``\\r``) ends a sentence: lines, bullet points and
       paragraphs are never joined (unwrap hard-wrapped text first, e.g.
       ``" ".join(text.split())``).
    2. Within a line, a sentence ends after a run of ``.``, ``!`` or ``?`` (with any closing
       quotes or brackets right after it) that is followed by whitespace and then by a character
       that is not a lowercase letter (a capital, a digit, a quote, a bracket, ...). So
       ``"e.g. the"`` and ``"wait... then"`` do not split, ``"It works. The end"`` does.
    3. A lone ``.`` does not end a sentence after an abbreviation: a word of
       :data:`ABBREVIATIONS` (``Dr``, ``Mr``, ``et al``, ``Fig``, ...), a single capital (an
       initial, ``"J. Smith"``), or a word with an inner ``.`` (``"e.g."``, ``"U.S."``).
    4. Sentences are stripped of surrounding whitespace; empty ones are dropped.

    Known limits of rules this simple: an abbreviation or initialism that really ends a
    sentence (``"... in the U.S. The next"``) is joined to the next one, an unlisted
    abbreviation before a capital (``"approx. Ten"``) splits, and scripts whose sentence marks
    are not ``.!?`` followed by whitespace (Chinese, Japanese) are not split within a line.

    Returns the sentences in order (``[]`` for a text of whitespace only). Their positions in
    ``text`` are :func:`sentence_spans`.
    """
    return [text[s:e] for s, e in sentence_spans(text)]


# --- results -------------------------------------------------------------------------------
@dataclass
class TextEmbedding:
    """The embedding of one text by :func:`embed_texts`.

    Attributes:
        embeddings: ``[n, hidden_size]`` float32 on the CPU, one row per unit (the input of
            :meth:`ProspectorModel.fit` / :meth:`~ProspectorModel.prospect` for this text).
        units: The ``n`` units: the sentences (``level="sentence"``) or the token strings
            (``level="token"``, as ``tokenizer.convert_ids_to_tokens`` writes them, e.g.
            ``"##ing"``).
        offsets: ``(start, end)`` character span of each unit in :attr:`text`: the sentence
            spans, or the tokenizer's offset mapping (None when embedded with
            ``return_offsets=False``).
        text: The text.
        level: ``"sentence"`` or ``"token"``.
        truncated: Indices of the sentences that were longer than ``max_length`` and were
            truncated (a warning named them); always empty at token level.
    """

    embeddings: Tensor
    units: list[str]
    offsets: list[tuple[int, int]] | None
    text: str
    level: str
    truncated: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.units)


def to_prospector_inputs(items: Iterable[TextEmbedding]) -> list[Tensor]:
    """The ``embeddings`` of each item, in order: the per-datum list that
    :meth:`ProspectorModel.fit`, :meth:`~ProspectorModel.predict` and ``forward`` read. Checks
    that every item is a :class:`TextEmbedding` and that they share one width."""
    if isinstance(items, TextEmbedding):
        raise TypeError("items must be a sequence of TextEmbedding; wrap a single one in a list")
    out: list[Tensor] = []
    for i, item in enumerate(items):
        if not isinstance(item, TextEmbedding):
            raise TypeError(f"items[{i}] must be a TextEmbedding, got {type(item).__name__}")
        if out and item.embeddings.shape[-1] != out[0].shape[-1]:
            raise ValueError(
                f"items[{i}] has width {item.embeddings.shape[-1]} but items[0] has "
                f"{out[0].shape[-1]}: embed all data with one encoder"
            )
        out.append(item.embeddings)
    if not out:
        raise ValueError("items is empty")
    return out


# --- encoder limits ------------------------------------------------------------------------
def _position_offset(encoder: nn.Module) -> int:
    """Positions a RoBERTa-style position table reserves (``padding_idx + 1``; 0 otherwise)."""
    for name, module in encoder.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, nn.Embedding):
            return 0 if module.padding_idx is None else module.padding_idx + 1
    return 0


def encoder_max_length(encoder: nn.Module, tokenizer: Any = None) -> int | None:
    """The longest input (special tokens included) ``encoder`` reads, or None if unknown, the
    first of: ``config.max_input_length`` (hazyzoo encoders: M2-BERT's filter and position
    lengths); ``config.max_position_embeddings`` less the positions a RoBERTa-style table
    reserves (``padding_idx + 1``: 514 -> 512); the tokenizer's ``model_max_length`` when that
    is a real limit (not transformers' 1e30 placeholder). The model's own limit wins over the
    tokenizer's, which is often a shared tokenizer's (M2-BERT-32k reads 32768 tokens with
    ``bert-base-uncased``'s tokenizer, whose ``model_max_length`` is 512)."""
    config = getattr(encoder, "config", None)
    limit = getattr(config, "max_input_length", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions - _position_offset(encoder)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _SANE_TOKENIZER_LIMIT:
        return tok_limit
    return None


# --- running the encoder -------------------------------------------------------------------
@dataclass
class _Row:
    """One encoder input row and where its output goes."""

    ids: list[int]
    type_ids: list[int] | None
    text: int
    sentence: int = -1  # sentence level: the row's sentence
    positions: Tensor | None = None  # token level: the window positions kept ...
    dest: Tensor | None = None  # ... and the tokens of the text they are


def _last_hidden(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out if out.ndim == 3 else None
    if isinstance(out, Mapping) or hasattr(out, "last_hidden_state"):
        get = out.get if isinstance(out, Mapping) else lambda key: getattr(out, key, None)
        hidden = get("last_hidden_state")
        if hidden is not None:
            return hidden
        states = get("hidden_states")
        if states is not None:
            return states[-1]
    return None


def _sentence_embedding(out: Any) -> Tensor | None:
    for key in ("sentence_embedding", "pooler_output"):
        value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    return None


class _EncoderCall:
    """Calls the encoder on a padded batch and returns what the pooling needs: the last hidden
    state ``[B, T, H]`` (``outputs.last_hidden_state``, else ``hidden_states[-1]``, asked for
    with ``output_hidden_states=True`` once the first output lacks both) or, for
    ``pooling="model"``, the encoder's sentence embedding ``[B, H]``."""

    def __init__(self, encoder: nn.Module, pooling: str | None) -> None:
        self.encoder = encoder
        self.pooling = pooling
        try:
            params = inspect.signature(encoder.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            params = {}
        self.names = set(params)
        self.var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.extra: dict[str, Any] = {}

    def inputs(self, ids: Tensor, mask: Tensor, type_ids: Tensor | None) -> dict[str, Tensor]:
        inputs = {"input_ids": ids}
        if "attention_mask" in self.names or self.var_kw:
            inputs["attention_mask"] = mask
        if type_ids is not None and "token_type_ids" in self.names:
            inputs["token_type_ids"] = type_ids
        return inputs

    def __call__(self, inputs: dict[str, Tensor]) -> Tensor:
        out = self.encoder(**inputs, **self.extra)
        if self.pooling == "model":
            pooled = _sentence_embedding(out)
            if pooled is None:
                raise TypeError(
                    f"pooling='model' needs an encoder output with sentence_embedding or "
                    f"pooler_output; {type(self.encoder).__name__} returned "
                    f"{type(out).__name__}: use pooling='mean' or 'cls'"
                )
            return pooled
        hidden = _last_hidden(out)
        if hidden is None and not self.extra:
            if "output_hidden_states" in self.names or self.var_kw:
                self.extra["output_hidden_states"] = True
            if "return_dict" in self.names or self.var_kw:
                self.extra["return_dict"] = True
            if self.extra:
                out = self.encoder(**inputs, **self.extra)
                hidden = _last_hidden(out)
        if hidden is None:
            raise TypeError(
                f"{type(self.encoder).__name__} returned {type(out).__name__} without "
                "last_hidden_state or hidden_states (also with output_hidden_states=True, "
                "return_dict=True): pass an encoder (AutoModel) that returns hidden states"
            )
        if tuple(hidden.shape[:2]) != tuple(inputs["input_ids"].shape):
            raise ValueError(
                f"the encoder's hidden states have shape {tuple(hidden.shape)} for inputs of "
                f"shape {tuple(inputs['input_ids'].shape)}: they must be [batch, seq, hidden] "
                "with one position per input token"
            )
        return hidden


def _encoder_device(encoder: nn.Module) -> torch.device:
    for tensor in encoder.parameters():
        return tensor.device
    for tensor in encoder.buffers():
        return tensor.device
    return torch.device("cpu")


def _pad(rows: Sequence[_Row], pad_id: int | None, pad_to: int | None) -> tuple[Tensor, ...]:
    """Right-pad the rows to the longest (or to ``pad_to``): ids, attention mask, type ids."""
    width = pad_to if pad_to is not None else max(len(r.ids) for r in rows)
    if pad_id is None and any(len(r.ids) != width for r in rows):
        raise ValueError(
            "the tokenizer has no pad token, so rows of different lengths cannot be batched: "
            "set one (e.g. tokenizer.pad_token = tokenizer.eos_token) or pass batch_size=1"
        )
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    with_types = all(r.type_ids is not None for r in rows)
    type_ids = torch.zeros(len(rows), width, dtype=torch.long) if with_types else None
    for b, row in enumerate(rows):
        n = len(row.ids)
        ids[b, :n] = torch.tensor(row.ids, dtype=torch.long)
        mask[b, :n] = 1
        if type_ids is not None:
            type_ids[b, :n] = torch.tensor(row.type_ids, dtype=torch.long)
    return ids, mask, type_ids


# --- embedding -----------------------------------------------------------------------------
def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str; wrap a single text in a list")
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: nothing to embed")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty (or whitespace only): nothing to embed")
    return texts


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _split_specials(ids: list[int], special: list[int]) -> tuple[list[int], list[int]]:
    """Positions of the content tokens, and the number of leading special tokens (the
    trailing ones follow the last content token)."""
    content = [p for p, s in enumerate(special) if not s]
    return content, (content[0] if content else len(ids))


def _sentence_rows(
    tokenizer: Any, texts: list[str], max_length: int
) -> tuple[list[_Row], list[TextEmbedding]]:
    spans = [sentence_spans(t) for t in texts]
    sentences = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
    enc = tokenizer(
        sentences,
        add_special_tokens=True,
        truncation=False,
        return_special_tokens_mask=True,
        verbose=False,
    )
    has_types = "token_type_ids" in enc
    rows, items, k = [], [], 0
    for i, (text, text_spans) in enumerate(zip(texts, spans)):
        if not text_spans:  # pragma: no cover - a non-blank text always has a sentence
            raise ValueError(f"texts[{i}] yields no sentences")
        item = TextEmbedding(
            embeddings=torch.empty(0),
            units=[text[s:e] for s, e in text_spans],
            offsets=list(text_spans),
            text=text,
            level="sentence",
        )
        too_long = []
        for j in range(len(text_spans)):
            ids, special = enc["input_ids"][k], enc["special_tokens_mask"][k]
            types = enc["token_type_ids"][k] if has_types else None
            k += 1
            content, lead = _split_specials(ids, special)
            if not content:
                raise ValueError(
                    f"texts[{i}], sentence {j} ({item.units[j]!r:.60}) yields no tokens "
                    "(the tokenizer drops every character of it)"
                )
            if len(ids) > max_length:
                keep = max_length - (len(ids) - len(content))  # room left for content
                if keep < 1:
                    raise ValueError(
                        f"max_length={max_length} leaves no room for content tokens next to "
                        f"the {len(ids) - len(content)} special tokens"
                    )
                cut = [*range(lead), *content[:keep], *range(content[-1] + 1, len(ids))]
                too_long.append((j, len(ids)))
                ids = [ids[p] for p in cut]
                types = [types[p] for p in cut] if types is not None else None
            types = list(types) if types is not None else None
            rows.append(_Row(ids=list(ids), type_ids=types, text=i, sentence=j))
        if too_long:
            item.truncated = [j for j, _ in too_long]
            listed = ", ".join(f"{j} ({n} tokens)" for j, n in too_long)
            warnings.warn(
                f"texts[{i}]: sentence{'s' if len(too_long) > 1 else ''} {listed} "
                f"{'are' if len(too_long) > 1 else 'is'} longer than max_length={max_length} "
                "and truncated (the embedding reads only the first tokens); split such "
                "sentences, raise max_length or use level='token'",
                UserWarning,
                stacklevel=3,
            )
        items.append(item)
    return rows, items


def _windows(n: int, width: int, overlap: int) -> list[int]:
    """Window starts over ``n`` tokens: ``0, step, 2 step, ...`` (``step = width - overlap``)
    and a last window ending at the last token."""
    if n <= width:
        return [0]
    return [*range(0, n - width, width - overlap), n - width]


def _assign(n: int, width: int, starts: list[int]) -> tuple[Tensor, Tensor]:
    """For each token, the window in which it is farthest from a window edge (ties to the
    earlier window), and its position in that window."""
    best = torch.full((n,), -1, dtype=torch.long)
    window = torch.zeros(n, dtype=torch.long)
    for w, start in enumerate(starts):
        t = torch.arange(start, min(start + width, n))
        score = torch.minimum(t - start, start + width - 1 - t)
        better = score > best[t]
        best[t[better]] = score[better]
        window[t[better]] = w
    return window, torch.arange(n) - torch.tensor(starts)[window]


def _token_rows(
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    overlap: int | None,
    return_offsets: bool,
) -> tuple[list[_Row], list[TextEmbedding]]:
    if return_offsets and not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer, so it has no offset mapping "
            "for the token offsets: use a fast tokenizer (AutoTokenizer.from_pretrained(..., "
            "use_fast=True)) or pass return_offsets=False"
        )
    enc = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=False,
        return_special_tokens_mask=True,
        return_offsets_mapping=return_offsets,
        verbose=False,
    )
    has_types = "token_type_ids" in enc
    rows, items = [], []
    for i, text in enumerate(texts):
        ids, special = enc["input_ids"][i], enc["special_tokens_mask"][i]
        content, lead = _split_specials(ids, special)
        if not content:
            raise ValueError(f"texts[{i}] ({text!r:.60}) yields no tokens")
        prefix, suffix = ids[:lead], ids[content[-1] + 1 :]
        tokens = [ids[p] for p in content]
        width = max_length - len(prefix) - len(suffix)
        if width < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for content tokens next to the "
                f"{len(prefix) + len(suffix)} special tokens"
            )
        o = width // 4 if overlap is None else overlap
        if o >= width:
            raise ValueError(
                f"window_overlap={o} must be smaller than the window's {width} content tokens "
                f"(max_length={max_length} less {len(prefix) + len(suffix)} special tokens)"
            )
        offsets = None
        if return_offsets:
            offsets = [tuple(int(x) for x in enc["offset_mapping"][i][p]) for p in content]
        items.append(
            TextEmbedding(
                embeddings=torch.empty(0),
                units=list(tokenizer.convert_ids_to_tokens(tokens)),
                offsets=offsets,
                text=text,
                level="token",
            )
        )
        n = len(tokens)
        starts = _windows(n, width, o)
        window, position = _assign(n, width, starts)
        for w, start in enumerate(starts):
            piece = tokens[start : start + width]
            row_ids = prefix + piece + suffix
            types = None
            if has_types:  # the type ids of a single sequence: the specials' and the content's
                all_types = enc["token_type_ids"][i]
                types = (
                    all_types[:lead]
                    + [all_types[content[0]]] * len(piece)
                    + all_types[content[-1] + 1 :]
                )
            dest = (window == w).nonzero().flatten()
            if dest.numel() == 0:  # pragma: no cover - every window keeps its centre
                continue
            rows.append(
                _Row(
                    ids=row_ids,
                    type_ids=types,
                    text=i,
                    positions=position[dest] + len(prefix),
                    dest=dest,
                )
            )
    return rows, items


def embed_texts(
    encoder: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    level: str = "sentence",
    batch_size: int = 32,
    max_length: int | None = None,
    pooling: str = "mean",
    device: str | torch.device | None = None,
    show_progress: bool = False,
    *,
    window_overlap: int | None = None,
    return_offsets: bool = True,
    pad_to_max_length: bool | None = None,
) -> list[TextEmbedding]:
    """Embed ``texts`` with a frozen ``encoder`` into one :class:`TextEmbedding` per text.

    Args:
        encoder: Any transformers encoder (``AutoModel``; also hazyzoo's
            ``M2BertForTextEncoding`` / ``M2BertModel``, or a task model that returns
            ``hidden_states``). Its output's ``last_hidden_state`` is read, else
            ``hidden_states[-1]`` (asked for with ``output_hidden_states=True``).
        tokenizer: Its tokenizer. Special tokens are added as the tokenizer adds them; the
            tokenizer's ``pad_token_id`` pads batches (on the right).
        texts: A list of non-empty strings.
        level: ``"sentence"`` (one row per sentence of :func:`split_sentences`) or ``"token"``
            (one row per token, special tokens excluded).
        batch_size: Encoder rows (sentences, or token windows) per forward pass. Rows are
            batched longest first; results do not depend on the batch size (up to float
            rounding of padded attention).
        max_length: Longest encoder input, special tokens included (default
            :func:`encoder_max_length`; it may not exceed it). Sentence level: longer sentences
            are truncated with a warning naming the text and the sentences (also in
            :attr:`TextEmbedding.truncated`). Token level: longer texts are read in windows.
        pooling: Sentence level: ``"mean"`` (mean of the last hidden state over the attention
            mask, special tokens included), ``"cls"`` (the first token's last hidden state) or
            ``"model"`` (the encoder's own ``sentence_embedding``, else ``pooler_output``).
            Checked but unused at token level.
        device: Where the inputs are put (default the device of the encoder's parameters; the
            encoder is not moved).
        show_progress: Show a tqdm progress bar over the batches.
        window_overlap: Token level: content tokens shared by consecutive windows (default a
            quarter of the window). A window holds ``W = max_length - specials`` content tokens
            (with the tokenizer's special tokens around them); windows start every
            ``W - window_overlap`` tokens, the last one ends at the text's last token, and
            each token takes its row from the window in which it is farthest from a window edge
            (ties: the earlier window), so a token has at least ``window_overlap // 2`` tokens
            of context on each side unless it is near the start or end of the text. A text of
            at most ``W`` tokens is one window, exactly as encoded whole. With an encoder whose
            every token sees the whole input (attention, long convolutions) windowed rows
            differ from what a longer input would give for every token, being computed from
            less context and other positions; with an encoder of receptive field at most
            ``window_overlap // 2`` they are equal.
        return_offsets: Token level: fill :attr:`TextEmbedding.offsets` from the tokenizer's
            offset mapping (needs a fast tokenizer). Sentence offsets are always given.
        pad_to_max_length: Pad every row to ``max_length`` instead of to the longest row of its
            batch. Default: only for encoders whose config says ``padding_invariant=False``
            (hazyzoo M2-BERT as released: pad tokens are mixed into the real ones, so a text's
            rows would otherwise depend on what it is batched with).

    Returns:
        One :class:`TextEmbedding` per text, in order.

    Raises:
        TypeError: ``texts`` is not a list of str; the encoder returns no hidden states.
        ValueError: no texts, an empty text, a text or sentence without tokens, an unknown
            ``level`` / ``pooling``, a ``max_length`` the encoder cannot read, token offsets
            asked of a tokenizer that has none.
    """
    texts = _check_texts(texts)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    _check_int("batch_size", batch_size, 1)
    if window_overlap is not None:
        _check_int("window_overlap", window_overlap, 0)
    limit = encoder_max_length(encoder, tokenizer)
    if max_length is None:
        if limit is None:
            raise ValueError(
                f"cannot tell the longest input {type(encoder).__name__} reads (no "
                "config.max_position_embeddings, no tokenizer.model_max_length): pass "
                "max_length"
            )
        max_length = limit
    _check_int("max_length", max_length, 2)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length={max_length} exceeds what the encoder reads ({limit})")
    if pad_to_max_length is None:
        config = getattr(encoder, "config", None)
        pad_to_max_length = getattr(config, "padding_invariant", None) is False

    if level == "sentence":
        rows, items = _sentence_rows(tokenizer, texts, max_length)
    else:
        rows, items = _token_rows(tokenizer, texts, max_length, window_overlap, return_offsets)

    device = torch.device(device) if device is not None else _encoder_device(encoder)
    call = _EncoderCall(encoder, pooling if level == "sentence" else None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_to = max_length if pad_to_max_length else None
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r].ids))  # stable: longest first
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    progress: Callable[[Any], Any] = lambda x: x  # noqa: E731
    if show_progress:
        from tqdm.auto import tqdm

        def progress(x: Any) -> Any:
            return tqdm(x, desc=f"embedding {level}s", unit="batch")

    results: list[Tensor | None] = [None] * len(texts)
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        with torch.inference_mode():
            for batch in progress(batches):
                chunk = [rows[r] for r in batch]
                ids, mask, type_ids = _pad(chunk, pad_id, pad_to)
                ids, mask = ids.to(device), mask.to(device)
                type_ids = type_ids.to(device) if type_ids is not None else None
                out = call(call.inputs(ids, mask, type_ids))
                out = out.float()
                if level == "sentence" and pooling == "mean":
                    m = mask.to(out.dtype)[..., None]
                    out = (out * m).sum(1) / m.sum(1)
                elif level == "sentence" and pooling == "cls":
                    out = out[:, 0]
                out = out.cpu()
                for b, row in enumerate(chunk):
                    target = results[row.text]
                    if target is None:
                        target = torch.empty(len(items[row.text]), out.shape[-1])
                        results[row.text] = target
                    if level == "sentence":
                        target[row.sentence] = out[b]
                    else:
                        target[row.dest] = out[b, row.positions]
    finally:
        for module, mode in modes:
            module.training = mode
    for item, emb in zip(items, results):
        item.embeddings = emb.clone()  # a normal tensor (not an inference tensor)
    return items

"""The prospector's text front end: sentence splitting, sentence/token embeddings with a tiny
random BERT (transformers) and a tiny hazyzoo M2-BERT, windows, offsets, truncation warnings,
errors, and text -> embeddings -> fit -> prospect end to end. Offline: the tokenizer is built
from an in-memory vocabulary."""

from __future__ import annotations

import random
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    RobertaConfig,
    RobertaModel,
)
from transformers.modeling_outputs import BaseModelOutput

import hazyzoo
from hazyzoo.modeling.modeling_prospector import ProspectorModel
from hazyzoo.modeling.prospector_embeddings import (
    TextEmbedding,
    embed_texts,
    encoder_max_length,
    sentence_spans,
    split_sentences,
    to_prospector_inputs,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a cat dog bird fox sat ran sang slept jumped on under mat log tree zebra loudly big "
    "small red old . ! ? ##s"
).split()
VOCAB = {w: i for i, w in enumerate([*SPECIALS, *WORDS])}
TEXTS = [
    "The cat sat on the mat. The dog ran!",
    "A zebra sang loudly. Big red cats sat under the tree? The old fox slept.",
    "The bird jumped.",
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast(vocab=dict(VOCAB))


def _bert_config() -> BertConfig:
    return BertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=len(VOCAB),
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return BertModel(_bert_config()).eval()


@pytest.fixture(scope="module")
def m2bert():
    torch.manual_seed(0)
    return hazyzoo.M2BertForTextEncoding(hazyzoo.M2BertConfig.tiny()).eval()


class LocalEncoder(nn.Module):
    """A non-transformers encoder of receptive field 1 on each side (a width-3 convolution over
    masked embeddings, no positions): windowed rows must equal whole-text rows."""

    def __init__(self, vocab_size: int, hidden: int = 8) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.embed = nn.Embedding(vocab_size, hidden)
        self.conv = nn.Conv1d(hidden, hidden, 3, padding=1)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids) * attention_mask[..., None]
        return BaseModelOutput(last_hidden_state=self.conv(x.transpose(1, 2)).transpose(1, 2))


class SlowProxy:
    """The fast tokenizer, claiming to be slow (transformers 5 builds no slow BERT tokenizer)."""

    is_fast = False

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def _long_text(n_sentences: int = 12, seed: int = 0) -> str:
    rng = random.Random(seed)
    nouns, verbs = ["cat", "dog", "bird", "fox"], ["sat", "ran", "slept", "jumped"]
    return " ".join(
        f"The {rng.choice(['big', 'small', 'red', 'old'])} {rng.choice(nouns)} "
        f"{rng.choice(verbs)} on the {rng.choice(['mat', 'log', 'tree'])}."
        for _ in range(n_sentences)
    )


# --- sentences -----------------------------------------------------------------------------
def test_split_sentences_rules():
    text = (
        "Hello world. This is Dr. Smith! Is it? yes it is.\n"
        "e.g. the thing stays. J. Smith went to the U.S. Army base. 3 cats ran.\n\n"
        '  He said "Stop." Then left. wait... then go'
    )
    assert split_sentences(text) == [
        "Hello world.",
        "This is Dr. Smith!",
        "Is it? yes it is.",
        "e.g. the thing stays.",
        "J. Smith went to the U.S. Army base.",
        "3 cats ran.",
        'He said "Stop."',
        "Then left. wait... then go",
    ]
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == split_sentences(text)
    assert split_sentences(text) == split_sentences(text)  # deterministic
    assert split_sentences("  \n\t ") == []
    assert split_sentences("no end punctuation") == ["no end punctuation"]
    assert split_sentences("one\ntwo\r\nthree") == ["one", "two", "three"]
    with pytest.raises(TypeError, match="str"):
        split_sentences(None)


# --- sentence level ------------------------------------------------------------------------
def test_sentence_level_shapes_units_offsets(tokenizer, bert, m2bert):
    for encoder, width in ((bert, 16), (m2bert, 32)):
        items = embed_texts(encoder, tokenizer, TEXTS)
        assert [len(i) for i in items] == [2, 3, 1]
        for text, item in zip(TEXTS, items):
            assert isinstance(item, TextEmbedding) and item.level == "sentence"
            assert item.units == split_sentences(text)
            assert [text[s:e] for s, e in item.offsets] == item.units
            assert item.embeddings.shape == (len(item.units), width)
            assert item.embeddings.dtype == torch.float32
            assert item.embeddings.device.type == "cpu"
            assert not item.embeddings.is_inference() and not item.embeddings.requires_grad
            assert item.truncated == []


def test_sentence_mean_and_cls_pooling_by_hand(tokenizer, bert):
    sentence = "The cat sat on the mat."
    enc = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state[0]
    mean = embed_texts(bert, tokenizer, [sentence + " The dog ran!"])[0].embeddings[0]
    torch.testing.assert_close(mean, hidden.mean(0), atol=1e-6, rtol=0)  # specials included
    cls = embed_texts(bert, tokenizer, [sentence], pooling="cls")[0].embeddings[0]
    torch.testing.assert_close(cls, hidden[0], atol=1e-6, rtol=0)


def test_m2bert_model_pooling_and_padding_to_max_length(tokenizer, m2bert):
    sentence = "A zebra sang loudly."
    # Released M2-BERT (padding_invariant=False) is read padded to max_length, as trained.
    enc = tokenizer(sentence, padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = m2bert(**enc)
    got = embed_texts(m2bert, tokenizer, [sentence], pooling="model")[0].embeddings[0]
    torch.testing.assert_close(got, out.sentence_embedding[0], atol=1e-5, rtol=0)
    mean = embed_texts(m2bert, tokenizer, [sentence])[0].embeddings[0]
    n = int(enc["attention_mask"].sum())
    torch.testing.assert_close(mean, out.last_hidden_state[0, :n].mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["bert", "m2bert", "m2bert_invariant"])
def test_batching_does_not_change_results(tokenizer, bert, m2bert, name):
    if name == "m2bert_invariant":
        torch.manual_seed(0)
        config = hazyzoo.M2BertConfig.tiny(padding_invariant=True)
        encoder = hazyzoo.M2BertForTextEncoding(config).eval()
    else:
        encoder = bert if name == "bert" else m2bert
    texts = [*TEXTS, _long_text(4)]
    for level in ("sentence", "token"):
        one = embed_texts(encoder, tokenizer, texts, level=level, batch_size=1, max_length=24)
        four = embed_texts(encoder, tokenizer, texts, level=level, batch_size=4, max_length=24)
        for a, b in zip(one, four):
            assert a.units == b.units
            torch.testing.assert_close(a.embeddings, b.embeddings, atol=ATOL, rtol=0)


def test_hidden_states_fallback_and_mode_restored(tokenizer, bert):
    torch.manual_seed(0)
    mlm = BertForMaskedLM(_bert_config())  # returns logits; hidden_states only when asked
    mlm.train()
    mlm.bert.encoder.eval()  # a mixed mode, restored module by module
    got = embed_texts(mlm, tokenizer, TEXTS, level="token")
    assert mlm.training and not mlm.bert.encoder.training and mlm.bert.embeddings.training
    want = embed_texts(mlm.bert, tokenizer, TEXTS, level="token")  # last_hidden_state
    for a, b in zip(got, want):
        torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-6, rtol=0)
    bert.train()  # dropout on: embed_texts must still run in eval mode
    try:
        again = embed_texts(bert, tokenizer, TEXTS)
        assert bert.training
    finally:
        bert.eval()
    for a, b in zip(again, embed_texts(bert, tokenizer, TEXTS)):
        torch.testing.assert_close(a.embeddings, b.embeddings, atol=0, rtol=0)


def test_truncation_warns_and_matches_tokenizer_truncation(tokenizer, bert):
    long_sentence = "The cat " * 20 + "sat."
    texts = ["The dog ran.", f"A bird sang. {long_sentence} The fox slept."]
    with pytest.warns(UserWarning, match=r"texts\[1\]: sentence 1 \(44 tokens\).*max_length=16"):
        items = embed_texts(bert, tokenizer, texts, max_length=16)
    assert items[0].truncated == [] and items[1].truncated == [1]
    enc = tokenizer(long_sentence, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        want = bert(**enc).last_hidden_state[0].mean(0)
    torch.testing.assert_close(items[1].embeddings[1], want, atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed_texts(bert, tokenizer, texts)  # 64 positions: nothing truncated, no warning


# --- token level ---------------------------------------------------------------------------
def test_token_level_units_offsets_and_special_tokens(tokenizer, bert):
    items = embed_texts(bert, tokenizer, TEXTS, level="token")
    for text, item in zip(TEXTS, items):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert item.units == tokenizer.convert_ids_to_tokens(ids)  # no [CLS] / [SEP]
        assert not set(item.units) & set(SPECIALS)
        assert item.embeddings.shape == (len(ids), 16)
        for unit, (s, e) in zip(item.units, item.offsets):
            assert text[s:e].lower() == unit.removeprefix("##")
        # One window: exactly the whole text encoded once, special rows dropped.
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**enc).last_hidden_state[0]
        torch.testing.assert_close(item.embeddings, hidden[1:-1], atol=1e-6, rtol=0)


def _reference_windows(n: int, width: int, overlap: int) -> list[int]:
    """The windows of each token by the documented rule, computed independently."""
    starts = [*range(0, n - width, width - overlap), n - width]
    chosen = []
    for t in range(n):
        scores = [min(t - s, s + width - 1 - t) if s <= t < s + width else -1 for s in starts]
        chosen.append(starts[scores.index(max(scores))])
    return chosen


@pytest.mark.parametrize("overlap", [None, 5])
def test_token_windows_cover_every_token_once(tokenizer, bert, overlap):
    text = _long_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n, max_length = len(ids), 12
    assert n > 5 * max_length
    item = embed_texts(
        bert, tokenizer, [text], level="token", max_length=max_length, window_overlap=overlap
    )[0]
    assert item.embeddings.shape == (n, 16)
    assert item.units == tokenizer.convert_ids_to_tokens(ids)
    width = max_length - 2
    starts = _reference_windows(n, width, width // 4 if overlap is None else overlap)
    cache = {}
    for t, start in enumerate(starts):
        if start not in cache:
            window = torch.tensor([[VOCAB["[CLS]"], *ids[start : start + width], VOCAB["[SEP]"]]])
            with torch.no_grad():
                cache[start] = bert(input_ids=window).last_hidden_state[0, 1:-1]
        torch.testing.assert_close(item.embeddings[t], cache[start][t - start], atol=ATOL, rtol=0)
    # BERT attends to the whole input, so windowed rows differ from a whole-text encoding for
    # every token (less context, other positions): the windows are a documented approximation.
    whole = embed_texts(bert, tokenizer, [text], level="token", max_length=64)[0]
    assert not torch.allclose(item.embeddings[: width // 2], whole.embeddings[: width // 2])


def test_token_windows_equal_whole_text_for_a_local_encoder(tokenizer):
    torch.manual_seed(0)
    encoder = LocalEncoder(len(VOCAB))
    text = _long_text()
    whole = embed_texts(encoder, tokenizer, [text], level="token")[0]
    assert encoder_max_length(encoder, tokenizer) == 512
    for overlap in (2, 4, 7):  # receptive field 1 <= overlap // 2: every token sees it all
        windowed = embed_texts(
            encoder, tokenizer, [text], level="token", max_length=12, window_overlap=overlap
        )[0]
        torch.testing.assert_close(windowed.embeddings, whole.embeddings, atol=1e-6, rtol=0)


def test_slow_tokenizer_offsets(tokenizer, bert):
    slow = SlowProxy(tokenizer)
    with pytest.raises(ValueError, match="not a fast tokenizer.*return_offsets=False"):
        embed_texts(bert, slow, TEXTS, level="token")
    items = embed_texts(bert, slow, TEXTS, level="token", return_offsets=False)
    assert all(i.offsets is None for i in items)
    assert embed_texts(bert, slow, TEXTS)[0].offsets == sentence_spans(TEXTS[0])


# --- limits and errors ---------------------------------------------------------------------
def test_encoder_max_length(tokenizer, bert, m2bert):
    short = BertTokenizerFast(vocab=dict(VOCAB), model_max_length=32)
    assert encoder_max_length(bert, tokenizer) == 64  # max_position_embeddings
    assert encoder_max_length(bert, short) == 64  # the model's limit wins
    assert encoder_max_length(m2bert, short) == m2bert.config.max_input_length == 64
    assert encoder_max_length(NoLimit(), short) == 32  # the tokenizer's, as a last resort
    assert encoder_max_length(NoLimit(), tokenizer) is None  # 1e30: no real limit
    roberta = RobertaModel(
        RobertaConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
            vocab_size=len(VOCAB), max_position_embeddings=20, pad_token_id=1,
        )
    )  # fmt: skip
    assert encoder_max_length(roberta) == 18  # padding_idx 1: positions start at 2
    text = _long_text()  # windows of 18 tokens: no position beyond RoBERTa's table
    item = embed_texts(roberta, tokenizer, [text], level="token")[0]
    assert item.embeddings.shape == (len(tokenizer(text, add_special_tokens=False)["input_ids"]), 8)


def test_errors(tokenizer, bert):
    cases = [
        (dict(texts=[]), ValueError, "empty"),
        (dict(texts="The cat sat."), TypeError, "wrap a single text"),
        (dict(texts=["The cat.", 3]), TypeError, r"texts\[1\] must be a str"),
        (dict(texts=["The cat.", "  \n"]), ValueError, r"texts\[1\] is empty"),
        (dict(texts=["The cat.", "\x00\x00"]), ValueError, r"texts\[1\], sentence 0.*no tokens"),
        (dict(texts=["\x00\x00"], level="token"), ValueError, r"texts\[0\].*no tokens"),
        (dict(texts=TEXTS, level="word"), ValueError, "level must be one of"),
        (dict(texts=TEXTS, pooling="max"), ValueError, "pooling must be one of"),
        (dict(texts=TEXTS, level="token", pooling="max"), ValueError, "pooling must be one of"),
        (dict(texts=TEXTS, batch_size=0), ValueError, "batch_size"),
        (dict(texts=TEXTS, max_length=65), ValueError, "exceeds what the encoder reads"),
        (dict(texts=[_long_text()], level="token", max_length=12, window_overlap=10), ValueError,
         "window_overlap=10"),
        (dict(texts=TEXTS, level="token", max_length=2), ValueError, "no room"),
    ]  # fmt: skip
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            embed_texts(bert, tokenizer, **kwargs)
    with pytest.raises(ValueError, match="pass max_length"):
        embed_texts(NoLimit(), tokenizer, TEXTS)
    with pytest.raises(TypeError, match="without last_hidden_state"):
        embed_texts(LogitsOnly(), tokenizer, TEXTS, max_length=16)
    with pytest.raises(TypeError, match="pooling='model'"):
        embed_texts(LocalEncoder(len(VOCAB)), tokenizer, TEXTS, pooling="model")
    with pytest.raises(TypeError, match="TextEmbedding"):
        to_prospector_inputs([torch.zeros(2, 16)])
    with pytest.raises(ValueError, match="empty"):
        to_prospector_inputs([])


class NoLimit(nn.Module):
    """An encoder with no config and so no known input limit."""

    def __init__(self) -> None:
        super().__init__()


class LogitsOnly(nn.Module):
    """Returns a bare tensor of logits, never hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), 4)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids).sum(-1)


# --- end to end ----------------------------------------------------------------------------
def test_text_to_prospector_map(tokenizer, bert):
    rng = random.Random(0)
    keyword = "A zebra sang loudly."
    docs, labels = [], []
    for i in range(16):
        sentences = split_sentences(_long_text(rng.randint(3, 5), seed=i))
        if i % 2:
            sentences.insert(rng.randrange(len(sentences) + 1), keyword)
        docs.append(" ".join(sentences))
        labels.append(i % 2)
    items = embed_texts(bert, tokenizer, docs, batch_size=8)
    head = ProspectorModel(hazyzoo.ProspectorConfig(hidden_size=16, num_concepts=4, radius=1))
    head.fit(to_prospector_inputs(items), labels)
    assert head.is_fitted
    reference = items[1].embeddings[items[1].units.index(keyword)]
    for doc in items:
        scores = head.prospect(doc.embeddings)
        assert scores.shape == (len(doc.units),) and torch.isfinite(scores).all()
        if keyword in doc.units:
            # Sentences are encoded one by one, so the keyword's row is the same in every
            # document and far from the filler sentences' (other words): it gets a concept of
            # its own, the one the kernel keeps. The margin is large even for a random encoder.
            hit = doc.units.index(keyword)
            torch.testing.assert_close(doc.embeddings[hit], reference, atol=ATOL, rtol=0)
            others = torch.cat([scores[:hit], scores[hit + 1 :]])
            assert scores[hit] > others.max() + 1
    assert head.predict_proba(to_prospector_inputs(items)).shape == (16,)

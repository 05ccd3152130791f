"""sentence-transformers loads a saved M2-BERT text encoder and encodes exactly what
``M2BertForTextEncoding`` encodes (``hazyzoo.integrations.sentence_transformers``).

The reference is the model called directly on the released usage's tokenization:
``tokenizer(texts, padding="max_length", max_length=config.max_input_length, truncation=True,
return_token_type_ids=False)``. Both padding semantics are covered: ``padding_invariant=False``
(pad tokens are tokens: sentence-transformers must pad to the maximum length) and ``True``
(padding is invisible: it pads to the longest text). Tiny random models (hidden 32, 2 layers,
64 positions) with random LayerNorm weights and biases, and a WordPiece tokenizer trained here.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE, Popen

import pytest
import torch
from packaging.version import Version
from torch import nn

sentence_transformers = pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

import hazyzoo  # noqa: E402
from hazyzoo.integrations import sentence_transformers as hz_st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-6
MAX_LENGTH = 64  # M2BertConfig.tiny's max_input_length
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CORPUS = [
    "The cat sat on the mat.",
    "A dog ran to the big red ball in the park.",
    "Long context retrieval reads whole documents with a monarch mixer.",
    "Queries and passages are compared by cosine similarity of their embeddings.",
    "Green trees grow slowly near the quiet blue river.",
]
TEXTS = [
    "the cat sat on the mat",
    "a dog ran to the big red ball in the park, and the cat sat",
    "retrieval",
    "Queries and passages: compared by cosine similarity.",
]
# Far more than 64 word pieces: truncated.
LONG_TEXT = " ".join(["long context retrieval reads whole documents"] * 20)
ST_6 = Version(sentence_transformers.__version__) >= Version("6")


# --------------------------------------------------------------------------------------------
# Fixtures: a tokenizer, random models, saved directories
# --------------------------------------------------------------------------------------------
def _make_tokenizer():
    """A BERT-style WordPiece tokenizer trained on :data:`CORPUS` ([PAD] = 0, [CLS] ... [SEP];
    training is not deterministic, so references read the tokenizer saved with the model).
    Its model_max_length (32) is below the model's 64 on purpose, as bert-base-uncased's 512 is
    below the released models' 2k-32k: the model's limit must win."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(
        CORPUS * 4, trainers.WordPieceTrainer(vocab_size=150, special_tokens=SPECIAL_TOKENS)
    )
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=32,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    return tokenizer


def _make_model(vocab_size: int, *, padding_invariant: bool, seed: int = 0):
    """A random tiny text encoder whose LayerNorms, biases and padding embedding are random too
    (nothing hides behind ones and zeros)."""
    torch.manual_seed(seed)
    config = hazyzoo.M2BertConfig.tiny(vocab_size=vocab_size, padding_invariant=padding_invariant)
    model = hazyzoo.M2BertForTextEncoding(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.5 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
        for name, param in model.named_parameters():
            if name.endswith("bias") and not param.any():
                param.normal_(0, 0.1)
        embeddings = model.get_input_embeddings().weight
        embeddings[config.pad_token_id].normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return _make_tokenizer()


def _save(directory: Path, model, tokenizer) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # Until M2BertForTextEncoding.save_pretrained writes them itself (idempotent afterwards).
    hz_st.write_sentence_transformers_files(directory, config=model.config)
    return directory


@pytest.fixture(scope="module", params=[False, True], ids=["released", "padding_invariant"])
def saved(request, tmp_path_factory, tokenizer) -> Path:
    model = _make_model(len(tokenizer), padding_invariant=request.param)
    return _save(tmp_path_factory.mktemp("m2bert_st"), model, tokenizer)


@pytest.fixture(scope="module")
def released(tmp_path_factory, tokenizer) -> Path:
    model = _make_model(len(tokenizer), padding_invariant=False, seed=1)
    return _save(tmp_path_factory.mktemp("m2bert_released"), model, tokenizer)


@pytest.fixture(scope="module")
def invariant(tmp_path_factory, tokenizer) -> Path:
    model = _make_model(len(tokenizer), padding_invariant=True, seed=1)
    return _save(tmp_path_factory.mktemp("m2bert_invariant"), model, tokenizer)


def _load(directory: Path) -> SentenceTransformer:
    # sentence-transformers >= 6 imports a class outside its package only when trusted.
    return SentenceTransformer(str(directory), device="cpu", trust_remote_code=True)


@torch.no_grad()
def _direct(directory: Path, texts: list[str], padding: str = "max_length") -> torch.Tensor:
    """The reference: the hazyzoo model on the released usage's tokenization."""
    from transformers import AutoTokenizer

    model = hazyzoo.M2BertForTextEncoding.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    inputs = tokenizer(
        texts,
        padding=padding,
        max_length=model.config.max_input_length,
        truncation=True,
        return_token_type_ids=False,
        return_tensors="pt",
    )
    return model(**inputs).sentence_embedding


def _encode(model: SentenceTransformer, texts: list[str], **kwargs) -> torch.Tensor:
    return model.encode(texts, convert_to_tensor=True, **kwargs).cpu()


def _start_python(code: str) -> Popen:
    """Start ``python -c code`` offline in the repository root (without waiting)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=PIPE,
        stderr=PIPE,
        text=True,
    )


def _finish(process: Popen) -> str:
    """Wait for ``process``; its stdout, after checking it succeeded."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


# Both fresh-process checks start together, when the first of their tests runs (each spends
# seconds importing torch and transformers; running them beside the in-process tests would
# only slow those down, as every torch process wants all the cores).
FRESH_LOAD = """
    import json, sys
    from sentence_transformers import SentenceTransformer
    assert "hazyzoo" not in sys.modules
    model = SentenceTransformer({directory!r}, device="cpu", trust_remote_code=True)
    assert "hazyzoo" in sys.modules, "hazyzoo was not imported"
    print(type(model[0]).__module__)
    print(json.dumps(model.encode({texts!r}).tolist()))
"""
NO_SENTENCE_TRANSFORMERS = """
    import sys
    import hazyzoo
    from hazyzoo.integrations import sentence_transformers as hz_st
    model = hazyzoo.M2BertForTextEncoding(hazyzoo.M2BertConfig.tiny())
    model.save_pretrained({directory!r})
    hz_st.write_sentence_transformers_files({directory!r}, config=model.config)
    assert "sentence_transformers" not in sys.modules, "sentence_transformers was imported"
    sys.modules["sentence_transformers"] = None
    try:
        hz_st.M2BertSentenceEncoder
    except ImportError as err:
        assert "pip install sentence-transformers" in str(err), err
    else:
        raise AssertionError("no ImportError")
    print("ok")
"""


@pytest.fixture(scope="module")
def fresh_processes(released, tmp_path_factory) -> Iterator[dict[str, tuple[Popen, Path]]]:
    """The two fresh Python processes (started, not awaited) and the directory each uses."""
    plain = tmp_path_factory.mktemp("m2bert_plain")
    processes = {
        "load": (_start_python(FRESH_LOAD.format(directory=str(released), texts=TEXTS)), released),
        "plain": (_start_python(NO_SENTENCE_TRANSFORMERS.format(directory=str(plain))), plain),
    }
    yield processes
    for process, _ in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


# --------------------------------------------------------------------------------------------
# Same embeddings
# --------------------------------------------------------------------------------------------
def test_encode_equals_the_model(saved):
    model = _load(saved)
    config = model[0].model.config
    assert isinstance(model[0], hz_st.M2BertSentenceEncoder)
    torch.testing.assert_close(_encode(model, TEXTS), _direct(saved, TEXTS), atol=ATOL, rtol=0)
    features = model.preprocess(TEXTS)
    assert set(features) == {"input_ids", "attention_mask"}  # no token_type_ids
    longest = int(features["attention_mask"].sum(-1).max())
    want = longest if config.padding_invariant else MAX_LENGTH
    assert features["input_ids"].shape == (len(TEXTS), want)


def test_released_model_is_padded_to_the_maximum(released):
    """Pad tokens change a released-semantics embedding, so the check above has teeth: padding
    to the longest text (sentence-transformers' default) would give other numbers."""
    model = _load(released)
    got = _encode(model, TEXTS)
    torch.testing.assert_close(got, _direct(released, TEXTS), atol=ATOL, rtol=0)
    assert (got - _direct(released, TEXTS, padding="longest")).abs().max() > 1e-3


def test_padding_invariant_batch_equals_one_at_a_time(invariant):
    model = _load(invariant)
    batched = _encode(model, TEXTS, batch_size=len(TEXTS))
    single = torch.cat([_encode(model, [text]) for text in TEXTS])
    torch.testing.assert_close(batched, single, atol=ATOL, rtol=0)
    torch.testing.assert_close(batched, _direct(invariant, TEXTS), atol=ATOL, rtol=0)
    # Padding to the longest text is exact, not only close, when the inputs are the same.
    torch.testing.assert_close(
        batched, _direct(invariant, TEXTS, padding="longest"), atol=0, rtol=0
    )


def test_long_text_is_truncated_as_the_model_reads_it(saved, tokenizer):
    model = _load(saved)
    features = model.preprocess([LONG_TEXT])
    assert features["input_ids"].shape == (1, MAX_LENGTH)
    assert features["input_ids"][0, -1] == tokenizer.sep_token_id
    got = _encode(model, [LONG_TEXT, *TEXTS])
    torch.testing.assert_close(got, _direct(saved, [LONG_TEXT, *TEXTS]), atol=ATOL, rtol=0)
    # What lies past the limit is not read.
    longer = _encode(model, [LONG_TEXT + " and then some more words at the end"])
    torch.testing.assert_close(longer, got[:1], atol=ATOL, rtol=0)


def test_token_embeddings_are_the_last_hidden_state(released, tokenizer):
    model = _load(released)
    tokens = model.encode(TEXTS[:2], output_value="token_embeddings")
    encoder = hazyzoo.M2BertForTextEncoding.from_pretrained(released).eval()
    inputs = tokenizer(
        TEXTS[:2], padding="max_length", max_length=MAX_LENGTH, truncation=True,
        return_token_type_ids=False, return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
    for row, got in enumerate(tokens):
        real = inputs["attention_mask"][row].bool()
        torch.testing.assert_close(got.cpu(), hidden[row][real], atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------
# Loading, saving, files
# --------------------------------------------------------------------------------------------
def test_loads_in_a_fresh_process_through_the_type_string(fresh_processes):
    """sentence-transformers imports hazyzoo itself (the modules.json type); nothing imports
    it first."""
    process, directory = fresh_processes["load"]
    module, embeddings = _finish(process).strip().splitlines()[-2:]
    assert module == "hazyzoo.integrations.sentence_transformers"
    got = torch.tensor(json.loads(embeddings))
    torch.testing.assert_close(got, _direct(directory, TEXTS), atol=ATOL, rtol=0)


@pytest.mark.skipif(not ST_6, reason="sentence-transformers < 6 imports module classes untrusted")
def test_sentence_transformers_6_asks_for_trust_and_the_helper_gives_it(released):
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(released), device="cpu")
    model = hz_st.load_sentence_transformer(released, device="cpu")
    torch.testing.assert_close(_encode(model, TEXTS), _direct(released, TEXTS), atol=ATOL, rtol=0)


def test_helper_trusts_only_the_single_m2bert_module(released, tmp_path):
    assert hz_st._only_module_is_ours(str(released), {})
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": hz_st.MODULE_TYPE},
                {"idx": 1, "name": "1", "path": "1_Dense", "type": "somewhere.Else"},
            ]
        )
    )
    assert not hz_st._only_module_is_ours(str(tmp_path), {})
    assert not hz_st._only_module_is_ours(str(tmp_path / "missing"), {"local_files_only": True})


def test_save_round_trips_and_stays_a_hazyzoo_checkpoint(saved, tmp_path):
    model = _load(saved)
    before = _encode(model, TEXTS)
    model.save(str(tmp_path))
    again = _load(tmp_path)
    torch.testing.assert_close(_encode(again, TEXTS), before, atol=0, rtol=0)
    encoder = hazyzoo.M2BertForTextEncoding.from_pretrained(tmp_path)
    for a, b in zip(encoder.state_dict().values(), model[0].model.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(_direct(tmp_path, TEXTS), before, atol=ATOL, rtol=0)
    for name in (hz_st.MODULES_FILE, hz_st.MODULE_CONFIG_FILE):
        assert (tmp_path / name).read_text() == (saved / name).read_text(), name


def test_written_files_are_what_sentence_transformers_writes(released, tmp_path):
    """The files written without sentence-transformers equal, key for key, what
    ``SentenceTransformer.save`` writes for the same model."""
    _load(released).save(str(tmp_path))
    for name in (hz_st.MODULES_FILE, hz_st.MODEL_CONFIG_FILE, hz_st.MODULE_CONFIG_FILE):
        ours = json.loads((released / name).read_text())
        theirs = json.loads((tmp_path / name).read_text())
        assert ours == theirs, name
    assert json.loads((released / hz_st.MODULES_FILE).read_text()) == [
        {"idx": 0, "name": "0", "path": "", "type": hz_st.MODULE_TYPE}
    ]
    model_config = json.loads((released / hz_st.MODEL_CONFIG_FILE).read_text())
    assert model_config["similarity_fn_name"] == "cosine"
    assert model_config["model_type"] == "SentenceTransformer"
    assert model_config["__version__"]["sentence_transformers"] == sentence_transformers.__version__
    assert json.loads((released / hz_st.MODULE_CONFIG_FILE).read_text()) == {"max_seq_length": 64}


def test_built_from_modules_saves_and_loads(tokenizer, tmp_path):
    encoder = _make_model(len(tokenizer), padding_invariant=True, seed=2)
    module = hz_st.M2BertSentenceEncoder(encoder, tokenizer, max_seq_length=16)
    model = SentenceTransformer(modules=[module], device="cpu", prompts={"query": "query: "})
    model.save(str(tmp_path))
    again = _load(tmp_path)
    assert again.max_seq_length == 16
    assert again.prompts["query"] == "query: "  # config_sentence_transformers.json is kept
    # Not bit-exact: the same weights read from safetensors sit at other addresses, and CPU
    # kernels may then round differently (~3e-8 here; two loaded copies agree exactly).
    for texts in (TEXTS, [LONG_TEXT]):
        torch.testing.assert_close(
            _encode(again, texts, prompt_name="query"),
            _encode(model, texts, prompt_name="query"),
            atol=ATOL,
            rtol=0,
        )
    assert _load(tmp_path).preprocess([LONG_TEXT])["input_ids"].shape == (1, 16)
    hazyzoo.M2BertForTextEncoding.from_pretrained(tmp_path)


def test_wired_save_pretrained_keeps_what_sentence_transformers_saves(
    monkeypatch, tokenizer, tmp_path
):
    """Once ``M2BertForTextEncoding.save_pretrained`` writes the files itself, saving through
    sentence-transformers must still keep its own config_sentence_transformers.json (written
    before the module saves), here its prompts."""
    plain_save = hazyzoo.M2BertForTextEncoding.save_pretrained

    def wired(self, save_directory, *args, **kwargs):
        plain_save(self, save_directory, *args, **kwargs)
        hz_st.write_sentence_transformers_files(save_directory, config=self.config)

    monkeypatch.setattr(hazyzoo.M2BertForTextEncoding, "save_pretrained", wired)
    encoder = _make_model(len(tokenizer), padding_invariant=False, seed=3)
    encoder.save_pretrained(tmp_path / "plain")  # what the wiring alone writes
    assert (tmp_path / "plain" / hz_st.MODULES_FILE).is_file()
    module = hz_st.M2BertSentenceEncoder(encoder, tokenizer)
    model = SentenceTransformer(modules=[module], device="cpu", prompts={"query": "query: "})
    model.save(str(tmp_path / "st"))
    saved = json.loads((tmp_path / "st" / hz_st.MODEL_CONFIG_FILE).read_text())
    assert saved["prompts"]["query"] == "query: "
    assert _load(tmp_path / "st").prompts["query"] == "query: "


def test_similarity_is_cosine_and_lengths_are_the_models(released):
    model = _load(released)
    config = model[0].model.config
    assert model.similarity_fn_name == "cosine"
    embeddings = _encode(model, TEXTS)
    want = (
        nn.functional.normalize(embeddings, dim=-1) @ nn.functional.normalize(embeddings, dim=-1).T
    )
    torch.testing.assert_close(model.similarity(embeddings, embeddings), want, atol=ATOL, rtol=0)
    assert model.max_seq_length == config.max_input_length == MAX_LENGTH  # not the tokenizer's 32
    assert model.get_embedding_dimension() == config.hidden_size
    # Queries and documents are encoded alike (no prompts are saved; ``task`` routes nothing).
    torch.testing.assert_close(model.encode_query(TEXTS, convert_to_tensor=True), embeddings)
    torch.testing.assert_close(model.encode_document(TEXTS, convert_to_tensor=True), embeddings)


def test_module_pickles_by_its_import_path(released):
    """Multi-process encoding pickles the model: the class is found again by its path."""
    import pickle

    module = _load(released)[0]
    again = pickle.loads(pickle.dumps(module))
    assert type(again) is hz_st.M2BertSentenceEncoder
    assert f"{type(again).__module__}.{type(again).__qualname__}" == hz_st.MODULE_TYPE
    with torch.no_grad():
        features = module.preprocess(TEXTS)
        torch.testing.assert_close(
            again(dict(features))["sentence_embedding"],
            module(dict(features))["sentence_embedding"],
            atol=0,
            rtol=0,
        )


# --------------------------------------------------------------------------------------------
# Without sentence-transformers
# --------------------------------------------------------------------------------------------
def test_files_are_written_with_sentence_transformers_blocked(monkeypatch, tokenizer, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    model = _make_model(len(tokenizer), padding_invariant=False)
    model.save_pretrained(tmp_path)
    assert hz_st.write_sentence_transformers_files(tmp_path) == [
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_m2bert_config.json",
    ]
    assert json.loads((tmp_path / "sentence_m2bert_config.json").read_text()) == {
        "max_seq_length": 64
    }
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        hz_st.load_sentence_transformer(tmp_path)
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        hz_st._build_encoder_class()


def test_import_hazyzoo_never_imports_sentence_transformers(fresh_processes):
    """Importing hazyzoo, saving a text encoder and writing the files import nothing of
    sentence-transformers; with it blocked, the module class is a clear ImportError."""
    process, directory = fresh_processes["plain"]
    assert _finish(process).strip().endswith("ok")
    assert (directory / "modules.json").is_file()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_wrong_models_and_configs_are_refused(tokenizer, tmp_path):
    from transformers import BertConfig

    config = hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer))
    with pytest.raises(TypeError, match="M2BertConfig"):
        hz_st.write_sentence_transformers_files(tmp_path, config=BertConfig())
    masked = tmp_path / "masked_lm"
    hazyzoo.M2BertForMaskedLM(config).save_pretrained(masked)
    with pytest.raises(ValueError, match="not a text encoder"):
        hz_st.write_sentence_transformers_files(masked)
    bert = tmp_path / "bert"
    BertConfig(vocab_size=len(tokenizer)).save_pretrained(bert)
    with pytest.raises(ValueError, match="hazyzoo_m2bert"):
        hz_st.write_sentence_transformers_files(bert)
    with pytest.raises(FileNotFoundError, match="config.json"):
        hz_st.write_sentence_transformers_files(tmp_path / "empty")
    with pytest.raises(TypeError, match="M2BertForTextEncoding"):
        hz_st.M2BertSentenceEncoder(hazyzoo.M2BertModel(config), tokenizer)
    small = hazyzoo.M2BertForTextEncoding(hazyzoo.M2BertConfig.tiny(vocab_size=8))
    with pytest.raises(ValueError, match="vocabulary"):
        hz_st.M2BertSentenceEncoder(small, tokenizer)
    # Nor does the module load a masked-LM directory (no pooler, so no sentence embedding).
    with pytest.raises(ValueError, match="not a text encoder"):
        hz_st.M2BertSentenceEncoder.load(str(masked))


def test_max_seq_length_follows_the_padding_semantics(tokenizer):
    released = hazyzoo.M2BertForTextEncoding(hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer)))
    module = hz_st.M2BertSentenceEncoder(released, tokenizer)
    assert module.max_seq_length == MAX_LENGTH and module.padding == "max_length"
    with pytest.raises(ValueError, match="padding_invariant=False"):
        module.max_seq_length = 32
    with pytest.raises(ValueError, match="between 1 and 64"):
        module.max_seq_length = 65
    with pytest.raises(TypeError, match="int"):
        module.max_seq_length = 16.0
    invariant = hazyzoo.M2BertForTextEncoding(
        hazyzoo.M2BertConfig.tiny(vocab_size=len(tokenizer), padding_invariant=True)
    )
    module = hz_st.M2BertSentenceEncoder(invariant, tokenizer)
    module.max_seq_length = 8
    assert module.padding == "longest"
    assert module.tokenize([LONG_TEXT, "cat"])["input_ids"].shape == (2, 8)


def test_bad_inputs_and_options(released, tmp_path):
    module = _load(released)[0]
    with pytest.raises(ValueError, match="pair"):
        module.preprocess([("a query", "a passage")])
    with pytest.raises(TypeError, match="str"):
        module.preprocess([3])
    with pytest.raises(ValueError, match="processing_kwargs"):
        module.preprocess(TEXTS, processing_kwargs={"text": {"max_length": 8}})
    assert module.preprocess(TEXTS, task="query")["input_ids"].shape == (len(TEXTS), 64)
    with pytest.raises(ValueError, match="backend"):
        hz_st.M2BertSentenceEncoder.load(str(released), backend="onnx")
    # No tokenizer files: a clear error naming what to save.
    hazyzoo.M2BertForTextEncoding.from_pretrained(released).save_pretrained(tmp_path)
    hz_st.write_sentence_transformers_files(tmp_path)
    with pytest.raises(OSError, match=r"tokenizer\.save_pretrained"):
        hz_st.M2BertSentenceEncoder.load(str(tmp_path))


# --------------------------------------------------------------------------------------------
# The protocol of sentence-transformers < 5 (read from their sources, emulated here)
# --------------------------------------------------------------------------------------------
def test_plain_module_protocol_of_older_releases(released, tmp_path, monkeypatch):
    """Releases before 5.0 have no module base class: the class is a torch.nn.Module. Their
    loaders first try ``cls(path, cache_dir=..., backend=..., model_args=..., ...)`` for a module
    at path "" (3.1-4.x), fall back to ``cls.load(path)`` on TypeError, then call
    ``tokenize(texts)`` and ``forward(features)``; saving calls ``save(path)``."""
    monkeypatch.setattr(hz_st, "_sentence_transformers_base", lambda: nn.Module)
    plain = hz_st._build_encoder_class()
    assert plain.__mro__[1:] == (hz_st._M2BertSentenceEncoderImpl, nn.Module, object)
    with pytest.raises(TypeError):
        plain(str(released), cache_dir=None, backend="torch", model_args={}, tokenizer_args={})
    module = plain.load(str(released))
    with torch.no_grad():
        got = module.forward(module.tokenize(TEXTS))["sentence_embedding"]
    torch.testing.assert_close(got, _direct(released, TEXTS), atol=ATOL, rtol=0)
    module.save(str(tmp_path))
    again = plain.load(str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(
            again.forward(again.tokenize(TEXTS))["sentence_embedding"], got, atol=0, rtol=0
        )

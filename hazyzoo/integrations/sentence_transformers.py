"""sentence-transformers support for M2-BERT text encoders.

A directory holding an :class:`~hazyzoo.M2BertForTextEncoding` checkpoint (``config.json``,
``model.safetensors``), its tokenizer files, and the three small files that
:func:`write_sentence_transformers_files` writes is at once a hazyzoo checkpoint and a
sentence-transformers model::

    modules.json                        one module, path "" (this directory), of type
                                        hazyzoo.integrations.sentence_transformers.M2BertSentenceEncoder
    config_sentence_transformers.json   versions, prompts, similarity_fn_name "cosine"
    sentence_m2bert_config.json         the module's settings (max_seq_length)

Loading it runs :class:`M2BertSentenceEncoder`, which tokenizes as the model requires and calls
the hazyzoo model itself, so ``SentenceTransformer(DIR).encode(texts)`` returns exactly the
``sentence_embedding`` of ``M2BertForTextEncoding``::

    load_sentence_transformer(DIR).encode(texts)                      # any version
    SentenceTransformer(DIR, trust_remote_code=True).encode(texts)    # the same

sentence-transformers' own ``Transformer`` +
``Pooling`` modules cannot: they pad to the longest text of a batch (the released models read
pad tokens as tokens and must be padded to ``config.max_input_length``), they have no
``tanh(dense(h[:, 0]))`` pooler, and ``AutoModel`` knows ``hazyzoo_m2bert`` only after
``import hazyzoo``. The module type string makes sentence-transformers import hazyzoo itself.

sentence-transformers >= 6 refuses module classes outside its own package unless the call says
``trust_remote_code=True``; :func:`load_sentence_transformer` passes it for a directory whose only
module is :class:`M2BertSentenceEncoder` (the code it imports is this installed package, nothing
from the checkpoint).

Versions: on sentence-transformers >= 5.4 the module derives from
``sentence_transformers.base.modules.InputModule``, on 5.0-5.3 from
``sentence_transformers.models.InputModule``, and on older releases it is a plain
``torch.nn.Module`` with the same ``tokenize``/``forward``/``save``/``load`` methods. Nothing here
imports sentence-transformers until :class:`M2BertSentenceEncoder` or
:func:`load_sentence_transformer` is used: ``M2BertForTextEncoding.save_pretrained`` can write the
files where sentence-transformers is not installed.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.metadata
import json
import os
import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

    from hazyzoo.configuration.configuration_m2bert import M2BertConfig
    from hazyzoo.modeling.modeling_m2bert import M2BertForTextEncoding

__all__ = [
    "MODEL_CONFIG_FILE",
    "MODULES_FILE",
    "MODULE_CONFIG_FILE",
    "MODULE_TYPE",
    "M2BertSentenceEncoder",
    "load_sentence_transformer",
    "write_sentence_transformers_files",
]

MODULE_CLASS_NAME = "M2BertSentenceEncoder"
# The ``type`` in modules.json: the class's import path, so loading imports hazyzoo.
MODULE_TYPE = f"{__name__}.{MODULE_CLASS_NAME}"
MODULES_FILE = "modules.json"
MODEL_CONFIG_FILE = "config_sentence_transformers.json"
# Not sentence_bert_config.json: that name belongs to sentence-transformers' Transformer module.
MODULE_CONFIG_FILE = "sentence_m2bert_config.json"

_MODEL_TYPE = "hazyzoo_m2bert"
_ENCODER_ARCHITECTURE = "M2BertForTextEncoding"
_INSTALL_HINT = "pip install sentence-transformers"
_MODULE_SETTINGS = ("max_seq_length",)

# True while M2BertSentenceEncoder.save runs inside SentenceTransformer.save, which writes
# modules.json and config_sentence_transformers.json itself (the latter before the module saves:
# rewriting it there would drop the model's prompts and similarity function).
_SENTENCE_TRANSFORMER_SAVING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "hazyzoo_sentence_transformer_saving", default=False
)
_CLASS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Files (plain JSON: no sentence-transformers needed)
# --------------------------------------------------------------------------------------------
def _check_architectures(architectures: Any, source: str | os.PathLike) -> None:
    if architectures and _ENCODER_ARCHITECTURE not in architectures:
        raise ValueError(
            f"{source} describes a {', '.join(map(str, architectures))} checkpoint, not a text "
            f"encoder: a sentence-transformers model needs {_ENCODER_ARCHITECTURE} (the pooler that "
            "makes the sentence embedding); save an M2BertForTextEncoding there instead"
        )


def _check_encoder_config(config: Any) -> M2BertConfig:
    from hazyzoo.configuration.configuration_m2bert import M2BertConfig

    if not isinstance(config, M2BertConfig):
        raise TypeError(
            f"config must be an M2BertConfig (model_type {_MODEL_TYPE!r}), got "
            f"{type(config).__name__} with model_type {getattr(config, 'model_type', None)!r}: "
            "the sentence-transformers files describe M2-BERT text encoders only"
        )
    _check_architectures(config.architectures, "config")
    return config


def _read_directory_config(directory: Path) -> M2BertConfig:
    from hazyzoo.configuration.configuration_m2bert import M2BertConfig
    from hazyzoo.validation import check_json_file, check_model_type

    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: save the model there first "
            "(M2BertForTextEncoding.save_pretrained) or pass config="
        )
    raw = check_json_file(path)
    check_model_type(raw, _MODEL_TYPE, path)
    _check_architectures(raw.get("architectures"), path)
    return M2BertConfig.from_pretrained(directory)


def _library_versions() -> dict[str, str]:
    """The versions sentence-transformers records; its own only where it is installed (read
    from the package metadata, so nothing is imported)."""
    import torch
    import transformers

    versions = {"pytorch": torch.__version__, "transformers": transformers.__version__}
    try:
        versions["sentence_transformers"] = importlib.metadata.version("sentence-transformers")
    except importlib.metadata.PackageNotFoundError:
        pass
    return versions


def _sentence_transformers_model_config() -> dict[str, Any]:
    """The contents of ``config_sentence_transformers.json``: the keys sentence-transformers 6.3
    writes for a ``SentenceTransformer`` (no prompts, cosine similarity)."""
    return {
        "__version__": _library_versions(),
        "default_prompt_name": None,
        "model_type": "SentenceTransformer",
        "prompts": {"document": "", "query": ""},
        "similarity_fn_name": "cosine",
    }


def _write_json(path: Path, value: Any, **dump_kwargs: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, **dump_kwargs)


def write_sentence_transformers_files(
    directory: str | os.PathLike, *, config: M2BertConfig | None = None
) -> list[str]:
    """Write ``modules.json``, ``config_sentence_transformers.json`` and
    ``sentence_m2bert_config.json`` into ``directory`` so that the M2-BERT text-encoder checkpoint
    there loads with ``SentenceTransformer(directory)``; return the names written.

    ``config`` is the model's :class:`~hazyzoo.M2BertConfig` (what
    ``M2BertForTextEncoding.save_pretrained`` passes); without it ``directory/config.json`` is
    read. The module's ``max_seq_length`` is the model's ``max_input_length``. Plain JSON: works
    without sentence-transformers installed. Existing files of these names are replaced.
    Inside ``SentenceTransformer.save`` (which writes these files itself) it writes nothing and
    returns ``[]``.

    Raises:
        TypeError: ``config`` is not an ``M2BertConfig``.
        ValueError: the config is another model type's or a head other than
            ``M2BertForTextEncoding`` (e.g. a masked-LM checkpoint, which has no pooler).
        FileNotFoundError: no ``config`` and no ``directory/config.json``.
    """
    if _SENTENCE_TRANSFORMER_SAVING.get():
        return []
    directory = Path(directory)
    if config is None:
        config = _read_directory_config(directory)
    else:
        config = _check_encoder_config(config)
        directory.mkdir(parents=True, exist_ok=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    # The layouts sentence-transformers itself uses: modules.json indent 2, its model config
    # indent 2 with sorted keys, a module's config indent 4.
    _write_json(directory / MODULES_FILE, modules, indent=2)
    _write_json(
        directory / MODEL_CONFIG_FILE,
        _sentence_transformers_model_config(),
        indent=2,
        sort_keys=True,
    )
    _write_json(
        directory / MODULE_CONFIG_FILE, {"max_seq_length": config.max_input_length}, indent=4
    )
    return [MODULES_FILE, MODEL_CONFIG_FILE, MODULE_CONFIG_FILE]


# --------------------------------------------------------------------------------------------
# Loading with sentence-transformers
# --------------------------------------------------------------------------------------------
def _modules_json_path(path: str, kwargs: Mapping[str, Any]) -> Path | None:
    local = Path(path)
    if local.exists():
        candidate = local / MODULES_FILE
        return candidate if candidate.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(
                path,
                MODULES_FILE,
                revision=kwargs.get("revision"),
                token=kwargs.get("token"),
                cache_dir=kwargs.get("cache_folder"),
                local_files_only=bool(kwargs.get("local_files_only", False)),
            )
        )
    except Exception:  # not a Hub repository, or unreachable: SentenceTransformer will say
        return None


def _only_module_is_ours(path: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``path``'s modules.json lists exactly one module, :class:`M2BertSentenceEncoder`."""
    modules_json = _modules_json_path(path, kwargs)
    if modules_json is None:
        return False
    try:
        entries = json.loads(modules_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(entries, list)
        and len(entries) == 1
        and isinstance(entries[0], dict)
        and entries[0].get("type") == MODULE_TYPE
    )


def load_sentence_transformer(path: str | os.PathLike, **kwargs: Any) -> SentenceTransformer:
    """``SentenceTransformer(path, **kwargs)`` for an M2-BERT directory (or Hub repository).

    sentence-transformers >= 6 imports a module class from outside its own package only with
    ``trust_remote_code=True``. Where ``modules.json`` lists exactly one module, of type
    :data:`MODULE_TYPE`, and ``trust_remote_code`` is not given, this passes it: the class comes
    from the installed hazyzoo, and :class:`M2BertSentenceEncoder` never runs code from the
    checkpoint (it does not forward the flag to transformers). Any other layout is loaded as
    given, so sentence-transformers applies its own rule.

    Raises:
        ImportError: sentence-transformers is not installed.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"load_sentence_transformer needs sentence-transformers: {_INSTALL_HINT}"
        ) from err
    path = os.fspath(path)
    # With the flag, sentence-transformers first asks transformers for the class as repository
    # code ("file.Class"); a dotted package path is not of that form, so it imports hazyzoo.
    if "trust_remote_code" not in kwargs and _only_module_is_ours(path, kwargs):
        kwargs["trust_remote_code"] = True
    return SentenceTransformer(path, **kwargs)


# --------------------------------------------------------------------------------------------
# The module class (built on first use, on the installed sentence-transformers' base class)
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _sentence_transformer_saving() -> Iterator[None]:
    token = _SENTENCE_TRANSFORMER_SAVING.set(True)
    try:
        yield
    finally:
        _SENTENCE_TRANSFORMER_SAVING.reset(token)


def _check_model(model: Any) -> None:
    from hazyzoo.modeling.modeling_m2bert import M2BertForTextEncoding

    if not isinstance(model, M2BertForTextEncoding):
        raise TypeError(
            f"model must be an M2BertForTextEncoding (the text encoder whose pooler makes the "
            f"sentence embedding), got {type(model).__name__}"
        )


def _check_tokenizer(tokenizer: Any, config: M2BertConfig) -> None:
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer (PreTrainedTokenizerBase), got "
            f"{type(tokenizer).__name__}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} has no pad token; M2-BERT batches are padded "
            "(the released models use bert-base-uncased's [PAD], id 0)"
        )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary holds "
            f"{config.vocab_size} (config.vocab_size): its ids would index past the embeddings; "
            "use the model's own tokenizer"
        )


def _read_module_settings(source: str, hub: Mapping[str, Any]) -> dict[str, Any]:
    """The module's saved settings (``sentence_m2bert_config.json``), or ``{}`` where absent."""
    from hazyzoo.validation import check_json_file

    subfolder = hub.get("subfolder") or ""
    local = Path(source, subfolder)
    if Path(source).is_dir():
        path = local / MODULE_CONFIG_FILE
        return check_json_file(path) if path.is_file() else {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        downloaded = hf_hub_download(
            source,
            MODULE_CONFIG_FILE,
            subfolder=subfolder or None,
            revision=hub.get("revision"),
            token=hub.get("token"),
            cache_dir=hub.get("cache_dir"),
            local_files_only=bool(hub.get("local_files_only")),
        )
    except EntryNotFoundError:
        return {}
    return check_json_file(downloaded)


class _M2BertSentenceEncoderImpl:
    """A sentence-transformers input module that runs a hazyzoo
    :class:`~hazyzoo.M2BertForTextEncoding` with its tokenizer.

    ``tokenize``/``preprocess`` tokenize as the model requires: with
    ``config.padding_invariant=False`` (the released models, which read pad tokens as tokens)
    every text is padded to ``max_seq_length`` = ``config.max_input_length``
    (``padding="max_length"``); with ``True`` to the longest text of the batch, which gives the
    same embeddings (to float rounding) faster. Texts are truncated to ``max_seq_length`` tokens; no
    ``token_type_ids`` are made (the released usage). ``forward`` sets ``sentence_embedding`` (the
    model's, normalised where ``config.normalize_embeddings``) and ``token_embeddings`` (its last
    hidden state). ``save``/``load`` use ``save_pretrained``/``from_pretrained`` and the tokenizer
    in the same directory, so a saved SentenceTransformer is also a hazyzoo checkpoint.

    Args:
        model: The text encoder.
        tokenizer: Its tokenizer (must have a pad token and fit the model's vocabulary).
        max_seq_length: Tokens per text; default ``config.max_input_length``, the only value a
            model with ``padding_invariant=False`` accepts.
    """

    config_file_name = MODULE_CONFIG_FILE
    config_keys = list(_MODULE_SETTINGS)
    save_in_root = True
    forward_kwargs: set[str] = set()

    def __init__(
        self,
        model: M2BertForTextEncoding,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__()
        _check_model(model)
        _check_tokenizer(tokenizer, model.config)
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = (
            model.config.max_input_length if max_seq_length is None else max_seq_length
        )

    # --- settings ------------------------------------------------------------------------
    @property
    def max_seq_length(self) -> int:
        """Tokens per text (longer texts are truncated). With ``padding_invariant=False`` this is
        ``config.max_input_length`` and cannot change: the pad tokens change the embedding."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        config = self.model.config
        limit = config.max_input_length
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"max_seq_length must be an int, got {type(value).__name__} {value!r}")
        if not 1 <= value <= limit:
            raise ValueError(
                f"max_seq_length must be between 1 and {limit} (the model's max_input_length), "
                f"got {value}"
            )
        if not config.padding_invariant and value != limit:
            raise ValueError(
                f"max_seq_length must be {limit} for this model, got {value}: with "
                "config.padding_invariant=False (the released models' semantics) pad tokens are "
                f"read as tokens, so every text is padded to max_input_length={limit}; only a "
                "padding-invariant model reads shorter inputs"
            )
        self._max_seq_length = value

    @property
    def padding(self) -> str:
        """``"max_length"`` (released semantics) or ``"longest"`` (padding-invariant models)."""
        return "longest" if self.model.config.padding_invariant else "max_length"

    @property
    def auto_model(self) -> M2BertForTextEncoding:
        """The hazyzoo model (the name sentence-transformers' ``Transformer`` uses)."""
        return self.model

    @property
    def processor(self) -> PreTrainedTokenizerBase:
        """The tokenizer (sentence-transformers >= 5.4 asks input modules for a processor)."""
        return self.tokenizer

    def get_embedding_dimension(self) -> int:
        """Width of ``sentence_embedding`` (``config.hidden_size``)."""
        return int(self.model.config.hidden_size)

    def get_sentence_embedding_dimension(self) -> int:
        """:meth:`get_embedding_dimension` under its sentence-transformers < 6 name."""
        return self.get_embedding_dimension()

    def get_config_dict(self) -> dict[str, Any]:
        """What ``sentence_m2bert_config.json`` holds."""
        return {"max_seq_length": self.max_seq_length}

    def __repr__(self) -> str:
        return (
            f"{MODULE_CLASS_NAME}(max_seq_length={self.max_seq_length}, padding={self.padding!r}, "
            f"embedding_dimension={self.get_embedding_dimension()}, "
            f"model={type(self.model).__name__})"
        )

    # --- inputs ----------------------------------------------------------------------------
    @staticmethod
    def _texts(
        inputs: str | Sequence[str],
        task: str | None = None,
        processing_kwargs: Mapping[str, Any] | None = None,
        **unexpected: Any,
    ) -> list[str]:
        # ``task`` ("query"/"document", from encode_query/encode_document) selects nothing:
        # M2-BERT encodes queries and documents alike (prompts are where they may differ).
        if unexpected:
            raise TypeError(f"{MODULE_CLASS_NAME} got unexpected arguments {sorted(unexpected)}")
        if processing_kwargs:
            raise ValueError(
                f"{MODULE_CLASS_NAME} takes no processing_kwargs (got {dict(processing_kwargs)}): "
                "it always tokenizes as the model requires (see its padding and max_seq_length)"
            )
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ValueError("no texts to tokenize")
        for i, text in enumerate(texts):
            if isinstance(text, (tuple, list)):
                raise ValueError(
                    f"input {i} is a pair ({type(text).__name__}): M2-BERT encodes single texts"
                )
            if not isinstance(text, str):
                raise TypeError(f"input {i} must be a str, got {type(text).__name__}")
        return texts

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        encoded = self.tokenizer(
            texts,
            padding=self.padding,
            truncation=True,
            max_length=self.max_seq_length,
            return_token_type_ids=False,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def preprocess(
        self, inputs: str | Sequence[str], prompt: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` of ``prompt + text`` for each text (the
        sentence-transformers >= 5.4 entry point)."""
        texts = self._texts(inputs, **kwargs)
        if prompt:
            texts = [prompt + text for text in texts]
        return self._tokenize(texts)

    def tokenize(self, texts: str | Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` of each text (the entry point of older
        sentence-transformers, which prepend prompts themselves)."""
        return self._tokenize(self._texts(texts, **kwargs))

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Add ``sentence_embedding [batch, hidden]`` and ``token_embeddings [batch, seq,
        hidden]`` to ``features`` (from ``input_ids``, ``attention_mask`` and, when present,
        ``token_type_ids``)."""
        if kwargs:
            raise TypeError(
                f"{MODULE_CLASS_NAME}.forward got unexpected arguments {sorted(kwargs)}"
            )
        out = self.model(
            input_ids=features["input_ids"],
            attention_mask=features.get("attention_mask"),
            token_type_ids=features.get("token_type_ids"),
            return_dict=True,
        )
        features["token_embeddings"] = out.last_hidden_state
        features["sentence_embedding"] = out.sentence_embedding
        return features

    # --- saving and loading ----------------------------------------------------------------
    def save(
        self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """Write the model (``save_pretrained``: config.json + model.safetensors; transformers 5
        writes safetensors whatever ``safe_serialization`` says), the tokenizer and
        ``sentence_m2bert_config.json`` into ``output_path``. The SentenceTransformer that calls
        this writes modules.json and config_sentence_transformers.json."""
        with _sentence_transformer_saving():
            self.model.save_pretrained(output_path)
        self.tokenizer.save_pretrained(output_path)
        _write_json(Path(output_path) / MODULE_CONFIG_FILE, self.get_config_dict(), indent=4)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        init_defaults: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load the module from a local directory or Hub repository (optionally a
        ``subfolder``): ``M2BertForTextEncoding.from_pretrained`` (with ``model_kwargs`` and
        ``config_kwargs``, e.g. ``{"dtype": torch.bfloat16}``), ``AutoTokenizer`` (with
        ``processor_kwargs``, ``tokenizer_kwargs`` on sentence-transformers 5) and the module's
        settings. Older sentence-transformers call it with the path alone.

        ``trust_remote_code`` is not forwarded: nothing is imported from the checkpoint. Further
        keyword arguments that newer sentence-transformers may pass are ignored.

        Raises:
            ValueError: ``backend`` is not ``"torch"``, the checkpoint is not an M2-BERT text
                encoder, or the module settings hold unknown keys.
            OSError: the directory has no tokenizer.
        """
        from transformers import AutoTokenizer, PreTrainedConfig

        from hazyzoo.modeling.modeling_m2bert import M2BertForTextEncoding
        from hazyzoo.validation import check_model_type

        if backend != "torch":
            raise ValueError(
                f"backend {backend!r} is not supported: {MODULE_CLASS_NAME} runs the PyTorch "
                "model (backend='torch')"
            )
        source = os.fspath(model_name_or_path)
        if subfolder and os.path.isdir(os.path.join(source, subfolder)):
            source, subfolder = os.path.join(source, subfolder), ""
        hub = {
            "subfolder": subfolder,
            "revision": revision,
            "token": token,
            "cache_dir": cache_folder,
            "local_files_only": local_files_only,
        }
        where = os.path.join(source, subfolder, "config.json")
        raw, _ = PreTrainedConfig.get_config_dict(source, **hub)
        check_model_type(raw, _MODEL_TYPE, where)
        _check_architectures(raw.get("architectures"), where)

        model_options = dict(model_kwargs or {})
        if "torch_dtype" in model_options and "dtype" not in model_options:
            model_options["dtype"] = model_options.pop("torch_dtype")
        model = M2BertForTextEncoding.from_pretrained(
            source, **hub, **dict(config_kwargs or {}), **model_options
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, **hub, **{**(tokenizer_kwargs or {}), **(processor_kwargs or {})}
            )
        except (OSError, ValueError, KeyError) as err:
            raise OSError(
                f"could not load a tokenizer from {os.path.join(source, subfolder)}: an M2-BERT "
                "sentence-transformers model keeps its tokenizer files beside config.json "
                "(tokenizer.save_pretrained(DIR); the released models use bert-base-uncased's) "
                f"[{type(err).__name__}: {err}]"
            ) from err

        settings = _read_module_settings(source, hub)
        for key, value in (init_defaults or {}).items():
            settings.setdefault(key, value)
        unknown = sorted(set(settings) - set(_MODULE_SETTINGS))
        if unknown:
            raise ValueError(
                f"{os.path.join(source, subfolder, MODULE_CONFIG_FILE)} has unknown keys "
                f"{unknown}; {MODULE_CLASS_NAME} reads {list(_MODULE_SETTINGS)}"
            )
        return cls(model, tokenizer, **settings)


def _sentence_transformers_base() -> type:
    """The installed sentence-transformers' input-module base class (``torch.nn.Module`` on
    releases before 5.0, which have none)."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{MODULE_CLASS_NAME} needs sentence-transformers: {_INSTALL_HINT}"
        ) from err
    # 5.4+ (and 6.x): base.modules; 5.0-5.3: models. The 6.x alias of ``models`` is not tried
    # first because importing it warns.
    for module_name in ("sentence_transformers.base.modules", "sentence_transformers.models"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        base = getattr(module, "InputModule", None)
        if isinstance(base, type):
            return base
    from torch import nn

    return nn.Module


def _build_encoder_class() -> type:
    base = _sentence_transformers_base()

    def body(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = __name__
        namespace["__qualname__"] = MODULE_CLASS_NAME
        namespace["__doc__"] = _M2BertSentenceEncoderImpl.__doc__

    return types.new_class(MODULE_CLASS_NAME, (_M2BertSentenceEncoderImpl, base), exec_body=body)


def __getattr__(name: str) -> Any:
    # PEP 562: M2BertSentenceEncoder is built when first asked for (sentence-transformers'
    # import of the modules.json type, a pickle, or user code), so that importing this module
    # never imports sentence-transformers.
    if name == MODULE_CLASS_NAME:
        with _CLASS_LOCK:
            cls = globals().get(name)
            if cls is None:
                cls = _build_encoder_class()
                globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), MODULE_CLASS_NAME})


if TYPE_CHECKING:  # for type checkers; at run time the class comes from __getattr__
    M2BertSentenceEncoder = _M2BertSentenceEncoderImpl

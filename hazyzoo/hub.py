"""Model cards and Hub uploads for hazyzoo checkpoints.

Cards are rendered with ``huggingface_hub.ModelCard.from_template`` from the templates in
``hub_cards/`` (YAML metadata + Markdown). A card hazyzoo writes carries :data:`CARD_MARKER`
after its metadata; hazyzoo rewrites such a card (keeping its metadata) but never a README.md
without the marker unless told to. :func:`push_folder_to_hub` uploads a saved checkpoint
directory (config, weights, generation config, card) in one commit.

This module imports nothing else from hazyzoo: it is part of the ``trust_remote_code`` bundle
(:mod:`hazyzoo.remote_code`), which fills :data:`_BUNDLED_CARD_TEMPLATES` with the templates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData
from safetensors import safe_open

# hub_cards/ sits at the repository root (DESIGN.md); a wheel install ships it as data files
# under <prefix>/share/hazyzoo/hub_cards (setup.cfg [options.data_files]).
_CARD_DIRS = (
    Path(__file__).resolve().parent.parent / "hub_cards",
    Path(sys.prefix) / "share" / "hazyzoo" / "hub_cards",
)
# Template name -> text; empty in the package, filled in a remote-code bundle.
_BUNDLED_CARD_TEMPLATES: dict[str, str] = {}

# The first characters of the comment line that marks a card as written by hazyzoo.
CARD_MARKER = "<!-- hazyzoo-card"

# Files AutoTokenizer reads from a directory (fast and slow tokenizers, chat templates).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
)
TOKENIZER_DIRS = ("additional_chat_templates",)


def card_template(name: str) -> Path:
    """Path of the model-card template ``name`` (a checkout, then an installed copy)."""
    for folder in _CARD_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"model-card template {name!r} not found in {[str(d) for d in _CARD_DIRS]}"
    )


def card_template_text(name: str) -> str:
    """Text of the model-card template ``name``: the bundled copy in remote code, else the file."""
    if name in _BUNDLED_CARD_TEMPLATES:
        return _BUNDLED_CARD_TEMPLATES[name]
    return card_template(name).read_text(encoding="utf-8")


# model_type -> template file, pipeline tag, tags, license of the architecture's reference code,
# and the tokenizer of the released models (with its vocabulary size: a smaller model cannot
# use it).
CARD_SETTINGS: dict[str, dict[str, Any]] = {
    "hazyzoo_based": {
        "template": "based.md",
        "pipeline_tag": "text-generation",
        "tags": ["hazyzoo", "based", "linear-attention", "sliding-window-attention", "recurrent"],
        "license": "apache-2.0",
        "tokenizer": "gpt2",
        "tokenizer_vocab_size": 50257,
    },
    "hazyzoo_jrt": {
        "template": "jrt.md",
        "pipeline_tag": "text-generation",
        "tags": ["hazyzoo", "jrt", "prefix-linear-attention", "linear-attention", "recurrent"],
        "license": "apache-2.0",
        "tokenizer": "gpt2",
        "tokenizer_vocab_size": 50257,
    },
    "hazyzoo_m2bert": {
        "template": "m2bert.md",
        "pipeline_tag": "feature-extraction",
        "pipeline_tags": {"M2BertForMaskedLM": "fill-mask"},
        "tags": [
            "hazyzoo",
            "m2-bert",
            "monarch-mixer",
            "long-context",
            "retrieval",
            "sentence-similarity",
        ],
        "license": "apache-2.0",
        "tokenizer": "bert-base-uncased",
        "tokenizer_vocab_size": 30522,
    },
    "hazyzoo_mad": {
        "template": "mad.md",
        "pipeline_tag": "text-generation",
        "pipeline_tags": {"MadAutoEncoder": "feature-extraction"},
        "tags": ["hazyzoo", "mad", "hybrid", "hyena", "mamba", "synthetic-tasks"],
        "license": "mit",  # athms/mad-lab
    },
    "hazyzoo_vqvae": {
        "template": "vqvae.md",
        "pipeline_tag": "image-to-image",
        "tags": ["hazyzoo", "vq-vae", "vector-quantization", "rotation-trick", "autoencoder"],
        "license": "mit",
    },
    "hazyzoo_prospector": {
        "template": "prospector.md",
        "pipeline_tag": "other",  # per-token attribution maps: no Hub task fits
        "tags": ["hazyzoo", "prospector-heads", "feature-attribution", "interpretability"],
        "license": "apache-2.0",
    },
    "hazyzoo_rtf": {
        "template": "rtf.md",
        "pipeline_tag": "text-generation",
        # heads whose task differs from the model type's default
        "pipeline_tags": {"RtfForSequenceClassification": "text-classification"},
        "tags": ["hazyzoo", "rtf", "state-space-model", "transfer-function", "recurrent"],
        "license": "apache-2.0",
        "tokenizer": "gpt2",
        "tokenizer_vocab_size": 50257,
    },
}


def head_class(config: dict[str, Any]) -> str | None:
    """The head class a checkpoint was saved from (``architectures[0]`` of its config)."""
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else None


def released_tokenizer(config: dict[str, Any]) -> str | None:
    """The tokenizer of the released models of this architecture, if it fits ``config``'s
    vocabulary (a tiny test model cannot use GPT-2's 50257 tokens)."""
    settings = CARD_SETTINGS.get(config.get("model_type"), {})
    if settings.get("tokenizer") and config.get("vocab_size", 0) >= settings.get(
        "tokenizer_vocab_size", 0
    ):
        return settings["tokenizer"]
    return None


def has_tokenizer(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds tokenizer files ``AutoTokenizer`` can start from."""
    model_dir = Path(model_dir)
    return any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def is_hazyzoo_card(path: str | Path) -> bool:
    """Whether the README.md at ``path`` was written by hazyzoo (it carries the marker)."""
    try:
        return CARD_MARKER in Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def read_card_metadata(path: str | Path) -> dict[str, Any]:
    """The YAML metadata of the card at ``path`` as a dict (empty when it has none)."""
    try:
        card = ModelCard.load(Path(path))
    except Exception as err:  # YAML and metadata errors come in several types
        raise ValueError(f"{path}: cannot read its card metadata: {err}") from err
    return card.data.to_dict()


def count_checkpoint_parameters(model_dir: str | Path) -> int:
    """Number of stored parameters in the safetensors files of ``model_dir`` (tied ones once)."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    numel = 1
                    for dim in f.get_slice(key).get_shape():
                        numel *= dim
                    total += numel
        except Exception as err:  # safetensors raises its own error type for corrupt files
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    return total


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def build_model_card(
    config: dict[str, Any],
    num_parameters: int,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    language: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    tokenizer_in_repo: bool = False,
) -> ModelCard:
    """Render the card of a checkpoint whose ``config.json`` is ``config``.

    ``metadata`` is the metadata of an earlier card to keep; the keyword arguments given here
    override it (``tags`` are added to it). The license defaults to the architecture's. The
    usage snippet loads with ``trust_remote_code=True`` when the config has an ``auto_map``.
    """
    model_type = config.get("model_type")
    if model_type not in CARD_SETTINGS:
        raise ValueError(
            f"no model-card template for model_type {model_type!r}; known: {sorted(CARD_SETTINGS)}"
        )
    settings = CARD_SETTINGS[model_type]
    head = head_class(config)
    meta: dict[str, Any] = {
        "library_name": "hazyzoo",
        "pipeline_tag": settings.get("pipeline_tags", {}).get(head, settings["pipeline_tag"]),
        "license": settings["license"],
        **(metadata or {}),
    }
    for key, value in (
        ("base_model", base_model),
        ("license", license),
        ("datasets", datasets),
        ("language", language),
    ):
        if value:
            meta[key] = value
    meta["tags"] = _unique([*settings["tags"], *(meta.get("tags") or []), *(tags or [])])
    meta = {k: v for k, v in meta.items() if v is not None}
    base = meta.get("base_model")
    if isinstance(base, list):
        base = base[0] if len(base) == 1 else None
    skip = {
        "architectures",
        "transformers_version",
        "dtype",
        "torch_dtype",
        "model_type",
        "auto_map",
    }
    architecture = [(k, json.dumps(v)) for k, v in sorted(config.items()) if k not in skip]
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type} model")
    return ModelCard.from_template(
        ModelCardData(**meta),
        template_str=card_template_text(settings["template"]),
        model_name=name,
        repo_id=repo_id or "path/to/checkpoint",
        base_model=base,
        license=meta.get("license"),
        num_parameters=_human(num_parameters),
        architecture=architecture,
        tokenizer=released_tokenizer(config),
        tokenizer_in_repo=tokenizer_in_repo,
        remote_code=bool(config.get("auto_map")),
        head_class=head,
        config=config,
    )


def write_model_card(
    model_dir: str | Path,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    language: list[str] | None = None,
    overwrite: bool = True,
    replace_handwritten: bool = False,
) -> Path:
    """Write ``README.md`` (the model card) into the checkpoint directory ``model_dir``.

    With ``overwrite=False`` an existing README.md is left as it is. Otherwise a card hazyzoo
    wrote is rendered again, keeping its metadata (base_model, tags, license and any other
    field) except where an argument here says otherwise; a README.md hazyzoo did not write
    raises ``FileExistsError`` unless ``replace_handwritten=True``.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: MODEL_DIR must be a saved checkpoint")
    target = model_dir / "README.md"
    metadata: dict[str, Any] = {}
    if target.exists():
        if not overwrite:
            return target
        if is_hazyzoo_card(target):
            metadata = read_card_metadata(target)
        elif not replace_handwritten:
            raise FileExistsError(
                f"{target} was not written by hazyzoo (it has no '{CARD_MARKER}' line); "
                "refusing to replace it (use --overwrite to replace it)"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object")
    if config.get("model_type") not in CARD_SETTINGS:
        raise ValueError(
            f"{config_path}: no model-card template for model_type {config.get('model_type')!r}; "
            f"known: {sorted(CARD_SETTINGS)}"
        )
    card = build_model_card(
        config,
        count_checkpoint_parameters(model_dir),
        repo_id=repo_id,
        base_model=base_model,
        tags=tags,
        license=license,
        datasets=datasets,
        language=language,
        metadata=metadata,
        tokenizer_in_repo=has_tokenizer(model_dir),
    )
    card.save(str(target))
    return target


def update_model_card(model_dir: str | Path, **kwargs: Any) -> Path | None:
    """Write the card of ``model_dir`` when it has none, render it again when hazyzoo wrote it,
    and leave a hand-written README.md alone (returns ``None`` then). What ``save_pretrained``
    wants: the card follows the checkpoint, a user's card is never touched. ``kwargs`` go to
    :func:`write_model_card`."""
    readme = Path(model_dir) / "README.md"
    if readme.exists() and not is_hazyzoo_card(readme):
        return None
    return write_model_card(model_dir, **kwargs)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"nothing to upload in {folder}")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in files
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or "Upload hazyzoo model",
        revision=revision,
        create_pr=create_pr,
    )

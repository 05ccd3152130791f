"""Model cards and Hub uploads for hazyzoo checkpoints.

Cards are rendered with ``huggingface_hub.ModelCard.from_template`` from the templates in
``hub_cards/`` (YAML metadata + Markdown). :func:`push_folder_to_hub` uploads a saved
checkpoint directory (config, weights, generation config, card) in one commit.
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


def card_template(name: str) -> Path:
    """Path of the model-card template ``name`` (a checkout, then an installed copy)."""
    for folder in _CARD_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"model-card template {name!r} not found in {[str(d) for d in _CARD_DIRS]}"
    )


# model_type -> (template file, pipeline tag, tags, tokenizer of the released models)
CARD_SETTINGS: dict[str, dict[str, Any]] = {
    "hazyzoo_based": {
        "template": "based.md",
        "pipeline_tag": "text-generation",
        "tags": ["hazyzoo", "based", "linear-attention", "sliding-window-attention", "recurrent"],
        "tokenizer": "gpt2",
    },
}


def count_checkpoint_parameters(model_dir: str | Path) -> int:
    """Number of stored parameters in the safetensors files of ``model_dir`` (tied ones once)."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                numel = 1
                for dim in f.get_slice(key).get_shape():
                    numel *= dim
                total += numel
    return total


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def build_model_card(
    config: dict[str, Any],
    num_parameters: int,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Render the card of a checkpoint whose ``config.json`` is ``config``."""
    model_type = config.get("model_type")
    if model_type not in CARD_SETTINGS:
        raise ValueError(
            f"no model-card template for model_type {model_type!r}; known: {sorted(CARD_SETTINGS)}"
        )
    settings = CARD_SETTINGS[model_type]
    all_tags = list(settings["tags"]) + [t for t in (tags or []) if t not in settings["tags"]]
    data = ModelCardData(
        library_name="hazyzoo",
        pipeline_tag=settings["pipeline_tag"],
        tags=all_tags,
        base_model=base_model,
    )
    skip = {"architectures", "transformers_version", "dtype", "torch_dtype", "model_type"}
    architecture = [(k, json.dumps(v)) for k, v in sorted(config.items()) if k not in skip]
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type} model")
    return ModelCard.from_template(
        data,
        template_path=str(card_template(settings["template"])),
        model_name=name,
        repo_id=repo_id or "path/to/checkpoint",
        base_model=base_model,
        num_parameters=_human(num_parameters),
        architecture=architecture,
        tokenizer=settings.get("tokenizer"),
    )


def write_model_card(
    model_dir: str | Path,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``README.md`` (the model card) into the checkpoint directory ``model_dir``."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: MODEL_DIR must be a saved checkpoint")
    target = model_dir / "README.md"
    if target.exists() and not overwrite:
        return target
    config = json.loads(config_path.read_text())
    card = build_model_card(
        config,
        count_checkpoint_parameters(model_dir),
        repo_id=repo_id,
        base_model=base_model,
        tags=tags,
    )
    card.save(str(target))
    return target


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

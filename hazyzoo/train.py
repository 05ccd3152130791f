"""Fine-tune a zoo LM (or any transformers causal LM) with ``transformers.Trainer``.

Three ways to run the same code::

    python -m hazyzoo.train --model tiny:hazyzoo_based --tokenizer TOK --dataset data.jsonl \\
        --prompt-column prompt --response-column response --max-length 128 --max-steps 200
    hazyzoo train ...                                   # the same flags
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m hazyzoo.train ...

Under ``accelerate launch`` the Trainer runs data-parallel (DDP) across the launched processes;
FSDP and DeepSpeed are accelerate's business (``accelerate launch --config_file ...``), and the
TrainingArguments ``--fsdp``, ``--fsdp-config`` and ``--deepspeed`` pass through untouched, as
does any other TrainingArguments field via ``--training-arg KEY=VALUE``. On GPUs drop
``ACCELERATE_USE_CPU``; on CPU note that ``accelerate launch --cpu --num_processes 2`` silently
runs one process.

**Model** (``--model``): a checkpoint directory or Hub id (``AutoModelForCausalLM``; hazyzoo is
imported first, so zoo checkpoints load), ``tiny:<model_type>`` (a freshly initialised model
from the zoo config's ``tiny()``, e.g. ``tiny:hazyzoo_based``) or ``config:<config.json>`` (a fresh
model from a config file or directory). ``--model-arg KEY=VALUE`` overrides config fields of a
fresh model. The tokenizer (``--tokenizer``, default the model directory) must not make ids the
model's embedding lacks.

**Data** (``--dataset``): a zoo builder name (``hazyzoo.datasets_scripts.load``, with
``--dataset-config`` and ``--dataset-arg KEY=VALUE``, values parsed as JSON when they parse), a
local ``.json``/``.jsonl``/``.csv``/``.parquet``/``.txt`` file, a directory written by
``save_to_disk`` (or holding data files), or a Hub data set id. Columns:

* ``--text-column``: causal-LM loss on every token of the text (eos appended);
* ``--prompt-column`` + ``--response-column``: loss only on the response tokens (prompt and
  padding labels are -100); the prompt is tokenized with the tokenizer's special tokens, the
  response without them and followed by eos; the two id lists are concatenated as they are (put
  any separator or chat template into the prompt text);
* pre-tokenized ``input_ids`` (+ ``labels``, default a copy of ``input_ids``; + optional
  ``attention_mask``) columns are used as they are.

With ``--max-length`` longer examples are cut at the end to that many tokens; how many examples
and tokens were cut is printed and written to ``train_results.json`` (never silent), and
examples left with no token to predict (e.g. a prompt that fills ``--max-length``) are dropped
and counted. Batches are padded on the right to their longest example.

**Logs**: Trainer's progress bar and its log lines (``loss``, ``grad_norm``, ``learning_rate``,
``epoch``) plus, from :class:`TokenThroughputCallback`, ``tokens_seen`` (non-padding input tokens
of every training forward pass, summed over all processes, continued across ``--resume``) and
``train_tokens_per_second`` (tokens seen in this run over the wall-clock seconds since this
run's training began). The GPU memory peak is not logged per step: it is in
``train_results.json`` (``peak_memory_gib``, see Outputs) and the final summary line.

**Outputs** in ``--output-dir``: ``checkpoint-<step>/`` every ``--save-steps`` (``0``: none), the
final model (``save_pretrained``) and tokenizer, ``trainer_state.json`` (with ``log_history``)
and ``train_results.json``. The latter records ``peak_memory_gib``: the largest
``torch.cuda.max_memory_allocated()`` of any process, in GiB (gathered with an ``all_reduce``
MAX when distributed), from the process's start to the end of training (checkpoint saves and
evaluation included, the final save not); ``None`` when training ran on the CPU. With
``--lora`` the final save is the adapter only (``adapter_config.json``,
``adapter_model.safetensors``); reload it with::

    base = AutoModelForCausalLM.from_pretrained(BASE)     # the model it was trained on
    model = peft.PeftModel.from_pretrained(base, OUTPUT_DIR)

A base built fresh (``tiny:``/``config:``) exists nowhere else, so it is saved to
``OUTPUT_DIR/base_model`` and named as the adapter's ``base_model_name_or_path``.

**Python API**: :func:`train` takes a :class:`TrainConfig` and returns a dict (the JSON-able
results of ``train_results.json`` plus the trained ``model``, ``tokenizer`` and the Trainer's
``log_history``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

__all__ = [
    "ACCELERATE_CONFIGS",
    "IGNORE_INDEX",
    "CausalLMCollator",
    "TokenThroughputCallback",
    "TrainConfig",
    "accelerate_config",
    "add_arguments",
    "build_model",
    "load_tokenizer",
    "main",
    "parse_key_values",
    "peak_memory_gib",
    "prepare_dataset",
    "run_from_args",
    "tokenize_batch",
    "train",
]

IGNORE_INDEX = -100
ACCELERATE_CONFIGS = ("ddp", "fsdp")
"""The accelerate config files shipped in ``hazyzoo/accelerate_configs/`` (see
:func:`accelerate_config`)."""
RESULTS_JSON = "train_results.json"
BASE_MODEL_DIR = "base_model"
_DATA_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}
_PRETOKENIZED = "input_ids"


def accelerate_config(name: str) -> str:
    """The path of a shipped ``accelerate launch --config_file``: ``"ddp"`` (data parallel on
    the GPUs of one machine, bf16) or ``"fsdp"`` (full shard, bf16 mixed precision, each zoo
    ``DecoderLayer`` an FSDP unit, full state dicts so the saved model loads anywhere). Both
    default to 2 processes; ``accelerate launch --num_processes N`` overrides it."""
    if name not in ACCELERATE_CONFIGS:
        raise ValueError(f"unknown accelerate config {name!r}; choose from {ACCELERATE_CONFIGS}")
    path = Path(__file__).resolve().parent / "accelerate_configs" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from this installation (is accelerate_configs/*.yaml in "
            "setup.cfg [options.package_data]?)"
        )
    return str(path)


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Everything :func:`train` needs; the CLI flags map one to one (``--max-steps`` ->
    ``max_steps``). Defaults follow ``TrainingArguments`` where it has the field."""

    model: str
    dataset: str
    output_dir: str = "train_output"
    tokenizer: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    # data
    dataset_config: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str | None = None
    text_column: str | None = None
    prompt_column: str | None = None
    response_column: str | None = None
    max_length: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    cache_dir: str | None = None
    # training
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = None
    eval_steps: int | None = None
    seed: int = 42
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    resume: str | None = None
    overwrite_output_dir: bool = False
    use_cpu: bool | None = None
    disable_tqdm: bool = False
    report_to: str = "none"
    dataloader_num_workers: int = 0
    fsdp: str | None = None
    fsdp_config: str | None = None
    deepspeed: str | None = None
    training_args: dict[str, Any] = field(default_factory=dict)
    # peft
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""
        if not self.model:
            raise ValueError("model must name a checkpoint, tiny:<model_type> or config:<path>")
        if not self.dataset:
            raise ValueError("dataset must name a zoo builder, a local file/directory or a Hub id")
        positive = (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "lora_r",
            "lora_alpha",
        )
        for name in positive:
            _check_int(self, name, minimum=1)
        for name in ("max_length", "max_train_examples", "max_eval_examples", "eval_steps"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        if self.per_device_eval_batch_size is not None:
            _check_int(self, "per_device_eval_batch_size", minimum=1)
        if self.save_total_limit is not None:
            _check_int(self, "save_total_limit", minimum=1)
        for name in ("save_steps", "warmup_steps", "dataloader_num_workers", "seed"):
            _check_int(self, name, minimum=0)
        _check_int(self, "max_steps", minimum=-1)
        if self.max_steps == 0:
            raise ValueError("max_steps must be >= 1 (or -1 to train for num_train_epochs)")
        if self.max_steps < 0 and not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are exclusive: pick one")
        if (self.prompt_column is None) != (self.response_column is None):
            raise ValueError(
                "prompt_column and response_column go together (loss on the response only); "
                "use text_column alone to train on the whole text"
            )
        if self.text_column is not None and self.prompt_column is not None:
            raise ValueError("text_column excludes prompt_column/response_column: pick one mode")
        if self.eval_steps is not None and self.eval_split is None:
            raise ValueError("eval_steps needs eval_split (the split to evaluate on)")
        for name in ("model_args", "dataset_args", "training_args"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if self.dataset_args and not _is_zoo_dataset(self.dataset):
            raise ValueError(
                f"--dataset-arg {self.dataset_args}: overrides of a zoo builder's config, but "
                f"--dataset "
                f"{self.dataset!r} is not a zoo builder"
            )


def _check_int(config: TrainConfig, name: str, *, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def parse_key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``: values parsed as JSON when they parse
    (numbers, true/false/null, lists, quoted strings), kept as strings otherwise."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isidentifier():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE with KEY a field name")
        if key in out:
            raise ValueError(f"{flag} {key!r} given twice")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


# --------------------------------------------------------------------------------------------
# model and tokenizer


def build_model(spec: str, model_args: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """The model ``spec`` names and whether it was built fresh (``tiny:``/``config:``).

    ``tiny:<model_type>``: the zoo causal LM with its config's ``tiny(**model_args)``;
    ``config:<path>``: ``AutoModelForCausalLM.from_config`` of that config.json (or directory);
    anything else: ``AutoModelForCausalLM.from_pretrained(spec)``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    import hazyzoo

    model_args = dict(model_args or {})
    if spec.startswith("tiny:"):
        model_type = spec[len("tiny:") :]
        if model_type not in hazyzoo.CAUSAL_LM_REGISTRY:
            raise ValueError(
                f"--model {spec}: unknown zoo causal LM {model_type!r}; valid: "
                f"{', '.join('tiny:' + t for t in sorted(hazyzoo.CAUSAL_LM_REGISTRY))}"
            )
        cls = hazyzoo.CAUSAL_LM_REGISTRY[model_type]
        return cls(cls.config_class.tiny(**model_args)), True
    if spec.startswith("config:"):
        path = Path(spec[len("config:") :])
        if not path.exists():
            raise FileNotFoundError(f"--model {spec}: {path} does not exist")
        if path.is_file():
            config_dict = json.loads(path.read_text())
            model_type = config_dict.pop("model_type", None)
            if model_type is None:
                raise ValueError(f"--model {spec}: {path} has no model_type")
            config = AutoConfig.for_model(model_type, **{**config_dict, **model_args})
        else:
            config = AutoConfig.from_pretrained(path, **model_args)
        return AutoModelForCausalLM.from_config(config), True
    if model_args:
        raise ValueError(
            f"--model-arg {sorted(model_args)}: only for a fresh model (tiny:/config:), not for "
            f"the checkpoint {spec}"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(spec), False
    except (OSError, ValueError) as err:
        raise OSError(f"--model {spec}: cannot load a causal LM: {err}") from err


def load_tokenizer(spec: str | None, model_spec: str, vocab_size: int) -> Any | None:
    """``AutoTokenizer.from_pretrained`` of ``spec`` (default: the model directory/id; None for
    a fresh model without ``--tokenizer``); raises ``ValueError`` naming both sizes when the
    tokenizer has more tokens than the model's embedding."""
    from transformers import AutoTokenizer

    if spec is None:
        if model_spec.startswith(("tiny:", "config:")):
            return None
        spec = model_spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise OSError(f"--tokenizer {spec}: cannot load a tokenizer: {err}") from err
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"--tokenizer {spec} has {len(tokenizer)} tokens but the model's embedding has "
            f"{vocab_size} rows: ids >= {vocab_size} would index past it (use a model with "
            f"vocab_size >= {len(tokenizer)}, e.g. --model-arg vocab_size={len(tokenizer)})"
        )
    return tokenizer


def _embedding_size(model: Any) -> int:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "num_embeddings"):
        return int(emb.num_embeddings)
    return int(model.config.vocab_size)


# --------------------------------------------------------------------------------------------
# data


def _is_zoo_dataset(name: str) -> bool:
    from hazyzoo.datasets_scripts import BUILDERS

    return name in BUILDERS


def load_raw_dataset(config: TrainConfig) -> Any:
    """The ``DatasetDict`` (or ``Dataset``) ``config.dataset`` names, before tokenization."""
    import datasets

    from hazyzoo import datasets_scripts

    name = config.dataset
    if name in datasets_scripts.BUILDERS:
        config_cls = datasets_scripts.BUILDERS[name].BUILDER_CONFIG_CLASS
        fields = {f.name for f in dataclasses.fields(config_cls)} - {"name", "version"}
        unknown = sorted(set(config.dataset_args) - fields)
        if unknown:
            raise ValueError(
                f"--dataset-arg {', '.join(unknown)}: not a field of {config_cls.__name__} "
                f"(data set {name!r}); valid: {', '.join(sorted(fields))}"
            )
        try:
            return datasets_scripts.load(
                name, config.dataset_config, cache_dir=config.cache_dir, **config.dataset_args
            )
        except (ValueError, TypeError) as err:
            detail = f" (--dataset-arg {config.dataset_args})" if config.dataset_args else ""
            raise ValueError(f"--dataset {name}{detail}: {err}") from err
    path = Path(name)
    if path.is_file():
        builder = _DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"--dataset {name}: unknown file type {path.suffix!r}; "
                f"valid: {', '.join(sorted(_DATA_FILE_BUILDERS))}"
            )
        return datasets.load_dataset(builder, data_files=str(path), cache_dir=config.cache_dir)
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json")):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path), config.dataset_config, cache_dir=config.cache_dir)
    if path.suffix.lower() in _DATA_FILE_BUILDERS or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--dataset {name}: no such file or directory")
    try:
        return datasets.load_dataset(name, config.dataset_config, cache_dir=config.cache_dir)
    except Exception as err:  # the Hub's errors are many (offline, not found, gated, ...)
        raise ValueError(
            f"--dataset {name}: not a zoo builder ({', '.join(sorted(datasets_scripts.BUILDERS))}),"
            f" not a local file or directory, and the Hub lookup failed: "
            f"{type(err).__name__}: {err}"
        ) from err


def _split(raw: Any, split: str, what: str) -> Any:
    import datasets

    if isinstance(raw, datasets.Dataset):
        if split != "train":
            raise ValueError(f"{what} {split!r}: the data set has one unnamed split (use 'train')")
        return raw
    if split not in raw:
        raise ValueError(f"{what} {split!r} not in the data set; splits: {sorted(raw)}")
    return raw[split]


def _resolve_mode(config: TrainConfig, columns: Sequence[str]) -> str:
    """``text``, ``prompt_response`` or ``pretokenized``; checks that the columns exist."""
    columns = list(columns)
    wanted = [c for c in (config.text_column, config.prompt_column, config.response_column) if c]
    for column in wanted:
        if column not in columns:
            flag = next(
                f"--{n.replace('_', '-')}"
                for n in ("text_column", "prompt_column", "response_column")
                if getattr(config, n) == column
            )
            raise ValueError(
                f"{flag} {column!r} is not a column of the data set; columns: {columns}"
            )
    if config.text_column:
        return "text"
    if config.prompt_column:
        return "prompt_response"
    if _PRETOKENIZED in columns:
        return "pretokenized"
    raise ValueError(
        f"name the data's columns: --text-column, or --prompt-column and --response-column "
        f"(or give pre-tokenized input_ids); columns: {columns}"
    )


def tokenize_batch(
    batch: dict[str, list],
    tokenizer: Any | None,
    *,
    mode: str,
    text_column: str | None = None,
    prompt_column: str | None = None,
    response_column: str | None = None,
    max_length: int | None = None,
    vocab_size: int | None = None,
) -> dict[str, list]:
    """Tokenize a batch of examples (``datasets.map(batched=True)`` layout).

    Returns ``input_ids``, ``labels`` (``-100`` on prompt tokens in ``prompt_response`` mode),
    ``num_tokens`` (the length before truncation) and ``num_targets`` (label tokens a causal LM
    predicts after the internal shift: labels != -100 at positions >= 1). Sequences are cut at
    ``max_length`` tokens; nothing is padded here (:class:`CausalLMCollator` pads).
    """
    if mode == "pretokenized":
        ids_list = [list(map(int, ids)) for ids in batch[_PRETOKENIZED]]
        if "labels" in batch:
            labels_list = [list(map(int, lab)) for lab in batch["labels"]]
        else:
            labels_list = [list(ids) for ids in ids_list]
        for i, (ids, lab) in enumerate(zip(ids_list, labels_list)):
            if len(ids) != len(lab):
                raise ValueError(
                    f"example {i} of a batch: labels has {len(lab)} entries but input_ids has "
                    f"{len(ids)}"
                )
        if "attention_mask" in batch:
            for i, mask in enumerate(batch["attention_mask"]):
                if any(m != 1 for m in mask):
                    raise ValueError(
                        f"example {i} of a batch: pre-tokenized attention_mask has zeros; give "
                        "unpadded input_ids (batches are padded when collated)"
                    )
    else:
        if tokenizer is None:
            raise ValueError(
                "this data set has text columns: pass --tokenizer (a fresh tiny:/config: model "
                "has no tokenizer of its own)"
            )
        eos = tokenizer.eos_token_id
        if mode == "text":
            texts = _strings(batch[text_column], text_column)
            ids_list = [list(ids) for ids in tokenizer(texts)["input_ids"]]
            if eos is not None:
                ids_list = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in ids_list]
            labels_list = [list(ids) for ids in ids_list]
        elif mode == "prompt_response":
            prompts = _strings(batch[prompt_column], prompt_column)
            responses = _strings(batch[response_column], response_column)
            prompt_ids = tokenizer(prompts)["input_ids"]
            response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
            ids_list, labels_list = [], []
            for p, r in zip(prompt_ids, response_ids):
                r = [*r, eos] if eos is not None else list(r)
                ids_list.append([*p, *r])
                labels_list.append([IGNORE_INDEX] * len(p) + r)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    num_tokens = [len(ids) for ids in ids_list]
    if max_length is not None:
        ids_list = [ids[:max_length] for ids in ids_list]
        labels_list = [lab[:max_length] for lab in labels_list]
    if vocab_size is not None:
        for i, (ids, lab) in enumerate(zip(ids_list, labels_list)):
            bad = [t for t in ids if not 0 <= t < vocab_size]
            bad += [t for t in lab if t != IGNORE_INDEX and not 0 <= t < vocab_size]
            if bad:
                raise ValueError(
                    f"example {i} of a batch has token id {bad[0]}, outside the model's "
                    f"vocabulary [0, {vocab_size})"
                )
    num_targets = [sum(t != IGNORE_INDEX for t in lab[1:]) for lab in labels_list]
    return {
        "input_ids": ids_list,
        "labels": labels_list,
        "num_tokens": num_tokens,
        "num_targets": num_targets,
    }


def _strings(values: list, column: str) -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(
                f"column {column!r} must hold strings, got {type(value).__name__} ({value!r:.60})"
                f" in example {i} of a batch"
            )
    return values


def prepare_dataset(
    dataset: Any,
    tokenizer: Any | None,
    config: TrainConfig,
    *,
    vocab_size: int,
    limit: int | None = None,
    split: str = "train",
) -> tuple[Any, dict[str, Any]]:
    """Tokenize one split; returns the ``input_ids``/``labels`` data set and a report
    (examples, truncated examples and tokens, dropped examples, longest example)."""
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    mode = _resolve_mode(config, dataset.column_names)
    kwargs = dict(
        mode=mode,
        text_column=config.text_column,
        prompt_column=config.prompt_column,
        response_column=config.response_column,
        max_length=config.max_length,
        vocab_size=vocab_size,
    )
    tokenized = dataset.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, **kwargs},
        remove_columns=dataset.column_names,
        desc=f"tokenize {split}",
    )
    lengths = tokenized["num_tokens"]
    targets = tokenized["num_targets"]
    limit_len = config.max_length
    report: dict[str, Any] = {
        "split": split,
        "mode": mode,
        "examples": len(lengths),
        "max_length": limit_len,
        "longest_example_tokens": max(lengths, default=0),
        "truncated_examples": 0,
        "truncated_tokens": 0,
    }
    if limit_len is not None:
        over = [n - limit_len for n in lengths if n > limit_len]
        report["truncated_examples"] = len(over)
        report["truncated_tokens"] = int(sum(over))
    keep = [i for i, t in enumerate(targets) if t > 0]
    report["dropped_examples_without_targets"] = len(lengths) - len(keep)
    if len(keep) < len(lengths):
        tokenized = tokenized.select(keep)
    report["kept_examples"] = len(keep)
    report["kept_tokens"] = int(sum(min(n, limit_len or n) for n in (lengths[i] for i in keep)))
    tokenized = tokenized.remove_columns(["num_tokens", "num_targets"])
    if len(tokenized) == 0:
        raise ValueError(
            f"split {split!r}: no example has a token to predict "
            f"({report['dropped_examples_without_targets']} dropped"
            + (f"; --max-length {limit_len} may cut every response" if limit_len else "")
            + ")"
        )
    return tokenized, report


def format_data_report(report: dict[str, Any]) -> str:
    """One line for the log: how many examples, what truncation cut, what was dropped."""
    text = f"{report['split']} split: {report['examples']} examples ({report['mode']})"
    if report["max_length"] is None:
        text += f", longest {report['longest_example_tokens']} tokens, no --max-length"
    elif report["truncated_examples"]:
        text += (
            f"; TRUNCATED {report['truncated_examples']} examples to --max-length "
            f"{report['max_length']} ({report['truncated_tokens']} tokens cut, longest was "
            f"{report['longest_example_tokens']})"
        )
    else:
        text += f"; none longer than --max-length {report['max_length']}"
    if report["dropped_examples_without_targets"]:
        text += f"; DROPPED {report['dropped_examples_without_targets']} with no token to predict"
    return text


class CausalLMCollator:
    """Pads a list of ``{"input_ids", "labels"}`` examples on the right to the longest one:
    ``input_ids`` with ``pad_token_id``, ``labels`` with -100, and an ``attention_mask`` of 1 on
    real tokens and 0 on padding."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        batch = len(examples)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            n = ids.numel()
            input_ids[row, :n] = ids
            labels[row, :n] = torch.as_tensor(example.get("labels", ids), dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


# --------------------------------------------------------------------------------------------
# throughput


class TokenThroughputCallback(TrainerCallback):
    """Adds ``tokens_seen`` and ``train_tokens_per_second`` to every log event.

    How it counts: a forward pre-hook on the model (registered at ``on_train_begin``) adds the
    number of non-padding input tokens (``attention_mask.sum()``, or every ``input_ids`` entry
    when there is no mask) of each forward pass made in training mode, so every micro-batch of
    gradient accumulation counts once and evaluation does not count. At each log event the
    processes' counts since the previous event are summed with ``torch.distributed.all_reduce``
    (Trainer logs on every process at the same steps), so ``tokens_seen`` is the global total;
    on ``--resume`` it continues from the last value in the checkpoint's ``log_history``.
    ``train_tokens_per_second`` is the tokens seen in this run divided by the wall-clock seconds
    since this run's ``on_train_begin``.
    """

    def __init__(self) -> None:
        self.tokens_seen = 0
        self._local = 0
        self._local_reported = 0
        self._session_tokens = 0
        self._start = None
        self._handle = None

    def _count(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(mask, torch.Tensor):
            self._local += int(mask.sum().item())
        elif isinstance(ids, torch.Tensor):
            self._local += ids.numel()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._start = time.perf_counter()
        self._session_tokens = 0
        for entry in reversed(state.log_history):
            if "tokens_seen" in entry:
                self.tokens_seen = int(entry["tokens_seen"])
                break
        if model is not None and self._handle is None:
            self._handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._start is None or logs is None:
            return
        delta = torch.tensor(self._local - self._local_reported, dtype=torch.long)
        self._local_reported = self._local
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = args.device if torch.distributed.get_backend() == "nccl" else "cpu"
            delta = delta.to(device)
            torch.distributed.all_reduce(delta)
        self._session_tokens += int(delta.item())
        self.tokens_seen += int(delta.item())
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        extra = {
            "tokens_seen": self.tokens_seen,
            "train_tokens_per_second": round(self._session_tokens / elapsed, 2),
        }
        logs.update(extra)
        if state.log_history:  # Trainer appended a copy of logs before calling on_log
            state.log_history[-1].update(extra)


def peak_memory_gib(device: torch.device | str) -> float | None:
    """``torch.cuda.max_memory_allocated(device)`` in GiB, the max over all processes when
    ``torch.distributed`` is initialized (a collective: every rank must call it); ``None`` when
    ``device`` is not a CUDA device (then no collective runs, as every rank is on the CPU)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    peak = torch.tensor(
        float(torch.cuda.max_memory_allocated(device)), dtype=torch.float64, device=device
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    return round(peak.item() / 2**30, 3)


# --------------------------------------------------------------------------------------------
# training


def _training_arguments(config: TrainConfig, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    use_cpu = config.use_cpu if config.use_cpu is not None else not torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size
        or config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps > 0 else "no",
        save_steps=config.save_steps if config.save_steps > 0 else 500,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        bf16=config.bf16,
        fp16=config.fp16,
        use_cpu=use_cpu,
        disable_tqdm=config.disable_tqdm,
        report_to=config.report_to,
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,
    )
    if has_eval and config.eval_steps is not None:
        kwargs.update(eval_strategy="steps", eval_steps=config.eval_steps)
    valid = {f.name for f in dataclasses.fields(TrainingArguments)}
    if config.gradient_checkpointing:
        # transformers 5.24 renamed gradient_checkpointing -> activation_checkpointing (the old
        # name warns); 5.17 has only the old one.
        prefix = "activation" if "activation_checkpointing" in valid else "gradient"
        kwargs[f"{prefix}_checkpointing"] = True
        kwargs[f"{prefix}_checkpointing_kwargs"] = {"use_reentrant": False}
    for name in ("fsdp", "fsdp_config", "deepspeed"):
        if getattr(config, name) is not None:
            kwargs[name] = getattr(config, name)
    for key, value in config.training_args.items():
        if key not in valid:
            raise ValueError(f"--training-arg {key}: not a TrainingArguments field")
        kwargs[key] = value
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"TrainingArguments: {err}") from err


def _resume_checkpoint(config: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    if config.resume is None:
        if out.is_dir() and get_last_checkpoint(str(out)) is not None:
            if not config.overwrite_output_dir:
                raise FileExistsError(
                    f"--output-dir {out} holds checkpoints; pass --resume to continue from the "
                    "last one, or --overwrite-output-dir to start over"
                )
        return None
    if config.resume in ("last", "true", "True"):
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume: no checkpoint-<step> directory in {out}")
        return last
    path = Path(config.resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"--resume {path}: not a Trainer checkpoint (no trainer_state.json)"
        )
    return str(path)


def _apply_lora(model: Any, config: TrainConfig) -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError("--lora needs peft: pip install 'hazyzoo[peft]'") from err
    targets = config.lora_target_modules or getattr(type(model), "lora_target_modules", None)
    lora_config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(targets) if targets else None,
    )
    try:
        return peft.get_peft_model(model, lora_config)
    except ValueError as err:
        raise ValueError(
            f"--lora on model_type {model.config.model_type}: {err} (pass --lora-target-modules)"
        ) from err


def train(config: TrainConfig) -> dict[str, Any]:
    """Fine-tune as ``config`` says; returns the results (what ``train_results.json`` holds)
    plus ``model`` (the trained model, a ``PeftModel`` with LoRA), ``tokenizer`` and
    ``log_history`` (Trainer's per-step logs)."""
    from transformers import Trainer, set_seed

    config.validate()
    resume_from = _resume_checkpoint(config)
    # TrainingArguments first: it sets up the distributed state that main_process_first uses.
    args = _training_arguments(config, has_eval=config.eval_split is not None)
    say = _printer(args.process_index == 0)

    set_seed(config.seed)
    model, fresh = build_model(config.model, config.model_args)
    vocab_size = _embedding_size(model)
    tokenizer = load_tokenizer(config.tokenizer, config.model, vocab_size)

    with args.main_process_first(desc="load and tokenize the data"):
        raw = load_raw_dataset(config)
        train_raw = _split(raw, config.train_split, "--train-split")
        train_data, train_report = prepare_dataset(
            train_raw,
            tokenizer,
            config,
            vocab_size=vocab_size,
            limit=config.max_train_examples,
            split=config.train_split,
        )
        eval_data, eval_report = None, None
        if config.eval_split is not None:
            eval_raw = _split(raw, config.eval_split, "--eval-split")
            eval_data, eval_report = prepare_dataset(
                eval_raw,
                tokenizer,
                config,
                vocab_size=vocab_size,
                limit=config.max_eval_examples,
                split=config.eval_split,
            )
    for report in (train_report, eval_report):
        if report is not None:
            say(format_data_report(report))

    pad_id = _pad_token_id(tokenizer, model)
    had_use_cache = "use_cache" in model.config.__dict__
    use_cache = getattr(model.config, "use_cache", None)
    base_dir = None
    if config.lora:
        if fresh:
            base_dir = Path(config.output_dir) / BASE_MODEL_DIR
            if args.process_index == 0:
                model.save_pretrained(base_dir)
        model = _apply_lora(model, config)
        if base_dir is not None:  # peft records the base's from_pretrained path, here none
            for adapter in model.peft_config.values():
                adapter.base_model_name_or_path = str(base_dir.resolve())
        trainable, total = model.get_nb_trainable_parameters()
        say(
            f"lora: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
        )
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"model: {config.model} ({type(_unwrap(model)).__name__}, {n_params:,} parameters), "
        f"{args.world_size} process(es) on {args.device}"
    )

    throughput = TokenThroughputCallback()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=CausalLMCollator(pad_id),
        processing_class=tokenizer,
        callbacks=[throughput],
    )
    if resume_from:
        say(f"resuming from {resume_from}")
    output = trainer.train(resume_from_checkpoint=resume_from)
    metrics = dict(output.metrics)
    if eval_data is not None:
        metrics.update(trainer.evaluate())
    peak_gib = peak_memory_gib(args.device)

    # Trainer sets config.use_cache to TrainingArguments.use_cache; save what the model had.
    base_config = _unwrap(model).config
    if had_use_cache:
        base_config.use_cache = use_cache
    else:
        base_config.__dict__.pop("use_cache", None)
    trainer.save_model(config.output_dir)
    trainer.save_state()

    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    results: dict[str, Any] = {
        "model_source": config.model,
        "output_dir": str(config.output_dir),
        "global_step": trainer.state.global_step,
        "world_size": args.world_size,
        "resumed_from": resume_from,
        "lora": config.lora,
        "base_model_dir": str(base_dir) if base_dir else None,
        "tokens_seen": throughput.tokens_seen,
        "peak_memory_gib": peak_gib,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "metrics": metrics,
        "data": {"train": train_report, "eval": eval_report},
        "config": _jsonable(dataclasses.asdict(config)),
    }
    if trainer.is_world_process_zero():
        path = Path(config.output_dir) / RESULTS_JSON
        path.write_text(json.dumps(results, indent=2) + "\n")
        say(
            f"saved the {'adapter' if config.lora else 'model'}"
            f"{' and tokenizer' if tokenizer is not None else ''} to {config.output_dir}; "
            f"results in {path}"
        )
    return {
        **results,
        "log_history": list(trainer.state.log_history),
        "model": model,
        "tokenizer": tokenizer,
    }


def _unwrap(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _pad_token_id(tokenizer: Any | None, model: Any) -> int:
    for source in (tokenizer, model.config):
        if source is None:
            continue
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, int):
                return value
    return 0  # padded positions are masked out of the loss and the attention


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.loads(json.dumps(value, default=str))


def _printer(enabled: bool):
    def say(message: str) -> None:
        if enabled:
            print(f"hazyzoo train: {message}", flush=True)

    return say


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo train`` / ``python -m hazyzoo.train``."""
    d = TrainConfig(model="", dataset="")
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        required=True,
        metavar="DIR|HUB_ID|tiny:TYPE|config:PATH",
        help="checkpoint dir or Hub id, tiny:<zoo model_type> or config:<config.json> (fresh)",
    )
    g.add_argument("--tokenizer", default=None, help="tokenizer dir/id (default: the model's)")
    g.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="config override for a fresh model (repeatable), e.g. vocab_size=128",
    )
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        required=True,
        help="zoo builder name, local .json/.jsonl/.csv/.parquet/.txt file, saved dataset "
        "directory, or Hub id",
    )
    g.add_argument("--dataset-config", default=None, help="builder config / Hub config name")
    g.add_argument(
        "--dataset-arg",
        action="append",
        metavar="KEY=VALUE",
        help="zoo-builder config override (repeatable; VALUE parsed as JSON when it parses)",
    )
    g.add_argument("--train-split", default=d.train_split)
    g.add_argument("--eval-split", default=None, help="evaluate on this split (at the end)")
    g.add_argument("--eval-steps", type=int, default=None, help="also evaluate every N steps")
    g.add_argument("--text-column", default=None, help="train on the whole text of this column")
    g.add_argument("--prompt-column", default=None, help="prompt (no loss) column")
    g.add_argument("--response-column", default=None, help="response (loss) column")
    g.add_argument(
        "--max-length", type=int, default=None, help="cut longer examples (counted, reported)"
    )
    g.add_argument("--max-train-examples", type=int, default=None)
    g.add_argument("--max-eval-examples", type=int, default=None)
    g.add_argument("--cache-dir", default=None, help="datasets cache directory")
    g = parser.add_argument_group("training (TrainingArguments)")
    g.add_argument("--output-dir", default=d.output_dir)
    g.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="start over even though --output-dir holds checkpoints",
    )
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="-1: use epochs")
    g.add_argument("--num-train-epochs", type=float, default=d.num_train_epochs)
    g.add_argument(
        "--per-device-train-batch-size",
        "--batch-size",
        type=int,
        default=d.per_device_train_batch_size,
    )
    g.add_argument("--per-device-eval-batch-size", type=int, default=None)
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--learning-rate", type=float, default=d.learning_rate)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--lr-scheduler-type", default=d.lr_scheduler_type)
    g.add_argument("--logging-steps", type=int, default=d.logging_steps)
    g.add_argument(
        "--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps (0: never)"
    )
    g.add_argument("--save-total-limit", type=int, default=None)
    g.add_argument("--seed", type=int, default=d.seed)
    precision = g.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true")
    precision.add_argument("--fp16", action="store_true")
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CHECKPOINT",
        help="resume from the last checkpoint in --output-dir, or from CHECKPOINT",
    )
    g.add_argument("--use-cpu", action="store_true", default=None, help="(default: when no CUDA)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    g.add_argument("--report-to", default=d.report_to, help="none, tensorboard, wandb, ...")
    g.add_argument("--dataloader-num-workers", type=int, default=0)
    g.add_argument("--fsdp", default=None, help="passed to TrainingArguments as it is")
    g.add_argument("--fsdp-config", default=None, help="passed to TrainingArguments as it is")
    g.add_argument("--deepspeed", default=None, help="passed to TrainingArguments as it is")
    g.add_argument(
        "--training-arg",
        action="append",
        metavar="KEY=VALUE",
        help="any other TrainingArguments field (repeatable; VALUE parsed as JSON)",
    )
    g = parser.add_argument_group("LoRA (peft)")
    g.add_argument("--lora", action="store_true", help="train a LoRA adapter instead")
    g.add_argument("--lora-r", type=int, default=d.lora_r)
    g.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    g.add_argument(
        "--lora-target-modules",
        nargs="+",
        default=None,
        help="module names (default: the zoo class's lora_target_modules, else peft's)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``hazyzoo train`` flags."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    values["model_args"] = parse_key_values(args.model_arg, "--model-arg")
    values["dataset_args"] = parse_key_values(args.dataset_arg, "--dataset-arg")
    values["training_args"] = parse_key_values(args.training_arg, "--training-arg")
    values["disable_tqdm"] = args.no_progress
    return TrainConfig(**values)


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo train`` and print the summary."""
    results = train(config_from_args(args))
    if results["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        m = results["metrics"]
        loss = results["last_loss"]
        print(
            f"hazyzoo train: done, {results['global_step']} steps, train_loss "
            f"{m.get('train_loss', float('nan')):.4f}, last logged loss "
            f"{'n/a' if loss is None else f'{loss:.4f}'}, {results['tokens_seen']:,} tokens"
            + (f", eval_loss {m['eval_loss']:.4f}" if "eval_loss" in m else "")
            + (
                f", peak GPU memory {results['peak_memory_gib']:.2f} GiB"
                if results.get("peak_memory_gib") is not None
                else ""
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hazyzoo.train``: the same as ``hazyzoo train``."""
    from hazyzoo.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

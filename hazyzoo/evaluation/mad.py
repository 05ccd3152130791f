"""The MAD benchmark protocol (Poli et al., ICML 2024, "Mechanistic design and scaling of hybrid
architectures"; athms/mad-lab ``benchmark.py``): train every architecture on every task setting
at every point of a learning-rate x weight-decay grid, keep each setting's best test accuracy
over the grid, and average.

    from hazyzoo.evaluation.mad import run_mad
    results = run_mad({"attention": "mA-Sg-mA-Sg", "hyena": "H-Sg-H-Sg"}, ["in-context-recall"])
    print(results.table())

``hazyzoo eval mad`` runs it from the command line (:func:`add_arguments`,
:func:`run_from_args`): with no flags a reduced version that finishes on 2 CPU cores in a few
minutes (``preset="quick"``), with ``--full`` the paper's protocol (``preset="full"``).

What one run is, as the reference does it (``train.py``, ``mad/model/pl_model_wrapper.py``):

* the model: :class:`~hazyzoo.MadForCausalLM`, or :class:`~hazyzoo.MadAutoEncoder` for the
  compression task, with ``max_position_embeddings`` = the setting's ``seq_len``;
* the loss: cross-entropy over positions whose target is not ``-100``, on **unshifted** targets
  (MAD's data already pair input position ``t`` with target ``t``), mean over the batch. It is
  given to ``transformers.Trainer`` as ``compute_loss_func``, so Trainer pops ``labels`` from the
  batch and the model never sees them (its own, shifted, loss is never used);
* the optimiser: AdamW on *all* parameters (weight decay on biases and norms too, as
  ``torch.optim.AdamW(model.parameters())`` in the reference; Trainer's default would exempt
  them), no gradient clipping, batch 128, and the reference's cosine schedule: lr annealed per
  *epoch* to ``min_lr`` = 1e-6 over ``epochs`` (``CosineAnnealingLR(T_max=epochs)`` stepped each
  epoch), no warm-up;
* evaluation: test accuracy after every epoch, torchmetrics ``MulticlassAccuracy(average="macro",
  ignore_index=-100)`` over all flattened test positions (accumulated over the whole test set,
  not averaged over batches); training stops early once it exceeds 0.999 (the reference's
  ``EarlyStopping(stopping_threshold=0.999)``); the run's accuracy is the final model's test
  accuracy (the reference's ``results.csv`` ``test_acc``, from ``trainer.validate`` after
  ``fit``). The best accuracy over epochs is recorded too (``best_epoch_accuracy``).

Scores (``mad/analysis.py``): per setting the best run over the grid (max ``test_acc``); per task
the mean over its settings; the MAD score of an architecture is the mean over tasks (what
``benchmark.py`` prints as "Mean across Tasks"; with one setting per task it is the mean over
settings).

Data: the ``mad`` builder of :mod:`hazyzoo.datasets_scripts` when ``datasets`` is installed;
without it (the GPU image) the same instances straight from
:mod:`hazyzoo.datasets_scripts.mad_tasks` (same generators, same RNG stream: one
``default_rng(seed)`` for the training instances, then the test ones).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hazyzoo.datasets_scripts import mad_tasks

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "MAD_LRS",
    "MAD_WEIGHT_DECAYS",
    "PRESETS",
    "RESULTS_JSON",
    "RESULTS_PNG",
    "RESULTS_TXT",
    "MadData",
    "MadResults",
    "MadRun",
    "MadSetting",
    "RunOutcome",
    "TrainSettings",
    "add_arguments",
    "evaluate_accuracy",
    "generate_instances",
    "load_setting_data",
    "mad_loss",
    "mad_settings",
    "make_mad_model",
    "parse_architectures",
    "resolve_knobs",
    "resolve_settings",
    "run_from_args",
    "run_mad",
    "summarize_runs",
    "train_and_evaluate",
]

IGNORE_INDEX = -100
MAD_LRS = (1e-4, 5e-4, 1e-3)
MAD_WEIGHT_DECAYS = (0.0, 0.1)
MAD_MIN_LR = 1e-6
EARLY_STOP_THRESHOLD = 0.999
RESULTS_JSON = "mad_results.json"
RESULTS_PNG = "mad_results.png"
RESULTS_TXT = "mad_results.txt"

# What `hazyzoo eval mad` trains with no flags: the six baselines, three architectures.
DEFAULT_ARCHITECTURES: dict[str, str] = {
    "attention": "mA-Sg-mA-Sg",
    "hyena": "H-Sg-H-Sg",
    "hybrid": "H-Sg-mA-Sg",
}

# Each knob of the protocol, per preset. "full" is the paper's (mad-lab's MADConfig and
# make_benchmark_mad_configs); "quick" is reduced to finish on 2 CPU cores in a few minutes.
# num_train_examples None: each setting's own training size (12,800, the train-size changes, 256
# for memorization).
PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(
        lrs=MAD_LRS,
        wds=MAD_WEIGHT_DECAYS,
        epochs=200,
        num_train_examples=None,
        num_test_examples=1280,
        batch_size=128,
        hidden_size=128,
    ),
    "quick": dict(
        lrs=(3e-3,),
        wds=(0.0,),
        epochs=4,
        num_train_examples=1024,
        num_test_examples=128,
        batch_size=16,
        hidden_size=64,
    ),
}

# --------------------------------------------------------------------------------------------
# Task settings
# --------------------------------------------------------------------------------------------


def _has_datasets() -> bool:
    return importlib.util.find_spec("datasets") is not None


def _task_table() -> dict[str, dict[str, Any]]:
    """The task table the ``mad`` builder uses (numpy-only module: no ``datasets`` needed)."""
    return mad_tasks.MAD_TASKS


@dataclass(frozen=True)
class MadSetting:
    """One task at one difficulty: the builder config ``name`` and its generator fields."""

    name: str
    task: str
    fields: dict[str, Any] = field(hash=False)
    baseline_num_train_examples: int = 12_800

    @property
    def vocab_size(self) -> int:
        """Output classes of the model (and of the accuracy)."""
        return int(self.fields["vocab_size"])

    @property
    def seq_len(self) -> int:
        """The setting's sequence length (the model's ``max_position_embeddings``)."""
        return int(self.fields["seq_len"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: name, task and generator fields."""
        return {"name": self.name, "task": self.task, **dict(self.fields)}


def mad_settings(task: str | None = None) -> list[MadSetting]:
    """Every MAD setting (of one task, or all), in the builder's order: each task's baseline,
    then its one-at-a-time changes."""
    table = _task_table()
    if task is not None and task not in table:
        raise ValueError(f"unknown MAD task {task!r}; tasks: {list(table)}")
    out = []
    for name, spec in table.items():
        if task is not None and name != task:
            continue
        base = {**mad_tasks.SETTING_DEFAULTS, **spec["baseline"], "task": name}
        n0 = int(
            spec["baseline"].get(
                "num_train_examples", mad_tasks.SETTING_DEFAULTS["num_train_examples"]
            )
        )
        out.append(MadSetting(name, name, base, n0))
        for key, values in spec["changes"].items():
            for value in values:
                out.append(MadSetting(f"{name}-{key}-{value}", name, {**base, key: value}, n0))
    return out


def resolve_settings(
    tasks: Sequence[str] | str | None = None, *, all_settings: bool = False
) -> list[MadSetting]:
    """The settings to run: each entry is a task name (its baseline, or every setting of it with
    ``all_settings``) or a setting name (``"in-context-recall-vocab_size-32"``); None or
    ``"all"``: all six tasks. Raises ``ValueError`` for an unknown name or an empty list."""
    table = _task_table()
    if tasks is None or tasks == "all" or list(tasks) == ["all"]:
        tasks = list(table)
    elif isinstance(tasks, str):
        tasks = [t for t in tasks.replace(",", " ").split() if t]
    if not tasks:
        raise ValueError("no MAD task given; tasks: " + ", ".join(table))
    every = {s.name: s for s in mad_settings()}
    out: list[MadSetting] = []
    for name in tasks:
        if name in table:
            chosen = mad_settings(name) if all_settings else [every[name]]
        elif name in every:
            chosen = [every[name]]
        else:
            raise ValueError(
                f"unknown MAD task or setting {name!r}; tasks: {list(table)} (settings are "
                f"'<task>-<field>-<value>', e.g. 'in-context-recall-vocab_size-32'; "
                f"all: hazyzoo.datasets_scripts.mad.mad_config_names())"
            )
        out.extend(s for s in chosen if s not in out)
    return out


def _split_sizes(
    setting: MadSetting, num_train_examples: int | None, num_test_examples: int | None
) -> tuple[int, int]:
    """Training and test instances for ``setting``. ``num_train_examples`` replaces the task's
    baseline training size (12,800; memorization 256) when smaller, and a train-size change of
    the baseline is scaled by the same factor (so ``...-num_train_examples-800`` stays 1/16 of
    the baseline); None keeps the setting's own size."""
    own = int(setting.fields["num_train_examples"])
    n_test = (
        int(setting.fields["num_test_examples"]) if num_test_examples is None else num_test_examples
    )
    if num_train_examples is None or num_train_examples >= setting.baseline_num_train_examples:
        return own, n_test
    scale = num_train_examples / setting.baseline_num_train_examples
    return max(1, round(own * scale)), n_test


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class MadData:
    """One setting's instances: int64 ``[n, length]`` inputs and per-position targets (``-100``
    where nothing is scored)."""

    setting: MadSetting
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    source: str = "numpy"

    @property
    def vocab_size(self) -> int:
        """The setting's vocabulary size."""
        return self.setting.vocab_size


def generate_instances(
    setting: MadSetting, num_train_examples: int, num_test_examples: int, *, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_inputs, train_labels, test_inputs, test_labels)`` straight from the generators,
    without ``datasets``: one ``default_rng(seed)`` (the setting's seed when None) draws the
    training instances, then, continuing, the test ones: the builder's stream."""
    fields = dict(setting.fields)
    if seed is not None:
        fields["seed"] = seed
    make = mad_tasks.instance_fn(fields)
    rng = np.random.default_rng(fields["seed"])
    train = [make(rng, True) for _ in range(num_train_examples)]
    test = [make(rng, False) for _ in range(num_test_examples)]

    def stack(pairs: list, i: int) -> np.ndarray:
        return np.stack([np.asarray(p[i], dtype=np.int64) for p in pairs])

    return stack(train, 0), stack(train, 1), stack(test, 0), stack(test, 1)


def load_setting_data(
    setting: MadSetting,
    *,
    num_train_examples: int | None = None,
    num_test_examples: int | None = None,
    source: str = "auto",
    cache_dir: str | Path | None = None,
    seed: int | None = None,
) -> MadData:
    """One setting's train/test instances (``num_train_examples`` as :func:`run_mad` takes
    it; ``num_test_examples`` None: the setting's 1,280).

    ``source``: ``"datasets"`` (the ``mad`` builder, prepared under ``cache_dir``, a temporary
    folder when None), ``"numpy"`` (:func:`generate_instances`; cached as ``.npz`` under
    ``cache_dir`` when given) or ``"auto"`` (``datasets`` when installed). Both give the same
    instances. ``seed``: the data seed (None: the setting's, 12345)."""
    if source not in ("auto", "datasets", "numpy"):
        raise ValueError(f"unknown data source {source!r}; choose auto, datasets or numpy")
    n_train, n_test = _split_sizes(setting, num_train_examples, num_test_examples)
    if n_test < 1:
        raise ValueError(f"num_test_examples must be >= 1, got {n_test}")
    if source == "auto":
        source = "datasets" if _has_datasets() else "numpy"
    if source == "datasets":
        arrays = _load_with_datasets(setting, n_train, n_test, cache_dir, seed)
    else:
        arrays = _load_with_numpy(setting, n_train, n_test, cache_dir, seed)
    return MadData(setting, *arrays, source=source)


def _load_with_datasets(
    setting: MadSetting, n_train: int, n_test: int, cache_dir: str | Path | None, seed: int | None
) -> tuple[np.ndarray, ...]:
    from hazyzoo.datasets_scripts import load

    overrides: dict[str, Any] = dict(num_train_examples=n_train, num_test_examples=n_test)
    if seed is not None:
        overrides["seed"] = seed
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # its "Generating train split" bars, for every setting
    try:
        with tempfile.TemporaryDirectory(prefix="hazyzoo-mad-") as tmp:
            data = load("mad", setting.name, cache_dir=cache_dir or tmp, **overrides)
            out = []
            for split in ("train", "test"):
                table = data[split].with_format("numpy")
                out += [_as_matrix(table["input_ids"]), _as_matrix(table["labels"])]
    finally:
        if bars:
            datasets.enable_progress_bars()
    return tuple(out)


def _as_matrix(column: Any) -> np.ndarray:
    array = np.asarray(column)
    if array.dtype == object:  # a column of equal-length rows can come back as rows
        array = np.stack([np.asarray(row) for row in array])
    return array.astype(np.int64)


def _load_with_numpy(
    setting: MadSetting, n_train: int, n_test: int, cache_dir: str | Path | None, seed: int | None
) -> tuple[np.ndarray, ...]:
    path = None
    if cache_dir is not None:
        key = json.dumps([setting.to_dict(), n_train, n_test, seed], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{setting.name}-{digest}.npz"
        if path.is_file():
            with np.load(path) as f:
                return tuple(f[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    arrays = generate_instances(setting, n_train, n_test, seed=seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **dict(zip(("train_x", "train_y", "test_x", "test_y"), arrays)))
        tmp.replace(path)
    return arrays


# --------------------------------------------------------------------------------------------
# Architectures and models
# --------------------------------------------------------------------------------------------


def _shorthand(layers: Sequence[str]) -> str:
    from hazyzoo.configuration.configuration_mad import MAD_LAYERS

    return "-".join(
        "+".join(MAD_LAYERS[p].shorthand or p if p in MAD_LAYERS else p for p in name.split("+"))
        for name in layers
    )


def _parse_layers(spec: str | Sequence[str]) -> list[str]:
    from hazyzoo.configuration.configuration_mad import parse_layers

    if isinstance(spec, str) and "," in spec:
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    layers = parse_layers(spec)
    if not layers:
        raise ValueError(f"architecture {spec!r} has no layers")
    return layers


def parse_architectures(
    architectures: Mapping[str, str | Sequence[str]] | Sequence[str | Sequence[str]] | str,
) -> dict[str, list[str]]:
    """``{label: resolved layer names}``. Accepts a mapping of labels to layer specs, or a list
    of specs (labelled by their MAD shorthand). A spec is a shorthand string (``"mH-Sg-mA-Sg"``),
    comma-separated layer names (``"hyena,swiglu"``), a list of names, or ``"LABEL=SPEC"``.
    Raises ``ValueError`` for an unknown layer or an empty list."""
    if isinstance(architectures, str):
        architectures = [architectures]
    items: list[tuple[str | None, Any]] = []
    if isinstance(architectures, Mapping):
        items = list(architectures.items())
    else:
        for spec in architectures:
            if isinstance(spec, str) and "=" in spec:
                label, _, spec = spec.partition("=")
                items.append((label.strip(), spec.strip()))
            else:
                items.append((None, spec))
    if not items:
        raise ValueError("no architecture given (e.g. --layers mA-Sg-mA-Sg H-Sg-H-Sg)")
    out: dict[str, list[str]] = {}
    for label, spec in items:
        layers = _parse_layers(spec)
        label = label or _shorthand(layers)
        if label in out:
            raise ValueError(f"architecture label {label!r} given twice")
        out[label] = layers
    return out


def _check_architectures(architectures: Mapping[str, Sequence[str]], hidden_size: int) -> None:
    """Build each architecture's config (not its weights) at ``hidden_size`` so that a bad one
    (no sequence mixer, heads not dividing the width, ...) fails before any training."""
    from hazyzoo.configuration.configuration_mad import MadConfig

    for label, layers in architectures.items():
        try:
            MadConfig(layers=list(layers), hidden_size=hidden_size, max_position_embeddings=32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"architecture {label!r}: {err}") from err


def make_mad_model(
    layers: Sequence[str], *, task: str, vocab_size: int, seq_len: int, hidden_size: int
) -> torch.nn.Module:
    """The model MAD's ``make_model_fn`` builds for a task: :class:`~hazyzoo.MadAutoEncoder` for
    compression, else :class:`~hazyzoo.MadForCausalLM`; width ``hidden_size`` and
    ``max_position_embeddings = seq_len`` (MAD's ``max_length``)."""
    from hazyzoo.configuration.configuration_mad import MadConfig

    try:
        from hazyzoo.modeling.modeling_mad import MadAutoEncoder, MadForCausalLM
    except ImportError as err:
        raise ImportError(
            f"the MAD models (hazyzoo.modeling.modeling_mad) are not available: {err}"
        ) from err
    backbone = "autoencoder" if task == "compression" else "language-model"
    config = MadConfig(
        layers=list(layers),
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        max_position_embeddings=seq_len,
        backbone=backbone,
    )
    return (MadAutoEncoder if backbone == "autoencoder" else MadForCausalLM)(config)


# --------------------------------------------------------------------------------------------
# Loss, accuracy, one training run
# --------------------------------------------------------------------------------------------


def _logits(outputs: Any) -> torch.Tensor:
    import torch

    if isinstance(outputs, torch.Tensor):
        return outputs
    if hasattr(outputs, "logits"):
        return outputs.logits
    return outputs[0]


def mad_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """MAD's loss: mean cross-entropy over the positions whose target is not ``-100``, with the
    logits at position ``t`` scored against ``labels[:, t]`` (no shift). A Trainer
    ``compute_loss_func``; ``num_items_in_batch`` is ignored (no gradient accumulation, and
    Trainer counts it over ``labels[..., 1:]`` for causal LMs, which would miss position 0)."""
    import torch.nn.functional as F

    logits = _logits(outputs)
    if logits.shape[:2] != labels.shape[:2]:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not line up with targets {tuple(labels.shape)}"
        )
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
    )


def _accepts(module: Any, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _autocast(device: torch.device, precision: str) -> Any:
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate_accuracy(
    model: torch.nn.Module,
    inputs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    vocab_size: int,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> float:
    """MAD's accuracy: torchmetrics ``MulticlassAccuracy(num_classes=vocab_size,
    average="macro", ignore_index=-100)`` of the argmax predictions over every flattened
    position of ``inputs``, accumulated over the whole set."""
    import torch

    try:
        from torchmetrics.classification import MulticlassAccuracy
    except ImportError as err:
        raise ImportError("the MAD accuracy needs torchmetrics: pip install torchmetrics") from err
    device = torch.device(device) if device is not None else next(model.parameters()).device
    metric = MulticlassAccuracy(
        num_classes=vocab_size, average="macro", ignore_index=IGNORE_INDEX
    ).to(device)
    x_all, y_all = torch.as_tensor(inputs), torch.as_tensor(labels)
    kwargs = {"use_cache": False} if _accepts(model, "use_cache") else {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(device, precision):
            for start in range(0, len(x_all), batch_size):
                x = x_all[start : start + batch_size].to(device)
                y = y_all[start : start + batch_size].to(device)
                logits = _logits(model(input_ids=x, **kwargs))
                if logits.shape[:2] != y.shape:
                    raise ValueError(
                        f"logits {tuple(logits.shape)} do not line up with targets {tuple(y.shape)}"
                    )
                metric.update(logits.argmax(-1).reshape(-1), y.reshape(-1))
    finally:
        model.train(was_training)
    return float(metric.compute())


@dataclass
class TrainSettings:
    """One run's optimisation settings (the reference's ``MADConfig`` training fields)."""

    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    min_lr: float = MAD_MIN_LR
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 12345
    early_stop_threshold: float | None = EARLY_STOP_THRESHOLD
    progress: bool = False
    description: str = ""


@dataclass
class RunOutcome:
    """What one training run returns: the final test accuracy (MAD's ``test_acc``), the best
    over epochs, epochs and optimiser steps taken, wall time, and per-epoch history."""

    accuracy: float
    best_epoch_accuracy: float
    epochs_run: int
    steps: int
    train_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)


class _TorchDataset:
    """Rows of ``{"input_ids", "labels"}`` tensors for Trainer's default collator."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        import torch

        self.inputs = torch.as_tensor(inputs, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {"input_ids": self.inputs[idx], "labels": self.labels[idx]}


def _epoch_cosine(epochs: int, steps_per_epoch: int, lr: float, min_lr: float) -> Callable:
    """The LambdaLR factor of the reference's ``CosineAnnealingLR(T_max=epochs, eta_min)``
    stepped once per epoch: constant within an epoch."""

    def factor(step: int) -> float:
        epoch = min(step // steps_per_epoch, epochs)
        value = min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        return value / lr if lr > 0 else 0.0

    return factor


def train_and_evaluate(
    model: torch.nn.Module, data: MadData, settings: TrainSettings
) -> RunOutcome:
    """Train ``model`` on ``data`` with ``transformers.Trainer`` as MAD does (see the module
    doc) and return its test accuracy."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    # Needs torchmetrics: fail before training, not after the first epoch.
    if importlib.util.find_spec("torchmetrics") is None:
        raise ImportError("the MAD accuracy needs torchmetrics: pip install torchmetrics")
    device = torch.device(settings.device)
    if device.type == "cuda" and device.index not in (None, 0):
        raise ValueError(
            f"device {settings.device}: transformers.Trainer trains on the first visible GPU; "
            "choose the GPU with CUDA_VISIBLE_DEVICES and pass device='cuda'"
        )
    train_set = _TorchDataset(data.train_inputs, data.train_labels)
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _epoch_cosine(settings.epochs, steps_per_epoch, settings.lr, settings.min_lr)
    )
    history: list[dict[str, float]] = []
    bar = None
    if settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.epochs, desc=settings.description, unit="epoch", leave=False)

    class _EvalEachEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            acc = evaluate_accuracy(
                model,
                data.test_inputs,
                data.test_labels,
                vocab_size=data.vocab_size,
                batch_size=settings.batch_size,
                device=device,
                precision=settings.precision,
            )
            history.append({"epoch": len(history) + 1, "accuracy": acc, "step": state.global_step})
            threshold = settings.early_stop_threshold
            if threshold is not None and acc > threshold:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and history:
                history[-1]["loss"] = float(logs["loss"])
                if bar is not None:
                    acc = history[-1]["accuracy"]
                    bar.set_postfix(loss=f"{logs['loss']:.3f}", acc=f"{acc:.3f}", refresh=False)
                    bar.update(1)

    with tempfile.TemporaryDirectory(prefix="hazyzoo-mad-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=settings.batch_size,
            num_train_epochs=settings.epochs,
            learning_rate=settings.lr,
            weight_decay=settings.weight_decay,
            lr_scheduler_type="cosine_with_min_lr",  # recorded; the scheduler passed below rules
            lr_scheduler_kwargs={"min_lr": settings.min_lr},
            warmup_steps=0,
            max_grad_norm=0.0,  # the reference does not clip
            gradient_accumulation_steps=1,
            eval_strategy="no",  # the callback evaluates each epoch with torchmetrics
            save_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            disable_tqdm=True,
            seed=settings.seed,
            use_cpu=device.type == "cpu",
            bf16=settings.precision == "bf16",
            dataloader_num_workers=0,
        )
        if device.type == "cuda":
            _ = args.device
            args._n_gpu = min(args._n_gpu, 1)  # one GPU per run, never DataParallel
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_set,
            compute_loss_func=mad_loss,
            optimizers=(optimizer, scheduler),
            callbacks=[_EvalEachEpoch()],
        )
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*num_items_in_batch.*")
            trainer.train()
        elapsed = time.perf_counter() - start
        steps = trainer.state.global_step
    if bar is not None:
        bar.close()
    if not history:
        raise RuntimeError("training ran no epoch (empty training set?)")
    accuracies = [h["accuracy"] for h in history]
    return RunOutcome(
        accuracy=accuracies[-1],
        best_epoch_accuracy=max(accuracies),
        epochs_run=len(history),
        steps=steps,
        train_time_s=elapsed,
        history=history,
    )


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@dataclass
class MadRun:
    """One architecture x setting x (lr, weight decay) training run."""

    architecture: str
    layers: list[str]
    setting: str
    task: str
    lr: float
    weight_decay: float
    accuracy: float
    best_epoch_accuracy: float
    epochs_run: int
    steps: int
    train_time_s: float
    num_parameters: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MadRun:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def summarize_runs(
    runs: Sequence[MadRun],
    architectures: Sequence[str],
    settings: Sequence[MadSetting],
    *,
    score_from: str = "accuracy",
) -> dict[str, Any]:
    """MAD's aggregation (``mad/analysis.py``): per architecture and setting the best run over
    the grid by ``score_from`` (``"accuracy"``: the final test accuracy, as the reference;
    ``"best_epoch_accuracy"``), per task the mean of its settings' bests, and the MAD score: the
    mean over tasks. Returns ``{"best", "task_scores", "mad_scores", "mean_over_settings"}``;
    a setting without a run is left out (and its task's score from the rest)."""
    if score_from not in ("accuracy", "best_epoch_accuracy"):
        raise ValueError(f"score_from must be accuracy or best_epoch_accuracy, got {score_from!r}")
    best: dict[str, dict[str, dict[str, Any]]] = {}
    task_scores: dict[str, dict[str, float]] = {}
    mad_scores: dict[str, float] = {}
    mean_over_settings: dict[str, float] = {}
    for arch in architectures:
        best[arch] = {}
        for s in settings:
            candidates = [r for r in runs if r.architecture == arch and r.setting == s.name]
            if not candidates:
                continue
            top = max(candidates, key=lambda r: getattr(r, score_from))
            best[arch][s.name] = {
                "task": s.task,
                "accuracy": getattr(top, score_from),
                "lr": top.lr,
                "weight_decay": top.weight_decay,
                "num_runs": len(candidates),
            }
        per_task: dict[str, list[float]] = {}
        for s in settings:
            if s.name in best[arch]:
                per_task.setdefault(s.task, []).append(best[arch][s.name]["accuracy"])
        task_scores[arch] = {t: float(np.mean(v)) for t, v in per_task.items()}
        if task_scores[arch]:
            mad_scores[arch] = float(np.mean(list(task_scores[arch].values())))
            mean_over_settings[arch] = float(np.mean([b["accuracy"] for b in best[arch].values()]))
    return {
        "best": best,
        "task_scores": task_scores,
        "mad_scores": mad_scores,
        "mean_over_settings": mean_over_settings,
    }


@dataclass
class MadResults:
    """Every run, the per-setting bests, per-task scores and MAD scores, and the protocol."""

    architectures: dict[str, list[str]]
    settings: list[MadSetting]
    runs: list[MadRun]
    best: dict[str, dict[str, dict[str, Any]]]
    task_scores: dict[str, dict[str, float]]
    mad_scores: dict[str, float]
    mean_over_settings: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON written as ``mad_results.json``."""
        return {
            "benchmark": "MAD",
            "metric": "test accuracy: torchmetrics MulticlassAccuracy(average='macro', "
            "ignore_index=-100) over flattened test positions",
            "score": "per setting: best run over the lr x weight-decay grid; per task: mean over "
            "its settings; MAD score: mean over tasks",
            "protocol": self.protocol,
            "architectures": self.architectures,
            "settings": [s.to_dict() for s in self.settings],
            "runs": [r.to_dict() for r in self.runs],
            "best": self.best,
            "task_scores": self.task_scores,
            "mad_scores": self.mad_scores,
            "mean_over_settings": self.mean_over_settings,
            "wall_time_s": self.wall_time_s,
        }

    def table(self) -> str:
        """Settings x architectures (best accuracy over the grid), each task's mean when it
        has several settings, and the MAD score row."""
        archs = list(self.architectures)
        rows: list[tuple[str, list[float | None]]] = []
        tasks = list(dict.fromkeys(s.task for s in self.settings))
        for task in tasks:
            names = [s.name for s in self.settings if s.task == task]
            for name in names:
                rows.append((name, [self.best[a].get(name, {}).get("accuracy") for a in archs]))
            if len(names) > 1:
                rows.append((f"{task} (mean)", [self.task_scores[a].get(task) for a in archs]))
        rows.append(("MAD score", [self.mad_scores.get(a) for a in archs]))
        first = max(len("setting"), *(len(r[0]) for r in rows))
        widths = [max(7, len(a)) for a in archs]
        lines = ["  ".join(["setting".ljust(first)] + [a.rjust(w) for a, w in zip(archs, widths)])]
        for i, (label, values) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * len(lines[0]))
            cells = ["-" if v is None else f"{v:.3f}" for v in values]
            lines.append(
                "  ".join([label.ljust(first)] + [c.rjust(w) for c, w in zip(cells, widths)])
            )
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """A heatmap PNG: settings (and the MAD score) x architectures, cells annotated."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        archs = list(self.architectures)
        labels = [s.name for s in self.settings] + ["MAD score"]
        values = np.full((len(labels), len(archs)), np.nan)
        for j, a in enumerate(archs):
            for i, s in enumerate(self.settings):
                if s.name in self.best[a]:
                    values[i, j] = self.best[a][s.name]["accuracy"]
            values[-1, j] = self.mad_scores.get(a, np.nan)
        fig, ax = plt.subplots(
            figsize=(2.0 + 1.3 * len(archs), 1.2 + 0.38 * len(labels)), constrained_layout=True
        )
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(archs)), archs, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.axhline(len(labels) - 1.5, color="white", linewidth=2)
        for i in range(len(labels)):
            for j in range(len(archs)):
                if not np.isnan(values[i, j]):
                    color = "black" if values[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=color)
        fig.colorbar(image, ax=ax, label="test accuracy (best over the grid)")
        ax.set_title("MAD")
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def write(self, output_dir: str | Path, *, plot: bool = True) -> list[Path]:
        """Write ``mad_results.json``, ``mad_results.txt`` (the table) and, when ``plot`` and
        matplotlib is installed, ``mad_results.png``; returns the paths written."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / RESULTS_JSON, out / RESULTS_TXT]
        written[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        written[1].write_text(self.table() + "\n")
        if plot and importlib.util.find_spec("matplotlib") is not None:
            written.append(self.plot(out / RESULTS_PNG))
        return written


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available")
    return str(device)


def _resolve_precision(precision: str, device: str) -> str:
    import torch

    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def _check_grid(name: str, values: Sequence[float], *, positive: bool) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name}: the grid is empty; give at least one value")
    bad = [v for v in values if not math.isfinite(v) or (v <= 0 if positive else v < 0)]
    if bad:
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: every value must be finite and {need}, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: repeated values {values}")
    return values


def resolve_knobs(
    preset: str = "quick",
    *,
    lrs: Sequence[float] | None = None,
    wds: Sequence[float] | None = None,
    epochs: int | None = None,
    num_train_examples: int | str | None = "preset",
    num_test_examples: int | None = None,
    batch_size: int | None = None,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """The preset's knobs (:data:`PRESETS`) with the given ones (not None; for
    ``num_train_examples`` not ``"preset"``, as None means each setting's own size) in their
    place, checked: ``ValueError`` for an unknown preset, an empty or bad grid, or a size < 1."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PRESETS)}")
    knobs = dict(PRESETS[preset])
    given = dict(
        lrs=lrs,
        wds=wds,
        epochs=epochs,
        num_test_examples=num_test_examples,
        batch_size=batch_size,
        hidden_size=hidden_size,
    )
    knobs.update({k: v for k, v in given.items() if v is not None})
    if num_train_examples != "preset":
        knobs["num_train_examples"] = num_train_examples
    knobs["lrs"] = _check_grid("lrs", knobs["lrs"], positive=True)
    knobs["wds"] = _check_grid("wds", knobs["wds"], positive=False)
    for name in ("epochs", "batch_size", "hidden_size", "num_test_examples"):
        value = knobs[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    n_train = knobs["num_train_examples"]
    if n_train is not None and (
        isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1
    ):
        raise ValueError(f"num_train_examples must be an int >= 1 or None, got {n_train!r}")
    return knobs


def run_mad(
    architectures: Mapping[str, str | Sequence[str]]
    | Sequence[str | Sequence[str]]
    | str = DEFAULT_ARCHITECTURES,
    tasks: Sequence[str] | str | None = None,
    *,
    preset: str = "quick",
    all_settings: bool = False,
    lrs: Sequence[float] | None = None,
    wds: Sequence[float] | None = None,
    epochs: int | None = None,
    num_train_examples: int | str | None = "preset",
    num_test_examples: int | None = None,
    batch_size: int | None = None,
    hidden_size: int | None = None,
    output_dir: str | Path | None = None,
    device: str | None = "auto",
    seed: int = 12345,
    precision: str = "auto",
    min_lr: float = MAD_MIN_LR,
    early_stop_threshold: float | None = EARLY_STOP_THRESHOLD,
    score_from: str = "accuracy",
    data_source: str = "auto",
    data_cache_dir: str | Path | None = None,
    data_seed: int | None = None,
    model_factory: Callable[..., Any] | None = None,
    train_fn: Callable[[Any, MadData, TrainSettings], RunOutcome] | None = None,
    progress: bool = True,
) -> MadResults:
    """Run the MAD protocol and return (and, with ``output_dir``, write) the results.

    Args:
        architectures: ``{label: layers}`` or a list of layer specs (see
            :func:`parse_architectures`).
        tasks: task names (each task's baseline setting, or all its settings with
            ``all_settings``) and/or setting names; None: all six tasks.
        preset: ``"quick"`` (the reduced default of ``hazyzoo eval mad``) or ``"full"`` (the
            paper's protocol); every knob below left None takes the preset's value
            (:data:`PRESETS`).
        lrs, wds: the learning-rate and weight-decay grid (full: 1e-4, 5e-4, 1e-3 x 0, 0.1).
        epochs, batch_size, hidden_size: training length, batch and model width.
        num_train_examples: replaces each task's baseline training size (12,800; memorization
            256) where smaller, the train-size settings scaling with it (``...-800`` stays 1/16
            of the baseline); None: every setting's own size; ``"preset"``: the preset's.
        num_test_examples: test instances per setting (full: 1,280).
        output_dir: where ``mad_results.{json,txt,png}`` go (nothing written when None).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (the first visible GPU).
        seed: the training seed (initialisation and batch order; reseeded for every run).
        precision: ``"auto"`` (bf16 autocast on a bf16 GPU, as the reference; fp32 on CPU),
            ``"fp32"`` or ``"bf16"``.
        min_lr: the cosine schedule's floor. early_stop_threshold: stop a run once its test
            accuracy exceeds this (None: never).
        score_from: ``"accuracy"`` (final test accuracy, the reference) or
            ``"best_epoch_accuracy"``.
        data_source, data_cache_dir, data_seed: see :func:`load_setting_data`.
        model_factory: ``(layers, *, task, vocab_size, seq_len, hidden_size) -> model``
            (default :func:`make_mad_model`).
        train_fn: ``(model, data, TrainSettings) -> RunOutcome`` (default
            :func:`train_and_evaluate`).
        progress: tqdm bars over runs and epochs.
    """
    from transformers import set_seed

    knobs = resolve_knobs(
        preset,
        lrs=lrs,
        wds=wds,
        epochs=epochs,
        num_train_examples=num_train_examples,
        num_test_examples=num_test_examples,
        batch_size=batch_size,
        hidden_size=hidden_size,
    )
    if not 0 <= min_lr < min(knobs["lrs"]):
        raise ValueError(f"min_lr must be >= 0 and below every lr, got {min_lr}")
    archs = parse_architectures(architectures)
    settings = resolve_settings(tasks, all_settings=all_settings)
    device = _resolve_device(device)
    precision = _resolve_precision(precision, device)
    if model_factory is None:
        _check_architectures(archs, knobs["hidden_size"])
    if train_fn is None and importlib.util.find_spec("torchmetrics") is None:
        raise ImportError("the MAD accuracy needs torchmetrics: pip install torchmetrics")
    factory = model_factory or make_mad_model
    train = train_fn or train_and_evaluate
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir {out} exists and is not a directory")

    protocol = {
        "preset": preset,
        **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in knobs.items()},
        "all_settings": all_settings,
        "optimizer": "AdamW (all parameters), no gradient clipping",
        "scheduler": "cosine per epoch to min_lr (CosineAnnealingLR(T_max=epochs))",
        "min_lr": min_lr,
        "early_stop_threshold": early_stop_threshold,
        "score_from": score_from,
        "device": device,
        "precision": precision,
        "seed": seed,
        "data_seed": data_seed,
        "loss": "cross-entropy on unshifted targets, ignore_index=-100",
    }
    grid = [(lr, wd) for lr in knobs["lrs"] for wd in knobs["wds"]]
    total = len(settings) * len(archs) * len(grid)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="MAD", unit="run")
    runs: list[MadRun] = []
    start = time.perf_counter()
    sizes: dict[str, tuple[int, int]] = {}
    try:
        for setting in settings:
            data = load_setting_data(
                setting,
                num_train_examples=knobs["num_train_examples"],
                num_test_examples=knobs["num_test_examples"],
                source=data_source,
                cache_dir=data_cache_dir,
                seed=data_seed,
            )
            sizes[setting.name] = (len(data.train_inputs), len(data.test_inputs))
            for arch, layers in archs.items():
                for lr, wd in grid:
                    set_seed(seed)
                    model = factory(
                        list(layers),
                        task=setting.task,
                        vocab_size=setting.vocab_size,
                        seq_len=setting.seq_len,
                        hidden_size=knobs["hidden_size"],
                    )
                    params = (
                        sum(p.numel() for p in model.parameters())
                        if hasattr(model, "parameters")
                        else 0
                    )
                    desc = f"{arch} {setting.name} lr={lr:g} wd={wd:g}"
                    outcome = train(
                        model,
                        data,
                        TrainSettings(
                            lr=lr,
                            weight_decay=wd,
                            epochs=knobs["epochs"],
                            batch_size=knobs["batch_size"],
                            min_lr=min_lr,
                            device=device,
                            precision=precision,
                            seed=seed,
                            early_stop_threshold=early_stop_threshold,
                            progress=progress,
                            description=desc,
                        ),
                    )
                    runs.append(
                        MadRun(
                            architecture=arch,
                            layers=list(layers),
                            setting=setting.name,
                            task=setting.task,
                            lr=lr,
                            weight_decay=wd,
                            accuracy=float(outcome.accuracy),
                            best_epoch_accuracy=float(outcome.best_epoch_accuracy),
                            epochs_run=int(outcome.epochs_run),
                            steps=int(outcome.steps),
                            train_time_s=float(outcome.train_time_s),
                            num_parameters=int(params),
                            history=list(outcome.history),
                        )
                    )
                    del model
                    if bar is not None:
                        bar.set_postfix_str(f"{desc}: acc {outcome.accuracy:.3f}", refresh=False)
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    protocol["split_sizes"] = {k: {"train": v[0], "test": v[1]} for k, v in sizes.items()}
    results = results_from_runs(runs, archs, settings, protocol=protocol, score_from=score_from)
    results.wall_time_s = time.perf_counter() - start
    if out is not None:
        results.write(out)
    return results


def results_from_runs(
    runs: Sequence[MadRun],
    architectures: Mapping[str, Sequence[str]],
    settings: Sequence[MadSetting],
    *,
    protocol: Mapping[str, Any] | None = None,
    score_from: str = "accuracy",
) -> MadResults:
    """A :class:`MadResults` from runs made elsewhere (e.g. in parallel worker processes)."""
    summary = summarize_runs(runs, list(architectures), settings, score_from=score_from)
    return MadResults(
        architectures={k: list(v) for k, v in architectures.items()},
        settings=list(settings),
        runs=list(runs),
        protocol=copy.deepcopy(dict(protocol or {})),
        **summary,
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval mad``: every knob defaults to the quick preset, or to the
    paper's protocol with ``--full``."""
    quick, full = PRESETS["quick"], PRESETS["full"]

    def both(key: str) -> str:
        def show(v: Any) -> str:
            return ",".join(f"{x:g}" for x in v) if isinstance(v, (list, tuple)) else str(v)

        return f"default {show(quick[key])}; --full: {show(full[key])}"

    parser.add_argument(
        "--full",
        action="store_true",
        help="the paper's protocol: lr 1e-4,5e-4,1e-3 x wd 0,0.1, 200 epochs, 12,800/1,280 "
        "instances, width 128, batch 128 (slow: for a GPU)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="architectures, each a MAD shorthand (mA-Sg-mA-Sg), comma-separated layer names "
        "(hyena,swiglu,...) or LABEL=SPEC (default: "
        + ", ".join(f"{k}={v}" for k, v in DEFAULT_ARCHITECTURES.items())
        + ")",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="NAME",
        help="tasks (their baseline setting) or setting names (default: all six tasks)",
    )
    parser.add_argument(
        "--all-settings",
        action="store_true",
        help="every difficulty setting of each task, not only the baseline",
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help=both("lrs"))
    parser.add_argument("--wds", type=float, nargs="+", default=None, help=both("wds"))
    parser.add_argument("--epochs", type=int, default=None, help=both("epochs"))
    parser.add_argument(
        "--num-train-examples",
        type=int,
        default=None,
        help="baseline training instances (train-size settings scale with it); "
        f"default {quick['num_train_examples']}; --full: each setting's own",
    )
    parser.add_argument(
        "--num-test-examples", type=int, default=None, help=both("num_test_examples")
    )
    parser.add_argument("--hidden-size", type=int, default=None, help=both("hidden_size"))
    parser.add_argument("--batch-size", type=int, default=None, help=both("batch_size"))
    parser.add_argument("--output-dir", default="mad_results", metavar="DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace result files in --output-dir"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on a GPU (as the reference), fp32 on CPU",
    )
    parser.add_argument("--seed", type=int, default=12345, help="training seed (init, order)")
    parser.add_argument(
        "--data-seed", type=int, default=None, help="data seed (default: MAD's 12345)"
    )
    parser.add_argument(
        "--data-source",
        choices=["auto", "datasets", "numpy"],
        default="auto",
        help="the datasets builder or the numpy generators (same instances)",
    )
    parser.add_argument(
        "--no-early-stop",
        action="store_true",
        help="train every epoch (the reference stops once test accuracy > 0.999)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (tqdm on stderr)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``hazyzoo eval mad``: run the protocol, print the table, write JSON/TXT/PNG; returns 0."""
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    if not args.overwrite:
        for name in (RESULTS_JSON, RESULTS_TXT, RESULTS_PNG):
            if (out / name).exists():
                raise FileExistsError(f"{out / name} exists (pass --overwrite to replace it)")
    for name in ("epochs", "num_train_examples", "num_test_examples", "hidden_size", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("lrs", "wds"):
        if getattr(args, name) is not None and not getattr(args, name):
            raise ValueError(f"--{name}: the grid is empty")
    preset = "full" if args.full else "quick"
    n_train = args.num_train_examples if args.num_train_examples is not None else "preset"
    results = run_mad(
        args.layers if args.layers is not None else DEFAULT_ARCHITECTURES,
        args.tasks,
        preset=preset,
        all_settings=args.all_settings,
        lrs=args.lrs,
        wds=args.wds,
        epochs=args.epochs,
        num_train_examples=n_train,
        num_test_examples=args.num_test_examples,
        batch_size=args.batch_size,
        hidden_size=args.hidden_size,
        output_dir=None,
        device=args.device,
        seed=args.seed,
        precision=args.precision,
        early_stop_threshold=None if args.no_early_stop else EARLY_STOP_THRESHOLD,
        data_source=args.data_source,
        data_seed=args.data_seed,
        progress=not args.no_progress,
    )
    p = results.protocol
    print(
        f"MAD ({preset}): {len(results.runs)} runs, lr {p['lrs']} x wd {p['wds']}, "
        f"{p['epochs']} epochs, width {p['hidden_size']}, batch {p['batch_size']}, "
        f"{p['device']} {p['precision']}, {results.wall_time_s:.0f} s"
    )
    print(results.table())
    for path in results.write(out):
        print(f"wrote {path}")
    if importlib.util.find_spec("matplotlib") is None:
        print(f"note: matplotlib is not installed; no {RESULTS_PNG}")
    return 0

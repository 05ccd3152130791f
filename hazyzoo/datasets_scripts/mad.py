"""The MAD synthetic task suite (Poli et al. 2024) as a ``datasets`` builder.

One config per task and difficulty setting, as the paper's task configs define them
(athms/mad-lab ``configs/tasks/*.yml``): the baseline (e.g. ``in-context-recall``) and every
single change from it (``in-context-recall-vocab_size-32``, ``...-seq_len-512``,
``...-num_train_examples-800``, ...). Splits ``train`` and ``test`` hold ``input_ids`` and
``labels`` (``-100`` where nothing is predicted; recall tasks at test time score only the
recalled values). Generation is the reference's, instance for instance: one
``numpy.random.default_rng(seed)`` draws the training instances and then, continuing, the test
ones (see :mod:`hazyzoo.datasets_scripts.mad_tasks`).

Selective copying: the reference draws the blank positions from numpy's global RNG (seeded by
its training script), so they do not follow the task's seed alone; here they come from the
task's generator, unless ``reference_rng=True``, which reproduces the released data exactly
(from a private ``RandomState(seed)``; numpy's global state is never touched).

    from hazyzoo.datasets_scripts import load
    data = load("mad", "selective-copying")  # train 12,800 / test 1,280 instances
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from hazyzoo.datasets_scripts import mad_tasks
from hazyzoo.datasets_scripts.mad_tasks import MAD_TASKS

__all__ = ["MAD_TASKS", "Mad", "MadTaskConfig", "mad_config_names"]

_CITATION = """\
@inproceedings{poli2024mechanistic,
  title={Mechanistic Design and Scaling of Hybrid Architectures},
  author={Poli, Michael and Thomas, Armin W. and Nguyen, Eric and Ponnusamy, Pragaash and
          Deiseroth, Bj{\\"o}rn and Kersting, Kristian and Suzuki, Taiji and Hie, Brian and
          Ermon, Stefano and R{\\'e}, Christopher and Zhang, Ce and Massaroli, Stefano},
  booktitle={ICML}, year={2024}
}
"""


@dataclass
class MadTaskConfig(datasets.BuilderConfig):
    """One MAD task at one difficulty setting (defaults: the reference's)."""

    task: str = "in-context-recall"
    vocab_size: int = 16
    seq_len: int = 128
    num_train_examples: int = 12_800
    num_test_examples: int = 1_280
    frac_noise: float = 0.0
    noise_vocab_size: int = 0
    num_tokens_to_copy: int = 0
    k_motif_size: int = 1
    v_motif_size: int = 1
    multi_query: bool = True
    seed: int = 12345
    reference_rng: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the values cannot make instances (also
        run by the builder: datasets applies keyword overrides without ``__post_init__``)."""
        if self.task not in MAD_TASKS:
            raise ValueError(
                f"MadTaskConfig.task must be one of {sorted(MAD_TASKS)}, got {self.task!r}"
            )
        for field in (
            "vocab_size",
            "seq_len",
            "num_train_examples",
            "num_test_examples",
            "noise_vocab_size",
            "num_tokens_to_copy",
            "k_motif_size",
            "v_motif_size",
            "seed",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"MadTaskConfig.{field} must be an int >= 0, got {value!r}")
        if not 0 <= self.frac_noise < 1:
            raise ValueError(f"MadTaskConfig.frac_noise must be in [0, 1), got {self.frac_noise!r}")
        if self.seq_len < 4 or self.seq_len % 2:
            raise ValueError(f"MadTaskConfig.seq_len must be even and >= 4, got {self.seq_len}")
        if self.task == "selective-copying":
            n = self.num_tokens_to_copy
            if n < 1 or self.seq_len < 2 * n + 1 or self.vocab_size < 3:
                raise ValueError(
                    f"selective-copying needs num_tokens_to_copy >= 1, seq_len >= 2 * "
                    f"num_tokens_to_copy + 1 and vocab_size >= 3, got {n}, {self.seq_len}, "
                    f"{self.vocab_size}"
                )
        if self.task == "fuzzy-in-context-recall":
            room = self.seq_len - 2 * (self.k_motif_size + self.v_motif_size)
            if self.k_motif_size < 1 or self.v_motif_size < 1 or room < 1:
                raise ValueError(
                    "fuzzy-in-context-recall needs motif sizes >= 1 and seq_len > 2 * "
                    f"(k_motif_size + v_motif_size), got {self.k_motif_size}, "
                    f"{self.v_motif_size}, {self.seq_len}"
                )
        if self.task.endswith("recall"):
            reserved = 1 if self.task.startswith("fuzzy") else 0
            ns = self.vocab_size - reserved - (0 if self.multi_query else 1) - self.noise_vocab_size
            if ns < 2:
                raise ValueError(
                    f"MadTaskConfig.vocab_size={self.vocab_size} leaves no room for keys and values "
                    f"after {self.noise_vocab_size} noise tokens"
                )
            if self.frac_noise > 0 and self.noise_vocab_size < 1:
                raise ValueError("MadTaskConfig.frac_noise > 0 needs noise_vocab_size >= 1")
        if self.task == "memorization" and self.vocab_size < 5:
            raise ValueError(f"memorization needs vocab_size >= 5, got {self.vocab_size}")

    def instance_fn(self) -> Any:
        """A function ``(rng, is_training) -> (inputs, targets)`` for this task and setting."""
        fields = {k: getattr(self, k) for k in mad_tasks.SETTING_DEFAULTS}
        return mad_tasks.instance_fn(fields)


def _configs() -> list[MadTaskConfig]:
    configs = []
    for task, spec in MAD_TASKS.items():
        configs.append(MadTaskConfig(name=task, task=task, **spec["baseline"]))
        for field, values in spec["changes"].items():
            for value in values:
                settings = {**spec["baseline"], field: value}
                configs.append(MadTaskConfig(name=f"{task}-{field}-{value}", task=task, **settings))
    return configs


def mad_config_names(task: str | None = None) -> list[str]:
    """The builder's config names (of one task, or all)."""
    return [c.name for c in _configs() if task is None or c.task == task]


class Mad(datasets.GeneratorBasedBuilder):
    """MAD's six synthetic tasks, each at its baseline and every difficulty change."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MadTaskConfig
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "in-context-recall"

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        return datasets.DatasetInfo(
            description=f"MAD synthetic task {self.config.task}",
            features=datasets.Features(
                {
                    "input_ids": datasets.Sequence(datasets.Value("int64")),
                    "labels": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            citation=_CITATION,
            homepage="https://github.com/athms/mad-lab",
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # Train first, then test, from one generator (as the reference generates them).
        config = self.config
        make = config.instance_fn()
        rng = np.random.default_rng(config.seed)
        self._instances = {
            "train": [make(rng, True) for _ in range(config.num_train_examples)],
            "test": [make(rng, False) for _ in range(config.num_test_examples)],
        }
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"split": "train"}),
            datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"split": "test"}),
        ]

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (inputs, targets) in enumerate(self._instances[split]):
            yield i, {"input_ids": inputs, "labels": targets}

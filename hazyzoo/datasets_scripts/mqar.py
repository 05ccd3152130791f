"""Multi-query associative recall (MQAR) as a ``datasets`` builder.

MQAR is the synthetic recall task of the Zoology and BASED papers (Arora et al., 2023/2024):
a sequence first lists key-value pairs, then keys seen earlier reappear and the model must
emit the value that was paired with each of them. It separates architectures that can
recall arbitrary earlier tokens (attention) from those with a small fixed state.

Vocabulary layout (``V = vocab_size``):

* ``0`` -- padding / filler token (fills the query region between queries);
* ``1 .. V//2 - 1`` -- keys;
* ``V//2 .. V - 1`` -- values.

Sequence layout (length ``seq_len``)::

    k1 v1 k2 v2 ... kN vN | 0 0 kq vq 0 0 0 kr vr 0 ...
    \\---- kv region -----/ \\-------- query region --------/

Keys are distinct within an example, and so are values. The query region is cut into
``(seq_len - 2N) // 2`` two-token slots; ``num_queries`` distinct kv pairs are asked, each in
its own slot. Following Zoology's ``multiquery_ar``, slot ``g`` (0-based) is drawn with
probability proportional to ``(g + 1) ** (power_a - 1)`` without replacement (a power law:
small ``power_a`` puts most queries close to the kv region, so short gaps between a key's
first and second appearance are common and long ones rare). Zoology calls
``np.random.choice(..., replace=False, p=p)`` per example; this builder draws the same
distribution for a whole batch at once with the Gumbel-top-k trick.

Unlike Zoology, the answer value is also written into ``input_ids`` right after its query key
(teacher forcing), so each example is an ordinary causal-LM sequence. ``labels`` follows the
Hugging Face convention (models shift labels internally): it has the length of ``input_ids``,
is ``-100`` everywhere except at the answer positions ``t`` where ``labels[t] == input_ids[t]``,
which the logits at ``t - 1`` (the query key) must predict.

Generation is deterministic in the config: train and test use the seeds
``SeedSequence([seed, 0])`` and ``SeedSequence([seed, 1])``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np

PAD_TOKEN_ID = 0
IGNORE_INDEX = -100

_GENERATE_BATCH = 1024  # examples generated per vectorised numpy call

_CITATION = """\
@article{arora2023zoology,
  title={Zoology: Measuring and Improving Recall in Efficient Language Models},
  author={Arora, Simran and Eyuboglu, Sabri and Timalsina, Aman and Johnson, Isys and
          Poli, Michael and Zou, James and Rudra, Atri and R{\\'e}, Christopher},
  journal={arXiv:2312.04927}, year={2023}
}
@article{arora2024simple,
  title={Simple linear attention language models balance the recall-throughput tradeoff},
  author={Arora, Simran and Eyuboglu, Sabri and Zhang, Michael and Timalsina, Aman and
          Alberti, Silas and Zinsley, Dylan and Zou, James and Rudra, Atri and
          R{\\'e}, Christopher},
  journal={arXiv:2402.18668}, year={2024}
}
"""


@dataclass
class MqarConfig(datasets.BuilderConfig):
    """One MQAR variant: vocabulary and sequence sizes, kv pairs, split sizes, gap law, seed.

    The defaults are the ``tiny`` variant. ``num_queries`` defaults to ``num_kv_pairs`` (every
    pair is asked once, as in Zoology).
    """

    vocab_size: int = 64
    seq_len: int = 32
    num_kv_pairs: int = 4
    num_queries: int | None = None
    num_train_examples: int = 40_000
    num_test_examples: int = 1_000
    power_a: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    @property
    def queries(self) -> int:
        """Number of queries per example (``num_queries`` or, when unset, ``num_kv_pairs``)."""
        return self.num_kv_pairs if self.num_queries is None else self.num_queries

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the values cannot make MQAR examples."""
        for field in (
            "vocab_size",
            "seq_len",
            "num_kv_pairs",
            "num_train_examples",
            "num_test_examples",
            "seed",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"MqarConfig.{field} must be an int, got {value!r}")
        for field in ("num_train_examples", "num_test_examples", "seed"):
            if getattr(self, field) < 0:
                raise ValueError(f"MqarConfig.{field} must be >= 0, got {getattr(self, field)}")
        if self.num_kv_pairs < 1:
            raise ValueError(f"MqarConfig.num_kv_pairs must be >= 1, got {self.num_kv_pairs}")
        if self.num_queries is not None and (
            isinstance(self.num_queries, bool)
            or not isinstance(self.num_queries, (int, np.integer))
            or not 1 <= self.num_queries <= self.num_kv_pairs
        ):
            raise ValueError(
                f"MqarConfig.num_queries must be None or an int in [1, num_kv_pairs="
                f"{self.num_kv_pairs}], got {self.num_queries!r}"
            )
        num_keys = self.vocab_size // 2 - 1  # token 0 is padding
        num_values = self.vocab_size - self.vocab_size // 2
        if min(num_keys, num_values) < self.num_kv_pairs:
            raise ValueError(
                f"MqarConfig.vocab_size={self.vocab_size} is too small for num_kv_pairs="
                f"{self.num_kv_pairs} distinct keys: keys are 1..vocab_size//2-1 ({num_keys} "
                f"tokens), so vocab_size must be >= {2 * self.num_kv_pairs + 2}"
            )
        slots = (self.seq_len - 2 * self.num_kv_pairs) // 2
        if slots < self.queries:
            raise ValueError(
                f"MqarConfig.seq_len={self.seq_len} cannot hold {self.num_kv_pairs} kv pairs "
                f"(2*num_kv_pairs tokens) plus {self.queries} queries (2 tokens each): "
                f"seq_len must be >= {2 * self.num_kv_pairs + 2 * self.queries}"
            )
        if not isinstance(self.power_a, (int, float)) or not self.power_a > 0:
            raise ValueError(f"MqarConfig.power_a must be a float > 0, got {self.power_a!r}")


def generate_mqar(
    num_examples: int,
    *,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    num_queries: int | None = None,
    power_a: float = 0.01,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Make ``num_examples`` MQAR examples at once; returns ``(input_ids, labels)``.

    ``input_ids`` is int32 and ``labels`` int64, both ``[num_examples, seq_len]``; the layout is
    described in the module docstring. Vectorised: one numpy call per step for the whole batch.
    """
    n, kv = num_examples, num_kv_pairs
    q = kv if num_queries is None else num_queries
    half = vocab_size // 2
    keys = _distinct(rng, n, kv, half - 1) + 1  # keys in 1 .. half-1
    values = _distinct(rng, n, kv, vocab_size - half) + half  # values in half .. V-1

    slots = (seq_len - 2 * kv) // 2
    log_p = (power_a - 1.0) * np.log(np.arange(1, slots + 1, dtype=np.float64))
    gumbel = rng.gumbel(size=(n, slots))
    gaps = _top_k(log_p[None, :] + gumbel, q)  # Plackett-Luce order = sequential draws

    input_ids = np.full((n, seq_len), PAD_TOKEN_ID, dtype=np.int32)
    input_ids[:, 0 : 2 * kv : 2] = keys
    input_ids[:, 1 : 2 * kv : 2] = values
    key_pos = 2 * kv + 2 * gaps
    np.put_along_axis(input_ids, key_pos, keys[:, :q].astype(np.int32), axis=1)
    np.put_along_axis(input_ids, key_pos + 1, values[:, :q].astype(np.int32), axis=1)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(labels, key_pos + 1, values[:, :q], axis=1)
    return input_ids, labels


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, largest first."""
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def _distinct(rng: np.random.Generator, n: int, k: int, pool: int) -> np.ndarray:
    """``[n, k]`` int64: per row ``k`` distinct integers from ``range(pool)`` in random order."""
    return _top_k(rng.random((n, pool)), k).astype(np.int64)


class Mqar(datasets.GeneratorBasedBuilder):
    """Multi-query associative recall (Zoology / BASED) with splits ``train`` and ``test``.

    Configs: ``tiny`` (vocab 64, length 32, 4 kv pairs, 40k/1k examples; a 4-layer d=64 BASED
    reaches ~0.9 recall on it in about a minute on two CPU cores, see :mod:`hazyzoo.demo`) and
    ``zoology`` (vocab 8192, length 256, 64 kv pairs, 100k/3k examples, as in the papers). Any
    field can be overridden through the builder's keyword arguments, e.g.
    ``Mqar(config_name="tiny", num_train_examples=100)``.
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MqarConfig
    BUILDER_CONFIGS = [
        MqarConfig(
            name="tiny",
            version=VERSION,
            description="Small MQAR for demos and tests: vocab 64, length 32, 4 kv pairs.",
            vocab_size=64,
            seq_len=32,
            num_kv_pairs=4,
            num_train_examples=40_000,
            num_test_examples=1_000,
        ),
        MqarConfig(
            name="zoology",
            version=VERSION,
            description="The papers' MQAR setting: vocab 8192, length 256, 64 kv pairs.",
            vocab_size=8192,
            seq_len=256,
            num_kv_pairs=64,
            num_train_examples=100_000,
            num_test_examples=3_000,
        ),
    ]
    DEFAULT_CONFIG_NAME = "tiny"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Keyword overrides are set on a copy of the named config after construction, so
        # validate again here rather than only in MqarConfig.__post_init__.
        self.config.validate()

    def _info(self) -> datasets.DatasetInfo:
        length = self.config.seq_len
        return datasets.DatasetInfo(
            description=__doc__,
            features=datasets.Features(
                {
                    "input_ids": datasets.List(datasets.Value("int32"), length=length),
                    "labels": datasets.List(datasets.Value("int64"), length=length),
                }
            ),
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list:
        cfg = self.config
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TRAIN,
                gen_kwargs={"num_examples": cfg.num_train_examples, "split_index": 0},
            ),
            datasets.SplitGenerator(
                name=datasets.Split.TEST,
                gen_kwargs={"num_examples": cfg.num_test_examples, "split_index": 1},
            ),
        ]

    def _generate_examples(self, num_examples: int, split_index: int) -> Iterator[tuple[int, dict]]:
        cfg = self.config
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, split_index]))
        for start in range(0, num_examples, _GENERATE_BATCH):
            count = min(_GENERATE_BATCH, num_examples - start)
            input_ids, labels = generate_mqar(
                count,
                vocab_size=cfg.vocab_size,
                seq_len=cfg.seq_len,
                num_kv_pairs=cfg.num_kv_pairs,
                num_queries=cfg.num_queries,
                power_a=cfg.power_a,
                rng=rng,
            )
            for i in range(count):
                yield start + i, {"input_ids": input_ids[i], "labels": labels[i]}

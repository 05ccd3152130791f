"""The six MAD synthetic tasks' instance generators (Poli et al. 2024, "Mechanistic design and
scaling of hybrid architectures"), in plain numpy, datasets-free.

Each generator draws one instance from a ``numpy.random.Generator`` in exactly the order the
released generators (athms/mad-lab, ``mad/data/instances.py``) draw, so a build with the same
seed reproduces the reference instance for instance (``tests/datasets_scripts/test_mad.py``
checks the golden data). An instance is ``(inputs, targets)`` int64 arrays; ``-100`` marks
positions without a target.

* **in-context recall** (and **noisy** with ``frac_noise > 0``): key-value pairs, the last key
  asked again; with ``multi_query`` every repeated key is a target.
* **fuzzy in-context recall**: keys and values are motifs of 1..``k_motif_size`` /
  1..``v_motif_size`` tokens (test: keys of exactly ``k_motif_size``).
* **selective copying**: ``num_tokens_to_copy`` tokens scattered among blanks, to be copied after
  the copy token. The reference draws the blank positions from numpy's *global* legacy RNG;
  ``reference_rng=True`` reproduces that from a private ``RandomState(seed)`` (nothing global is
  touched), the default draws them from the instance generator like every other draw.
* **compression**: random tokens then a compression token; the target is the input itself.
* **memorization**: a fixed key-value map (its own seeded generator); keys each followed by the
  insert token, whose target is the key's value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "MAD_TASKS",
    "SETTING_DEFAULTS",
    "compression_instance",
    "fuzzy_in_context_recall_instance",
    "in_context_recall_instance",
    "instance_fn",
    "memorization_instance",
    "memorization_kv_map",
    "selective_copying_instance",
]

IGNORE_INDEX = -100
_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


def _shift(inputs: list, targets: list, is_training: bool) -> tuple[np.ndarray, np.ndarray]:
    """Next-token form: ``(inputs[:-1], inputs[1:])`` in training, ``(inputs[:-1],
    targets[1:])`` at test (only the recall targets count)."""
    x = np.asarray(inputs, dtype=np.int64)
    y = x[1:] if is_training else np.asarray(targets, dtype=np.int64)[1:]
    return x[:-1], y


def in_context_recall_instance(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    is_training: bool,
    multi_query: bool = True,
    frac_noise: float = 0.0,
    noise_vocab_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One (noisy) in-context recall instance, length ``seq_len - 1`` (see the module doc)."""
    ns = (vocab_size if multi_query else vocab_size - 1) - noise_vocab_size
    keys, values = np.arange(ns // 2), np.arange(ns // 2, ns)
    noise = np.arange(ns, ns + noise_vocab_size)
    inputs: list = []
    targets: list = []
    presented: dict = {}  # key -> value, in first-insertion order
    protected = rng.choice(seq_len // 2)
    for slot in range(seq_len // 2 - 1):
        if frac_noise > 0 and slot != protected and rng.random() < frac_noise:
            inputs.extend(rng.choice(noise, size=2))
            targets.extend([IGNORE_INDEX, IGNORE_INDEX])
            continue
        k = rng.choice(keys)
        seen = k in presented
        v = presented[k] if seen else rng.choice(values)
        inputs.extend([k, v])
        targets.extend([IGNORE_INDEX, v if seen and multi_query else IGNORE_INDEX])
        presented[k] = v
    k_probe = rng.choice(list(presented))
    v_probe = presented[k_probe]
    if not multi_query:
        inputs.append(vocab_size - 1)
        targets.append(IGNORE_INDEX)
    inputs.extend([k_probe, v_probe])
    targets.extend([IGNORE_INDEX, v_probe])
    return _shift(inputs, targets, is_training)


def _motif_table(rng: np.random.Generator, vocab: np.ndarray, size: int) -> np.ndarray:
    """All ordered ``size``-tuples of distinct tokens of ``vocab`` (lexicographic), shuffled
    by ``rng``: ``[n, size]``. The shuffle draws what shuffling the list of tuples draws."""
    key = (int(vocab[0]), len(vocab), size)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS[key] = np.array(list(itertools.permutations(vocab, size)), dtype=np.int64)
    table = _PERMUTATIONS[key]
    order = np.arange(len(table))
    rng.shuffle(order)
    return table[order]


def _pick(rng: np.random.Generator, table: np.ndarray) -> tuple:
    """One row of a motif table, as ``rng.choice(list_of_tuples)`` draws it."""
    return tuple(table[rng.integers(0, len(table))])


def fuzzy_in_context_recall_instance(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    is_training: bool,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    multi_query: bool = True,
    frac_noise: float = 0.0,
    noise_vocab_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One fuzzy in-context recall instance, left-padded to length ``seq_len``."""
    ns = (vocab_size - 1 if multi_query else vocab_size - 2) - noise_vocab_size
    keys, values = np.arange(ns // 2), np.arange(ns // 2, ns)
    noise = np.arange(ns, ns + noise_vocab_size)
    pad = vocab_size - 1 if multi_query else vocab_size - 2
    k_sizes = list(range(1, k_motif_size + 1)) if is_training else [k_motif_size]
    v_sizes = list(range(1, v_motif_size + 1))
    key_tables = {m: _motif_table(rng, keys, m) for m in k_sizes}
    value_tables = {m: _motif_table(rng, values, m) for m in v_sizes}

    def key_size() -> int:
        return int(rng.choice(k_sizes)) if is_training else k_motif_size

    k_probe_size = key_size()
    v_probe_size = int(rng.choice(v_sizes))
    k_probe = _pick(rng, key_tables[k_probe_size])
    v_probe = _pick(rng, value_tables[v_probe_size])
    probe_len = k_probe_size + v_probe_size
    probe_idx = rng.choice(seq_len - 2 * probe_len)
    inputs: list = []
    targets: list = []
    kv: dict = {}  # key motif -> value motif
    presented: set = set()
    probe_added = False
    while len(inputs) < seq_len - probe_len - (k_motif_size + v_motif_size):
        k_size = key_size()
        v_size = int(rng.choice(v_sizes))
        if len(inputs) >= probe_idx and not probe_added:
            inputs.extend([*k_probe, *v_probe])
            targets.extend([IGNORE_INDEX] * probe_len)
            kv[k_probe] = v_probe
            presented.add(k_probe)
            probe_added = True
            continue
        if frac_noise > 0 and rng.random() < frac_noise:
            inputs.extend(rng.choice(noise, size=k_size + v_size))
            targets.extend([IGNORE_INDEX] * (k_size + v_size))
            continue
        k = _pick(rng, key_tables[k_size])
        if k == k_probe:
            v = v_probe
            probe_added = True
        elif k in kv:
            v = kv[k]
        else:
            v = _pick(rng, value_tables[v_size])
            kv[k] = v
        inputs.extend([*k, *v])
        seen = k in presented
        targets.extend([IGNORE_INDEX] * k_size)
        targets.extend(list(v) if seen and multi_query else [IGNORE_INDEX] * len(v))
        presented.add(k)
    if not multi_query:
        inputs.append(vocab_size - 1)
        targets.append(IGNORE_INDEX)
    inputs.extend([*k_probe, *v_probe])
    targets.extend([IGNORE_INDEX] * k_probe_size + list(v_probe))
    n_pad = seq_len + 1 - len(inputs)
    inputs = [pad] * n_pad + inputs
    targets = [IGNORE_INDEX] * n_pad + targets
    return _shift(inputs, targets, is_training)


def compression_instance(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, noise_vocab_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``seq_len - 1`` random tokens and the compression token ``vocab_size - 1``; the target
    is the input (an autoencoder reconstructs it)."""
    tokens = rng.choice(np.arange(vocab_size - 1 - noise_vocab_size), size=seq_len - 1)
    inputs = np.append(tokens, vocab_size - 1).astype(np.int64)
    return inputs, inputs.copy()


def memorization_kv_map(vocab_size: int, seed: int) -> dict[int, int]:
    """The task's fixed key -> value map, from its own ``default_rng(seed)``: keys
    ``0 .. n//2 - 1`` and values ``n//2 .. n - 1`` (``n = vocab_size - 1``), each list shuffled,
    paired in shuffled order (dict order = the shuffled key order)."""
    kv_rng = np.random.default_rng(seed)
    n = vocab_size - 1
    keys = _motif_table(kv_rng, np.arange(n // 2), 1)[:, 0]
    values = _motif_table(kv_rng, np.arange(n // 2, n), 1)[:, 0]
    return {int(k): int(v) for k, v in zip(keys, values, strict=False)}


def memorization_instance(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, kv_map: dict[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``seq_len / 2`` keys, each followed by the insert token ``vocab_size - 1``, whose target
    is the key's value in ``kv_map``."""
    keys = list(kv_map)
    rng.choice(seq_len // 2)  # the reference's noise guard: drawn, unused without noise
    inputs: list = []
    targets: list = []
    for _ in range(seq_len // 2):
        k = keys[rng.integers(0, len(keys))]
        inputs.extend([k, vocab_size - 1])
        targets.extend([IGNORE_INDEX, kv_map[k]])
    return np.asarray(inputs, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def selective_copying_instance(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    num_tokens_to_copy: int,
    blank_rng: np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_tokens_to_copy`` tokens with blanks (``vocab_size - 2``) inserted among them, the
    copy token ``vocab_size - 1``, then blanks; the targets are the tokens, in order, at the
    end. ``blank_rng``: a legacy ``RandomState`` for the blank positions (the reference's global
    RNG); None draws them from ``rng``."""
    n = num_tokens_to_copy
    blank, copy = vocab_size - 2, vocab_size - 1
    to_copy = rng.choice(np.arange(vocab_size - 2), size=n)
    count = seq_len - 2 * n - 1
    if blank_rng is not None:
        where = blank_rng.randint(0, n, size=count)
    else:
        where = rng.integers(0, n, size=count)
    inputs = np.insert(to_copy, where, blank)
    inputs = np.concatenate([inputs, [copy], np.full(n, blank)]).astype(np.int64)
    targets = np.concatenate([np.full(seq_len - n, IGNORE_INDEX), to_copy]).astype(np.int64)
    return inputs, targets


# Baselines and their one-at-a-time changes (the paper's task configs; other fields keep the
# reference's defaults: no noise, motifs of 1, multi-query, 12,800 / 1,280 instances, seed 12345).
MAD_TASKS: dict[str, dict[str, Any]] = {
    "in-context-recall": dict(
        baseline=dict(vocab_size=16, seq_len=128, num_train_examples=12800, multi_query=True),
        changes=dict(
            vocab_size=[32, 64, 128],
            seq_len=[256, 512, 1024],
            num_train_examples=[6400, 3200, 1600, 800],
        ),
    ),
    "fuzzy-in-context-recall": dict(
        baseline=dict(
            vocab_size=16,
            seq_len=128,
            num_train_examples=12800,
            multi_query=True,
            k_motif_size=3,
            v_motif_size=3,
        ),
        changes=dict(
            vocab_size=[32, 64, 128],
            seq_len=[256, 512, 1024],
            num_train_examples=[6400, 3200, 1600, 800],
        ),
    ),
    "noisy-in-context-recall": dict(
        baseline=dict(
            vocab_size=32,
            noise_vocab_size=16,
            seq_len=128,
            num_train_examples=12800,
            multi_query=True,
            frac_noise=0.2,
        ),
        changes=dict(
            vocab_size=[48, 80, 144],
            seq_len=[256, 512, 1024],
            num_train_examples=[6400, 3200, 1600, 800],
            frac_noise=[0.4, 0.6, 0.8],
        ),
    ),
    "selective-copying": dict(
        baseline=dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train_examples=12800),
        changes=dict(
            vocab_size=[32, 64, 128],
            seq_len=[512, 1024],
            num_train_examples=[6400, 3200, 1600, 800],
            num_tokens_to_copy=[32, 64, 96],
        ),
    ),
    "compression": dict(
        baseline=dict(vocab_size=16, seq_len=32, num_train_examples=12800),
        changes=dict(
            vocab_size=[32, 64, 128],
            seq_len=[64, 128, 256],
            num_train_examples=[6400, 3200, 1600, 800],
        ),
    ),
    "memorization": dict(
        baseline=dict(vocab_size=256, seq_len=32, num_train_examples=256),
        changes=dict(vocab_size=[512, 1024, 2048, 4096, 8192]),
    ),
}

# The generator fields of a setting and their defaults (the reference's; the builder config
# hazyzoo.datasets_scripts.mad.MadTaskConfig has the same fields).
SETTING_DEFAULTS: dict[str, Any] = dict(
    task="in-context-recall",
    vocab_size=16,
    seq_len=128,
    num_train_examples=12_800,
    num_test_examples=1_280,
    frac_noise=0.0,
    noise_vocab_size=0,
    num_tokens_to_copy=0,
    k_motif_size=1,
    v_motif_size=1,
    multi_query=True,
    seed=12345,
    reference_rng=False,
)


def instance_fn(fields: Mapping[str, Any]) -> Callable[[np.random.Generator, bool], tuple]:
    """``(rng, is_training) -> (inputs, targets)`` for one setting (``fields`` as in
    :data:`SETTING_DEFAULTS`): what the ``mad`` builder and ``hazyzoo eval mad`` generate from."""
    task = fields["task"]
    size = dict(vocab_size=fields["vocab_size"], seq_len=fields["seq_len"])
    noise = dict(frac_noise=fields["frac_noise"], noise_vocab_size=fields["noise_vocab_size"])
    if task in ("in-context-recall", "noisy-in-context-recall"):
        return lambda rng, training: in_context_recall_instance(
            rng, is_training=training, multi_query=fields["multi_query"], **size, **noise
        )
    if task == "fuzzy-in-context-recall":
        return lambda rng, training: fuzzy_in_context_recall_instance(
            rng,
            is_training=training,
            k_motif_size=fields["k_motif_size"],
            v_motif_size=fields["v_motif_size"],
            multi_query=fields["multi_query"],
            **size,
            **noise,
        )
    if task == "compression":
        return lambda rng, training: compression_instance(
            rng, noise_vocab_size=fields["noise_vocab_size"], **size
        )
    if task == "memorization":
        kv_map = memorization_kv_map(fields["vocab_size"], fields["seed"])
        return lambda rng, training: memorization_instance(rng, kv_map=kv_map, **size)
    if task == "selective-copying":
        blanks = np.random.RandomState(fields["seed"]) if fields["reference_rng"] else None
        return lambda rng, training: selective_copying_instance(
            rng, num_tokens_to_copy=fields["num_tokens_to_copy"], blank_rng=blanks, **size
        )
    raise ValueError(f"unknown MAD task {task!r}")

"""A small arithmetic word-problem set, generated locally, for repeated-sampling evaluation.

Large Language Monkeys (Brown et al. 2024) measures *coverage*: the fraction of problems that
at least one of ``k`` sampled answers solves. This module gives that evaluation a default
problem set and a model to run it on that need no download:

- :func:`make_arithmetic_problems`: word problems such as ``"Tom has 3 apples and buys 4 more.
  How many apples does Tom have?"`` with small integer answers, as dicts with ``problem_id``,
  ``question``, ``prompt`` (the question plus :data:`ANSWER_CUE`) and ``gt_answer``;
- :func:`train_rows`: prompt/response rows (response ``" 7"``; the trainer appends eos) to train
  a tiny model on;
- :func:`build_arithmetic_tokenizer`: a word-level tokenizer covering every piece the
  generator can write (numbers are whole tokens);
- :func:`train_tiny_model`: a tiny Llama trained through :func:`hazyzoo.train.train`, weak
  enough that one sample is often wrong while many samples usually hold the answer;
- :func:`check_answer`: the verifier for these problems (first integer of the completion).

Every question belongs to one split, ``"train"`` or ``"test"``, by a hash of its text, so
held-out problems can never appear in training rows, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ANSWER_CUE",
    "ITEMS",
    "NAMES",
    "OPERATIONS",
    "build_arithmetic_tokenizer",
    "check_answer",
    "make_arithmetic_problems",
    "max_answer",
    "question_split",
    "train_rows",
    "train_tiny_model",
    "vocabulary",
]

ANSWER_CUE = "\nAnswer:"
NAMES = ("Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Jack", "Emma")
ITEMS = ("apples", "pears", "books", "coins", "cards", "stamps", "shells", "marbles")
# Each operation: its question template and how its answer follows from the operands.
_TEMPLATES = {
    "add": "{name} has {a} {item} and buys {b} more. How many {item} does {name} have?",
    "sub": "{name} has {a} {item} and gives {b} to {other}. How many {item} does {name} have left?",
    "mul": "{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?",
    "add_sub": (
        "{name} has {a} {item}, buys {b} more and gives {c} to {other}. "
        "How many {item} does {name} have now?"
    ),
}
OPERATIONS = tuple(_TEMPLATES)
SPLITS = ("train", "test")
# One question in eight is held out: the test split.
_TEST_FRACTION_DENOMINATOR = 8
_MUL_MAX_FACTOR = 5
_SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
# One piece per word or number (with its leading space, if any), punctuation mark, newline or
# lone space; decoding concatenates pieces, so decode(encode(text)) == text.
_PIECE_PATTERN = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]|\n| "
_MAX_ATTEMPTS_PER_PROBLEM = 200


# --------------------------------------------------------------------------------------------
# problems


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {allowed}, got {value}")
    return int(value)


def _check_operations(operations: Sequence[str]) -> tuple[str, ...]:
    if isinstance(operations, str):
        raise TypeError(f"operations must be a sequence of names, not one str {operations!r}")
    ops = tuple(operations)
    if not ops:
        raise ValueError(f"operations is empty; choose from {list(OPERATIONS)}")
    for op in ops:
        if op not in _TEMPLATES:
            raise ValueError(f"unknown operation {op!r}; choose from {list(OPERATIONS)}")
    return ops


def max_answer(max_operand: int) -> int:
    """The largest number any problem with operands up to ``max_operand`` contains."""
    _check_int("max_operand", max_operand, 2, 50)
    return max(2 * max_operand, _MUL_MAX_FACTOR * min(max_operand, _MUL_MAX_FACTOR))


def question_split(question: str) -> str:
    """``"test"`` for one question in eight (by a hash of its text), ``"train"`` otherwise:
    a fixed split of the question space, so train and test questions never coincide."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if digest[0] % _TEST_FRACTION_DENOMINATOR == 0 else "train"


def _draw(rng: np.random.Generator, op: str, max_operand: int) -> tuple[str, int]:
    """One question of operation ``op`` and its answer."""
    name, other = (NAMES[i] for i in rng.choice(len(NAMES), size=2, replace=False))
    item = ITEMS[int(rng.integers(len(ITEMS)))]
    c = 0
    if op == "add":
        a, b = (int(x) for x in rng.integers(2, max_operand + 1, size=2))
        answer = a + b
    elif op == "sub":
        a = int(rng.integers(2, max_operand + 1))
        b = int(rng.integers(1, a + 1))
        answer = a - b
    elif op == "mul":
        top = min(max_operand, _MUL_MAX_FACTOR)
        a, b = (int(x) for x in rng.integers(2, top + 1, size=2))
        answer = a * b
    else:  # add_sub
        a, b = (int(x) for x in rng.integers(2, max_operand + 1, size=2))
        c = int(rng.integers(1, a + b + 1))
        answer = a + b - c
    question = _TEMPLATES[op].format(name=name, other=other, item=item, a=a, b=b, c=c)
    return question, answer


def _generate(
    num: int,
    seed: int,
    split: str,
    max_operand: int,
    operations: Sequence[str],
    *,
    distinct: bool = True,
) -> list[tuple[str, int]]:
    """``num`` (question, answer) pairs of ``split`` (``distinct``: no question twice),
    deterministic in the arguments; operations take turns so each is equally represented."""
    _check_int("seed", seed, 0)
    _check_int("max_operand", max_operand, 2, 50)
    ops = _check_operations(operations)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i in range(num):
        op = ops[i % len(ops)]
        for _ in range(_MAX_ATTEMPTS_PER_PROBLEM):
            question, answer = _draw(rng, op, max_operand)
            if question_split(question) == split and not (distinct and question in seen):
                break
        else:
            raise ValueError(
                f"could not draw {num} distinct {split!r} problems with max_operand="
                f"{max_operand} and operations {list(ops)} (got {len(out)}): ask for fewer "
                "problems or raise max_operand"
            )
        seen.add(question)
        out.append((question, answer))
    return out


def make_arithmetic_problems(
    num_problems: int,
    seed: int = 0,
    *,
    split: str = "test",
    max_operand: int = 9,
    operations: Sequence[str] = OPERATIONS,
) -> list[dict[str, str]]:
    """``num_problems`` distinct word problems of ``split`` (default the held-out ``"test"``),
    deterministic in the arguments.

    Operands run from 2 to ``max_operand`` (1 and up for what is given away; factors of
    ``"mul"`` up to 5); answers are integers in ``[0, max_answer(max_operand)]``. Each problem
    is ``{"problem_id", "question", "prompt", "gt_answer"}`` with ``prompt = question +
    ANSWER_CUE`` and ``gt_answer`` the answer as a decimal string; ids are
    ``"arith-<split>-<seed>-<index>"``.
    """
    num_problems = _check_int("num_problems", num_problems, 1)
    pairs = _generate(num_problems, seed, split, max_operand, operations)
    return [
        {
            "problem_id": f"arith-{split}-{seed}-{i:05d}",
            "question": question,
            "prompt": question + ANSWER_CUE,
            "gt_answer": str(answer),
        }
        for i, (question, answer) in enumerate(pairs)
    ]


def train_rows(
    num: int,
    seed: int = 1,
    *,
    max_operand: int = 9,
    operations: Sequence[str] = OPERATIONS,
) -> list[dict[str, str]]:
    """``num`` training rows ``{"prompt", "response"}`` drawn from the ``"train"`` split (a
    question may repeat: the split holds only ~900 ``"mul"`` questions): the prompt as in
    :func:`make_arithmetic_problems` and the response ``" <answer>"`` (the trainer appends
    eos, so a trained model answers and stops)."""
    num = _check_int("num", num, 1)
    pairs = _generate(num, seed, "train", max_operand, operations, distinct=False)
    return [{"prompt": q + ANSWER_CUE, "response": f" {a}"} for q, a in pairs]


_INTEGER = re.compile(r"-?\d+")


def check_answer(completion: str, problem: dict[str, Any]) -> tuple[bool | None, str | None]:
    """The verifier for these problems: the first integer in ``completion`` against
    ``problem["gt_answer"]``; ``(False, None)`` when the completion holds no integer.
    Fits :func:`hazyzoo.evaluation.sampling.sample_problems`' ``verifier`` hook."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    if "gt_answer" not in problem:
        raise ValueError(f"problem {problem.get('problem_id')!r} has no 'gt_answer'")
    match = _INTEGER.search(completion)
    if match is None:
        return False, None
    answer = str(int(match.group()))
    return answer == str(problem["gt_answer"]).strip(), answer


# --------------------------------------------------------------------------------------------
# tokenizer


def vocabulary(max_operand: int = 9) -> list[str]:
    """Every word, number and punctuation mark the generator can write (each a tokenizer
    piece without its leading space), in a fixed order."""
    from tokenizers import Regex, pre_tokenizers

    splitter = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")
    texts = [*(t.replace("{", " ").replace("}", " ") for t in _TEMPLATES.values()), ANSWER_CUE]
    words: list[str] = []
    for text in texts:
        for piece, _ in splitter.pre_tokenize_str(text):
            piece = piece.strip(" ")
            # template fields become words like "name": harmless, but keep the list exact
            if piece and piece not in {"name", "other", "item", "a", "b", "c"}:
                words.append(piece)
    words += [*NAMES, *ITEMS, *(str(n) for n in range(max_answer(max_operand) + 1))]
    return list(dict.fromkeys(w for w in words if w != "\n"))


def build_arithmetic_tokenizer(directory: str | Path | None = None, *, max_operand: int = 9) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over :func:`vocabulary` (each piece with and
    without its leading space, plus ``"\\n"``, ``" "``, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2),
    built offline; saved to ``directory`` when given. Numbers are whole tokens, so an answer is
    one token; ``decode(encode(text)) == text`` for any text the generator writes."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    token_to_id: dict[str, int] = {}
    for piece in [*_SPECIAL_TOKENS.values(), "\n", " "]:
        token_to_id.setdefault(piece, len(token_to_id))
    for word in vocabulary(max_operand):
        token_to_id.setdefault(word, len(token_to_id))
        token_to_id.setdefault(" " + word, len(token_to_id))
    backend = Tokenizer(models.WordLevel(vocab=token_to_id, unk_token=_SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(_SPECIAL_TOKENS.values()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **_SPECIAL_TOKENS
    )
    if directory is not None:
        tokenizer.save_pretrained(str(directory))
    return tokenizer


# --------------------------------------------------------------------------------------------
# a tiny model


def train_tiny_model(
    output_dir: str | Path,
    *,
    steps: int = 100,
    seed: int = 0,
    num_train_rows: int = 4000,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_operand: int = 9,
    progress: bool = True,
    architecture: str = "llama",
) -> dict[str, Any]:
    """Train a tiny Llama (``architecture="llama"``) or a tiny BASED (``"based"``, the zoo's
    own; sampled with plain ``generate``, since Hydragen needs softmax attention) on :func:`train_rows` with :func:`hazyzoo.train.train`; saves the
    model and its tokenizer to ``output_dir`` (load with ``AutoModelForCausalLM`` /
    ``AutoTokenizer``) and returns train's results (``model``, ``tokenizer``,
    ``last_loss``, ...).

    A Llama (from :func:`hazyzoo.demo.make_llama_config`), so that sampling can use Hydragen.
    Cosine schedule with 10% warmup. With the defaults (100 steps of 32 rows) it trains in
    about 50 s on two busy CPU cores; on 50 held-out problems, 64 samples each at temperature
    1.0, a single sample is right 17% of the time while coverage is 63% at k=8 and 98% at
    k=64 (at temperature 0.7: 23%, 66%, 96%): the repeated-sampling effect at toy scale.
    """
    from hazyzoo.demo import make_based_config, make_llama_config
    from hazyzoo.train import TrainConfig, train

    if architecture not in ("llama", "based"):
        raise ValueError(f"architecture must be 'llama' or 'based', got {architecture!r}")

    steps = _check_int("steps", steps, 1)
    _check_int("num_train_rows", num_train_rows, 1)
    _check_int("batch_size", batch_size, 1)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    rows = train_rows(num_train_rows, seed=seed + 1, max_operand=max_operand)
    with tempfile.TemporaryDirectory(prefix="hazyzoo-arith-") as tmp:
        tmp_path = Path(tmp)
        tokenizer = build_arithmetic_tokenizer(tmp_path / "tokenizer", max_operand=max_operand)
        longest = max(
            len(tokenizer(r["prompt"] + r["response"])["input_ids"]) for r in rows
        )  # + eos, + room for sampling past the answer
        if architecture == "llama":
            config = make_llama_config(
                len(tokenizer),
                max_position_embeddings=2 * longest + 16,
                hidden_size=hidden_size,
                num_layers=num_layers,
                num_heads=num_heads,
            )
        else:
            config = make_based_config(
                len(tokenizer),
                hidden_size=hidden_size,
                num_layers=4,  # conv, linear attention, sliding window, conv
                num_heads=num_heads,
                feature_dim=16,
                sliding_window=8,
                initializer_range=0.05,
            )
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.save_pretrained(tmp_path / "config")
        data = tmp_path / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        results = train(
            TrainConfig(
                model=f"config:{tmp_path / 'config'}",
                tokenizer=str(tmp_path / "tokenizer"),
                dataset=str(data),
                output_dir=str(output_dir),
                prompt_column="prompt",
                response_column="response",
                cache_dir=str(tmp_path / "cache"),
                max_steps=steps,
                per_device_train_batch_size=batch_size,
                learning_rate=learning_rate,
                lr_scheduler_type="cosine",
                warmup_steps=max(1, steps // 10),
                logging_steps=max(1, steps // 10),
                save_steps=0,
                seed=seed,
                disable_tqdm=not progress,
                overwrite_output_dir=True,
            )
        )
    model = results["model"]
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.save_pretrained(str(output_dir))
    model.eval()
    return results

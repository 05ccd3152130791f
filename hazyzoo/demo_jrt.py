"""JRT-Prompt in miniature on a CPU: does reading the context twice help a small recurrent LM?

:func:`run_recall_experiment` trains a small BASED model (or any causal LM from
``model_factory``) with ``transformers.Trainer`` on synthetic key-value documents
(:mod:`hazyzoo.evaluation.recall`), then evaluates held-out documents with the plain prompt
(``"{doc} {key}:"``) and with JRT-Prompt (``"Information about {key}. {doc}\\n{doc} {key}:"``)
using the recall runner, and reports both accuracies.

The set-up follows the paper's argument (Arora et al. 2024, "Just read twice"): a recurrent
model's state has a fixed size, so when a document holds more facts than the state can keep,
the model must choose what to store before it knows the question. The training text holds both
prompt forms with their answers (so neither form is out of distribution); training documents
use another seed than the evaluation ones; documents hold many facts and the model's linear
attention has a small feature map (a small state). Evaluation uses the paper's protocol
(greedy, until ``"\\n"``, at most 48 new tokens, case-insensitive containment). Whatever the
figures, they are what was measured: nothing is tuned on the evaluation documents.

Measured (2026-12-02, CPU, 2 threads): with these defaults (8 facts, 700 steps, ~70 s of
training; labels on the answer and on the JRT prompt's second read) and with variants up to
3000 steps, learning rate 3e-3 or 1e-2, feature_dim 4, 8 or 16 and 4, 8 or 16 facts, the model
learns the format but never leaves the loss plateau of in-context recall, and both prompt
forms score 0.00-0.03 (below the 1/facts of guessing a value from the document). At this
budget the miniature neither supports nor refutes the paper's claim; it runs the pipeline
(data, Trainer, runner, save) end to end.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    Trainer,
    set_seed,
)

from hazyzoo.demo import demo_training_arguments, make_based_config
from hazyzoo.evaluation.recall import (
    evaluate_recall,
    format_table,
    synthetic_documents,
    synthetic_examples,
    synthetic_tokenizer,
)
from hazyzoo.jrt import read_once, read_twice

DEFAULT_SETTINGS: dict[str, Any] = {
    "facts_per_doc": 8,
    "num_train_docs": 4000,
    "num_eval_docs": 200,
    "hidden_size": 64,
    "num_layers": 4,
    "num_heads": 2,
    "feature_dim": 4,
    "sliding_window": 4,
    "initializer_range": 0.05,
    "max_steps": 700,
    "batch_size": 32,
    "learning_rate": 1e-2,
    "warmup_ratio": 0.1,
    "weight_decay": 0.1,
    "eval_batch_size": 50,
    "max_new_tokens": 48,
    "num_threads": 2,
}
QUICK_SETTINGS: dict[str, Any] = {
    **DEFAULT_SETTINGS,
    "num_train_docs": 600,
    "num_eval_docs": 40,
    "max_steps": 80,
    "eval_batch_size": 40,
}
# Training documents come from seed + TRAIN_SEED_OFFSET, evaluation ones from seed.
TRAIN_SEED_OFFSET = 1_000_003


def make_recall_model(
    vocab_size: int,
    pad_id: int,
    eos_id: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 2,
    feature_dim: int = 4,
    sliding_window: int = 4,
    initializer_range: float = 0.05,
) -> PreTrainedModel:
    """The default model: a small BASED with two linear-attention layers of a small feature map
    (``1 + d + d**2`` features per head) and a short sliding window, so that its state cannot
    hold every fact of a long document."""
    from hazyzoo import BasedForCausalLM

    config = make_based_config(
        vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        feature_dim=feature_dim,
        sliding_window=sliding_window,
        initializer_range=initializer_range,
        linear_attention_layers=list(range(1, num_layers, 2)),
        sliding_window_layers=list(range(2, num_layers, 4)),
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    return BasedForCausalLM(config)


def training_texts(num_docs: int, facts_per_doc: int, seed: int) -> list[tuple[str, str]]:
    """Training pairs (prompt, answer): for every document, its plain prompt and its JRT prompt,
    each with the answer and ``"\\n"`` (the stop string), so both prompt forms are in
    distribution."""
    pairs = []
    for doc in synthetic_documents(num_docs, facts_per_doc, seed=seed):
        answer = f" {doc['value']}\n"
        pairs.append((read_once(doc["context"], doc["key"]), answer))
        pairs.append((read_twice(doc["context"], doc["key"]), answer))
    return pairs


class _TokenizedTexts(torch.utils.data.Dataset):
    """Tokenized (prompt, answer) pairs. Labels: the answer tokens and, in a JRT prompt, the
    second read of the document (predictable from the first: the copying that recall needs);
    a first read is random keys and values, whose prediction is noise that drowns the signal."""

    def __init__(self, tokenizer: Any, pairs: list[tuple[str, str]]) -> None:
        self.items = []
        newline = tokenizer.convert_tokens_to_ids("\n")
        for prompt, answer in pairs:
            ids = tokenizer(prompt + answer)["input_ids"]
            first = len(tokenizer(prompt)["input_ids"])
            if newline in ids[:first]:  # the JRT prompt: score from the second read on
                first = ids.index(newline) + 1
            self.items.append({"input_ids": ids, "labels": [-100] * first + ids[first:]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_recall_experiment(
    output_dir: str | Path | None = None,
    *,
    seed: int = 0,
    quick: bool = False,
    model_factory: Callable[[int, int, int], PreTrainedModel] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a small recurrent LM on synthetic recall documents, then compare plain prompts and
    JRT-Prompt on held-out documents; returns (and prints) the accuracies.

    ``output_dir`` (a temporary folder when None) receives ``model/`` (the trained model and
    its tokenizer, loadable by ``hazyzoo eval recall --model``) and ``jrt_recall_results.json``.
    ``quick`` shrinks the run for smoke tests; ``model_factory(vocab_size, pad_id, eos_id)``
    replaces the default :func:`make_recall_model`; ``overrides`` replace entries of
    :data:`DEFAULT_SETTINGS`. The result has ``accuracy`` ({"plain", "jrt"}), ``count``,
    ``jrt_minus_plain``, ``params``, ``model_class``, ``train_loss``, ``train_seconds``,
    ``eval_seconds``, ``wall_seconds``, ``settings`` and ``seed``.
    """
    start = time.perf_counter()
    settings = dict(QUICK_SETTINGS if quick else DEFAULT_SETTINGS)
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise TypeError(f"unknown settings {unknown}; valid: {sorted(settings)}")
    settings.update(overrides)
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"setting {name} must be a positive number, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    output_dir = Path(tempfile.mkdtemp(prefix="hazyzoo-jrt-") if output_dir is None else output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(settings["num_threads"]))
    try:
        return _run(output_dir, settings, seed, model_factory, start)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    output_dir: Path,
    settings: dict[str, Any],
    seed: int,
    model_factory: Callable[[int, int, int], PreTrainedModel] | None,
    start: float,
) -> dict[str, Any]:
    tokenizer = synthetic_tokenizer()
    vocab_size = len(tokenizer)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    set_seed(seed)
    if model_factory is None:
        size_keys = ("hidden_size", "num_layers", "num_heads", "feature_dim", "sliding_window")
        size = {k: settings[k] for k in size_keys}
        model = make_recall_model(
            vocab_size, pad_id, eos_id, initializer_range=settings["initializer_range"], **size
        )
    else:
        model = model_factory(vocab_size, pad_id, eos_id)
    facts = settings["facts_per_doc"]
    train_texts = training_texts(settings["num_train_docs"], facts, seed + TRAIN_SEED_OFFSET)
    train_set = _TokenizedTexts(tokenizer, train_texts)
    eval_examples = synthetic_examples(settings["num_eval_docs"], facts, seed=seed)
    train_prompts = {prompt.rsplit(":", 1)[0] for prompt, _ in train_texts}
    overlap = sum(e.plain_prompt.rsplit(":", 1)[0] in train_prompts for e in eval_examples)
    lengths = [len(item["input_ids"]) for item in train_set.items]
    print(
        f"JRT-Prompt recall experiment: {len(train_texts)} training sequences "
        f"({settings['num_train_docs']} documents x plain + JRT, {facts} facts each, "
        f"{min(lengths)}-{max(lengths)} tokens), {len(eval_examples)} held-out documents "
        f"({overlap} also in training); {type(model).__name__} with "
        f"{_count_parameters(model):,} parameters"
    )

    steps = int(settings["max_steps"])
    args = demo_training_arguments(
        output_dir / "trainer",
        steps=steps,
        batch_size=int(settings["batch_size"]),
        learning_rate=settings["learning_rate"],
        seed=seed,
        warmup_ratio=settings["warmup_ratio"],
        weight_decay=settings["weight_decay"],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
    )
    train_metrics = trainer.train().metrics
    trainer_dir = Path(args.output_dir)
    if trainer_dir.is_dir() and not any(trainer_dir.iterdir()):
        trainer_dir.rmdir()

    eval_start = time.perf_counter()
    model.eval()
    results = evaluate_recall(
        model,
        tokenizer,
        "synthetic",
        examples=eval_examples,
        prompt="both",
        batch_size=int(settings["eval_batch_size"]),
        max_new_tokens=int(settings["max_new_tokens"]),
    )
    eval_seconds = time.perf_counter() - eval_start
    print("\n" + format_table(results))
    accuracy = {form: r.accuracy for form, r in results.items()}
    print(
        f"JRT-Prompt minus plain: {accuracy['jrt'] - accuracy['plain']:+.3f} "
        f"(chance when guessing one of the document's values: {1 / facts:.3f})"
    )

    saved = output_dir / "model"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    result = {
        "accuracy": accuracy,
        "count": {form: r.count for form, r in results.items()},
        "jrt_minus_plain": accuracy["jrt"] - accuracy["plain"],
        "params": _count_parameters(model),
        "model_class": type(model).__name__,
        "train_loss": float(train_metrics["train_loss"]),
        "train_seconds": float(train_metrics["train_runtime"]),
        "eval_seconds": eval_seconds,
        "eval_overlap_with_training": overlap,
        "saved_path": str(saved),
        "settings": settings,
        "seed": seed,
        "wall_seconds": time.perf_counter() - start,
    }
    (output_dir / "jrt_recall_results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"wall time {result['wall_seconds']:.1f} s (training {result['train_seconds']:.1f} s, "
        f"evaluation {eval_seconds:.1f} s); results in {output_dir / 'jrt_recall_results.json'}"
    )
    return result


def run_jrt_demo(
    output_dir: str | Path | None = None, *, seed: int = 0, quick: bool = False
) -> dict[str, Any]:
    """``hazyzoo demo jrt``: the two claims of "Just read twice" in miniature on a CPU.

    (1) :func:`run_recall_experiment`: a small BASED trained on synthetic key-value documents
    answers with the plain prompt and with JRT-Prompt. (2)
    :func:`hazyzoo.demo_jrt_mqar.run_mqar_order_experiment`: JRT-RNN, BASED and a Llama of the
    same size on MQAR with the data before or after the questions. Writes
    ``jrt_demo_results.json`` in ``output_dir`` and prints both tables.
    """
    from hazyzoo.demo_jrt_mqar import ORDERS, run_mqar_order_experiment

    start = time.perf_counter()
    output_dir = Path(tempfile.mkdtemp(prefix="hazyzoo-jrt-") if output_dir is None else output_dir)
    recall = run_recall_experiment(output_dir / "recall", seed=seed, quick=quick)
    mqar = run_mqar_order_experiment(output_dir / "mqar-order", seed=seed, quick=quick)
    print("\nJRT-Prompt (synthetic recall, BASED):")
    print(f"  plain {recall['accuracy']['plain']:.3f}   JRT-Prompt {recall['accuracy']['jrt']:.3f}")
    print(
        f"\nMQAR, {mqar['settings']['num_kv_pairs']} pairs, "
        f"{mqar['settings']['num_queries']} questions (chance {mqar['chance']:.3f}):"
    )
    print(f"  {'model':<6} {'params':>8} " + " ".join(f"{o:>16}" for o in ORDERS))
    for name, row in mqar["accuracy"].items():
        cells = " ".join(f"{row[o]:>16.3f}" for o in ORDERS)
        print(f"  {name:<6} {row['params']:>8,} {cells}")
    result = {"recall": recall, "mqar_order": mqar, "wall_seconds": time.perf_counter() - start}
    (output_dir / "jrt_demo_results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nwall time {result['wall_seconds']:.0f} s; results in {output_dir / 'jrt_demo_results.json'}"
    )
    return result

"""``hazyzoo eval coverage``: repeated sampling (Large Language Monkeys), end to end.

"Large Language Monkeys: Scaling Inference Compute with Repeated Sampling" (Brown et al. 2024)
measures *coverage*, the fraction of problems that any of ``k`` samples solves, and finds it
grows log-linearly in ``k`` and follows an exponentiated power law ``c(k) ~ exp(a k^b)``,
while majority voting and reward-model selection plateau. This runner joins the pieces:

- sampling (:mod:`hazyzoo.evaluation.sampling`: batched, resumable JSONL, Hydragen's
  shared-prefix generation when the model supports it, plain ``generate`` otherwise);
- verification (:mod:`hazyzoo.evaluation.verifiers`: math answers with math-verify, code in a
  sandboxed subprocess, exact match; :func:`hazyzoo.evaluation.arithmetic.check_answer` for the
  embedded problems);
- analysis (:mod:`hazyzoo.evaluation.coverage_metrics`: unbiased pass@k, coverage for every k,
  the power-law fit, majority-vote and reward-selection curves);
- output: a table, ``coverage_results.json`` and ``coverage.png`` (coverage against samples on
  a log axis with the fit and the selection curves).

Three ways in:

* no ``--model`` / ``--samples``: the embedded default. A tiny BASED (``--architecture llama``:
  a tiny Llama, which samples through Hydragen) is trained with ``Trainer`` for 100 steps on
  locally generated arithmetic word problems (:mod:`hazyzoo.evaluation.arithmetic`), then
  samples 64 answers to each of 50 held-out problems; the reward curve uses the model's own
  mean log-probability of each completion as the score (a verifier-free "reward model");
* ``--model DIR --problems FILE.jsonl``: any causal LM on a user's problems (rows with
  ``problem_id``, ``prompt``, and ``gt_answer`` for math / exact match or ``tests`` for code);
* ``--samples FILE``: analyse an existing file, either per-problem rows (the Hub's
  ScalingIntelligence/monkey_business format: ``samples`` and ``is_corrects``) or the
  per-sample JSONL a sampling run writes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hazyzoo.evaluation.coverage_data import ProblemSamples, group_samples, load_problem_samples
from hazyzoo.evaluation.coverage_metrics import (
    coverage_curve,
    majority_vote_curve,
    reward_selection_curve,
    summarize,
)

__all__ = [
    "VERIFIERS",
    "add_arguments",
    "analyse",
    "format_table",
    "make_verifier",
    "plot_coverage",
    "run_default",
    "run_from_args",
    "sample_and_analyse",
    "self_scores",
]

RESULTS_JSON = "coverage_results.json"
PLOT_PNG = "coverage.png"
SAMPLES_JSONL = "samples.jsonl"
VERIFIERS = ("arithmetic", "math", "exact", "code")

# The embedded default (measured on 2 CPU cores: see the README).
DEFAULT_SETTINGS: dict[str, Any] = {
    "architecture": "based",
    "train_steps": 100,
    "num_problems": 50,
    "num_samples": 64,
    "temperature": 1.0,
    "max_new_tokens": 4,
    "batch_size": 64,
    "seed": 0,
}


# --------------------------------------------------------------------------------------------
# verifiers for the sampler


def make_verifier(name: str, *, timeout_s: float = 5.0) -> Callable[[str, dict], tuple]:
    """The sampler's hook ``(completion, problem) -> (correct, answer)`` for verifier ``name``.

    ``arithmetic``: the embedded problems' first-integer check; ``math``: the final answer
    (``\\boxed{}``, ``####``, "the answer is", else the last number) compared with the
    problem's ``gt_answer`` by math-verify; ``exact``: the stripped completion against
    ``gt_answer`` (case and whitespace folded); ``code``: the completion (or its fenced Python
    block) run against the problem's ``tests`` in a sandboxed subprocess (``timeout_s``).
    """
    if name == "arithmetic":
        from hazyzoo.evaluation.arithmetic import check_answer

        return check_answer
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; valid: {list(VERIFIERS)}")
    from hazyzoo.evaluation import verifiers

    def need(problem: dict, key: str) -> Any:
        if key not in problem:
            raise ValueError(
                f"problem {problem.get('problem_id')!r} has no {key!r}, which the {name!r} "
                "verifier needs"
            )
        return problem[key]

    if name == "math":

        def math_hook(completion: str, problem: dict) -> tuple:
            answer = verifiers.extract_final_answer(completion)
            reference = str(need(problem, "gt_answer"))
            reference = verifiers.extract_final_answer(reference) or reference
            return verifiers.math_equal(answer, reference), answer

        return math_hook
    if name == "exact":

        def exact_hook(completion: str, problem: dict) -> tuple:
            answer = completion.strip()
            return verifiers.exact_match(answer, str(need(problem, "gt_answer"))), answer

        return exact_hook
    code = verifiers.CodeVerifier(timeout_s=timeout_s)

    def code_hook(completion: str, problem: dict) -> tuple:
        return code(completion, str(need(problem, "tests"))), None

    return code_hook


# --------------------------------------------------------------------------------------------
# analysis


def _table_ks(max_k: int) -> list[int]:
    ks = [1]
    while ks[-1] * 2 <= max_k:
        ks.append(ks[-1] * 2)
    if ks[-1] != max_k:
        ks.append(max_k)
    return ks


def analyse(problems: Sequence[ProblemSamples]) -> dict[str, Any]:
    """Coverage at every k from 1 to the smallest sample count, the power-law fit (on 32
    log-spaced k), and (where
    the samples carry extracted answers / scores) the majority-vote / reward-selection accuracy
    at powers of two; JSON-able."""
    problems = list(problems)
    if not problems:
        raise ValueError("no problems to analyse")
    unverified = [p.problem_id for p in problems if any(c is None for c in p.correct)]
    n = [p.num_samples for p in problems]
    c = [p.num_correct for p in problems]
    max_k = min(n)
    if max_k < 1:
        empty = [p.problem_id for p in problems if p.num_samples == 0]
        raise ValueError(f"problems without samples: {empty[:5]}")
    # The fit sees log-spaced k (as the curves are read, on a log axis): every k from 1 to
    # max_k would give the many large k most of the weight and fit small k badly.
    fit_ks = sorted({int(k) for k in np.rint(np.geomspace(1, max_k, 32))})
    summary = summarize(n, c, fit_ks)
    coverage = coverage_curve(n, c, list(range(1, max_k + 1))).tolist()
    table_ks = _table_ks(max_k)
    correct = [[bool(x) for x in p.correct] for p in problems]
    majority = None
    if all(p.answers is not None for p in problems):
        majority = majority_vote_curve([p.answers for p in problems], correct, table_ks).tolist()
    reward = None
    if all(p.scores is not None for p in problems):
        reward = reward_selection_curve([p.scores for p in problems], correct, table_ks).tolist()
    return {
        "num_problems": len(problems),
        "samples_per_problem": {"min": min(n), "max": max(n)},
        "unverified_problems": len(unverified),
        "mean_accuracy": float(np.mean([ci / ni for ci, ni in zip(c, n)])),
        "ks": list(range(1, max_k + 1)),
        "coverage": coverage,
        "fit_ks": fit_ks,
        "fit": summary["fit"],
        "fit_error": summary["fit_error"],
        "table_ks": table_ks,
        "table_coverage": [coverage[k - 1] for k in table_ks],
        "majority_vote": majority,
        "reward_selection": reward,
    }


def _fit_at(fit: dict | None, k: int) -> float | None:
    if fit is None:
        return None
    return float(math.exp(fit["a"] * k ** fit["b"]))


def format_table(report: dict[str, Any]) -> str:
    """k | coverage | fit | majority vote | reward selection, then the fit's parameters."""
    cols = ["k", "coverage", "power-law fit", "majority vote", "reward selection"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for i, k in enumerate(report["table_ks"]):
        maj = report["majority_vote"][i] if report["majority_vote"] else None
        rew = report["reward_selection"][i] if report["reward_selection"] else None
        cov, fit = report["table_coverage"][i], _fit_at(report["fit"], k)
        lines.append(f"| {k} | {cov:.3f} | {fmt(fit)} | {fmt(maj)} | {fmt(rew)} |")
    fit = report["fit"]
    if fit is not None:
        lines.append(
            f"coverage ~ exp({fit['a']:.3f} * k^{fit['b']:.3f}): R^2 {fit['r2']:.4f}, "
            f"RMSE {fit['rmse']:.4f} over {fit['num_points']} points"
        )
    else:
        lines.append(f"no power-law fit: {report['fit_error']}")
    lines.append(
        f"{report['num_problems']} problems, {report['samples_per_problem']['min']} samples "
        f"each (at least); mean single-sample accuracy {report['mean_accuracy']:.3f}"
    )
    return "\n".join(lines)


def plot_coverage(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Coverage against k (log axis) with the fit and the selection curves, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.asarray(report["ks"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(ks, report["coverage"], color="C0", lw=2, label="coverage (pass@k)")
    if report["fit"] is not None:
        fit = report["fit"]
        ax.plot(
            ks,
            np.exp(fit["a"] * ks.astype(float) ** fit["b"]),
            "--",
            color="C3",
            label=f"fit exp({fit['a']:.2f} k^{fit['b']:.2f})",
        )
    if report["majority_vote"]:
        ax.plot(
            report["table_ks"], report["majority_vote"], "o-", color="C1", label="majority vote"
        )
    if report["reward_selection"]:
        ax.plot(
            report["table_ks"],
            report["reward_selection"],
            "s-",
            color="C2",
            label="reward selection",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per problem (k)")
    ax.set_ylabel("fraction of problems solved")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# sampling runs


def self_scores(
    model: Any,
    tokenizer: Any,
    prompts: dict[str, str],
    records: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
) -> list[float]:
    """Each record's mean log-probability of its completion tokens given its prompt, under
    ``model``: a verifier-free score for reward-selection curves (higher is better)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    model.eval()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        rows, spans = [], []
        for r in chunk:
            p = tokenizer(prompts[r["problem_id"]])["input_ids"]
            c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
            rows.append(p + c)
            spans.append((len(p), len(p) + len(c)))
        width = max(len(x) for x in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(rows):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(
                model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1
            ).cpu()
        for i, (lo, hi) in enumerate(spans):
            if hi == lo:  # an empty completion: nothing to score, the lowest score
                scores.append(-math.inf)
                continue
            targets = ids[i, lo:hi]
            scores.append(float(logp[i, lo - 1 : hi - 1].gather(-1, targets[:, None]).mean()))
    return [s if math.isfinite(s) else -1e9 for s in scores]


def sample_and_analyse(
    model: Any,
    tokenizer: Any,
    problems: Sequence[dict[str, Any]],
    output_dir: str | Path,
    *,
    config: Any,
    verifier: str = "math",
    score: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``problems`` (resumable: ``output_dir/samples.jsonl``), verify, analyse; writes
    ``coverage_results.json`` and ``coverage.png`` to ``output_dir`` and returns the report."""
    from hazyzoo.evaluation.sampling import resolve_backend, sample_problems

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = sample_problems(
        model,
        tokenizer,
        problems,
        config,
        output_path=out / SAMPLES_JSONL,
        verifier=make_verifier(verifier),
        progress=progress,
    )
    sampling_seconds = time.perf_counter() - start
    prompts = {p["problem_id"]: p["prompt"] for p in problems}
    if score:
        for record, s in zip(records, self_scores(model, tokenizer, prompts, records)):
            record["score"] = s
    grouped = group_samples(
        records,
        prompts=prompts,
        gt_answers={p["problem_id"]: str(p.get("gt_answer", "")) for p in problems},
    )
    report = analyse(grouped)
    report["sampling"] = {
        "backend": resolve_backend(model, config.backend),
        "seconds": sampling_seconds,
        "records": len(records),
        "verifier": verifier,
        "scores": "model mean log-probability" if score else None,
    }
    _write(report, out)
    return report


def _write(report: dict[str, Any], out: Path, title: str = "") -> None:
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=1) + "\n")
    plot_coverage(report, out / PLOT_PNG, title=title)


def run_default(
    output_dir: str | Path, settings: dict[str, Any] | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """The embedded default: train (or reuse, when ``output_dir/model`` exists) the tiny
    arithmetic Llama, sample the held-out problems, verify, score, analyse."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hazyzoo.evaluation.arithmetic import make_arithmetic_problems, train_tiny_model
    from hazyzoo.evaluation.sampling import SamplingConfig

    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid: {sorted(DEFAULT_SETTINGS)}")
    out = Path(output_dir)
    model_dir = out / "model"
    train_seconds = None
    want_type = "hazyzoo_based" if settings["architecture"] == "based" else "llama"
    if (model_dir / "config.json").is_file():  # a resumed run: the model it trained
        found = json.loads((model_dir / "config.json").read_text()).get("model_type")
        if found != want_type:
            raise ValueError(
                f"{model_dir} holds a {found!r} model from an earlier run, not the requested "
                f"{settings['architecture']!r}: use another --output-dir"
            )
    else:
        start = time.perf_counter()
        train_tiny_model(
            model_dir,
            steps=settings["train_steps"],
            seed=settings["seed"],
            progress=progress,
            architecture=settings["architecture"],
        )
        train_seconds = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problems = make_arithmetic_problems(
        settings["num_problems"], seed=settings["seed"], split="test"
    )
    config = SamplingConfig(
        num_samples=settings["num_samples"],
        batch_size=settings["batch_size"],
        max_new_tokens=settings["max_new_tokens"],
        temperature=settings["temperature"],
        seed=settings["seed"],
        stop=("\n",),
    )
    report = sample_and_analyse(
        model,
        tokenizer,
        problems,
        out,
        config=config,
        verifier="arithmetic",
        score=True,
        progress=progress,
    )
    report["settings"] = settings
    report["train_seconds"] = train_seconds
    name = "BASED" if settings["architecture"] == "based" else "Llama"
    _write(report, out, title=f"tiny {name} on held-out arithmetic word problems")
    return report


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval coverage``."""
    d = DEFAULT_SETTINGS
    parser.add_argument("--output-dir", default="coverage_output", help="samples, JSON and PNG")
    parser.add_argument("--samples", default=None, metavar="FILE", help="analyse this file only")
    parser.add_argument("--model", default=None, metavar="DIR_OR_ID", help="a causal LM to sample")
    parser.add_argument("--problems", default=None, metavar="FILE.jsonl", help="with --model")
    parser.add_argument("--verifier", choices=VERIFIERS, default="math", help="with --model")
    parser.add_argument("--num-samples", type=int, default=d["num_samples"])
    parser.add_argument("--temperature", type=float, default=d["temperature"])
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 4 / 512")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"])
    parser.add_argument(
        "--backend", choices=["auto", "hydragen", "generate", "vllm"], default="auto"
    )
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--score", action="store_true", help="--model: score by mean log-prob")
    parser.add_argument("--device", default=None, help="--model: e.g. cuda")
    parser.add_argument(
        "--architecture",
        choices=["based", "llama"],
        default=d["architecture"],
        help="the embedded default's tiny model (llama samples through Hydragen)",
    )
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--no-progress", action="store_true")


def _read_problems(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"--problems {path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"--problems {path}:{number}: not JSON ({err})") from None
        if not isinstance(row, dict) or "problem_id" not in row or "prompt" not in row:
            raise ValueError(f"--problems {path}:{number}: needs 'problem_id' and 'prompt' keys")
        row["problem_id"] = str(row["problem_id"])
        rows.append(row)
    if not rows:
        raise ValueError(f"--problems {path} holds no problems")
    return rows


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo eval coverage``: print the table; JSON and PNG go to ``--output-dir``."""
    out = Path(args.output_dir)
    progress = not args.no_progress
    if args.samples is not None:
        if args.model is not None or args.problems is not None:
            raise ValueError("--samples analyses a file; it excludes --model and --problems")
        path = Path(args.samples)
        if not path.is_file():
            raise FileNotFoundError(f"--samples {path}: no such file")
        report = analyse(load_problem_samples(path))
        report["source"] = str(path)
        out.mkdir(parents=True, exist_ok=True)
        _write(report, out, title=path.name)
    elif args.model is not None:
        if args.problems is None:
            raise ValueError("--model needs --problems FILE.jsonl (problem_id, prompt, ...)")
        problems = _read_problems(Path(args.problems))
        from hazyzoo.cli import _load_causal_lm
        from hazyzoo.evaluation.sampling import SamplingConfig

        model, tokenizer = _load_causal_lm(args.model, args.device)
        config = SamplingConfig(
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens or 512,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            stop=tuple(args.stop) if args.stop else ("\n\n",),
            backend=args.backend,
        )
        report = sample_and_analyse(
            model,
            tokenizer,
            problems,
            out,
            config=config,
            verifier=args.verifier,
            score=args.score,
            progress=progress,
        )
    else:
        if args.problems is not None:
            raise ValueError("--problems goes with --model")
        settings = {
            "architecture": args.architecture,
            "num_samples": args.num_samples,
            "temperature": args.temperature,
            "batch_size": args.batch_size,
            "seed": args.seed,
        }
        if args.max_new_tokens is not None:
            settings["max_new_tokens"] = args.max_new_tokens
        report = run_default(out, settings, progress=progress)
    print(format_table(report))
    print(f"wrote {out / RESULTS_JSON} and {out / PLOT_PNG}")
    return 0

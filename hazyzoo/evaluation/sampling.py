"""Repeated sampling: many sampled answers per problem, written as they come, resumable.

Large Language Monkeys (Brown et al. 2024) scales inference compute by sampling ``N``
candidate answers per problem and checking them; *coverage* (pass@k) is then the fraction of
problems some sample solves. :func:`sample_problems` does the sampling for any causal LM::

    config = SamplingConfig(num_samples=64, batch_size=32, temperature=0.7, stop=("\\n\\n",))
    records = sample_problems(model, tokenizer, problems, config,
                              output_path="samples.jsonl", verifier=check_answer)

Each sample becomes one JSON line ``{"problem_id", "sample_index", "completion", "answer",
"correct", "score"}`` (``answer``/``correct`` from the verifier, else null; ``score`` is null,
left for a reward model). Lines are flushed and fsynced after every batch, so a killed run
loses at most the batch it was generating; running the same call again skips the samples
already written and produces the missing ones exactly as an uninterrupted run would have,
because each batch covers sample indices ``[j * batch_size, (j + 1) * batch_size)`` of one
problem and its random seed derives from ``(seed, problem_id, j * batch_size)`` only.

Backends: ``"hydragen"`` prefills each problem's prompt once and decodes the batch with
shared-prefix attention (:func:`hazyzoo.hydragen.generate`, Llama-family models);
``"generate"`` replicates the prompt for plain ``model.generate`` (any causal LM, e.g. the
zoo's recurrent models); ``"auto"`` takes Hydragen when its model check accepts the model;
``"vllm"`` runs a ``vllm.LLM`` (optional dependency, not covered by the tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteriaList

from hazyzoo.jrt import _pad_and_eos_ids, _StopStrings, cut_at_stop, model_max_length

__all__ = [
    "BACKENDS",
    "RECORD_FIELDS",
    "SamplingConfig",
    "batch_seed",
    "config_dict",
    "load_samples",
    "resolve_backend",
    "sample_problems",
]

BACKENDS = ("auto", "hydragen", "generate", "vllm")
# The schema of one line of the output file, in order (others' loaders read it).
RECORD_FIELDS = ("problem_id", "sample_index", "completion", "answer", "correct", "score")
# Beside the output file: the settings its samples were made with, checked on resume.
CONFIG_SUFFIX = ".config.json"
# Settings that change which samples a (problem, sample index) gets; num_samples does not.
_SAMPLE_DEFINING_FIELDS = (
    "batch_size",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "add_special_tokens",
)

Verifier = Callable[[str, dict], tuple[bool | None, str | None]]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass
class SamplingConfig:
    """How to sample: ``num_samples`` per problem, ``batch_size`` sequences per generate call
    (a problem's samples are split into batches of sample indices ``[j*B, (j+1)*B)``), at most
    ``max_new_tokens`` each, with ``temperature`` / ``top_p`` / ``top_k`` (0: off); ``seed``
    fixes every batch's random numbers; completions are cut before the first of the ``stop``
    strings (a str or a sequence of str; generation also stops there); ``backend`` is one of
    :data:`BACKENDS`; ``add_special_tokens`` is passed to the tokenizer for the prompts."""

    num_samples: int = 64
    batch_size: int = 32
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ("\n\n",)
    backend: str = "auto"
    add_special_tokens: bool = True

    def __post_init__(self) -> None:
        _check_int("num_samples", self.num_samples, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("top_k", self.top_k, 0)
        _check_int("seed", self.seed, 0)
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (repeated sampling needs sampling; 0 would give "
                f"num_samples identical greedy answers), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if stop is None:
            stop = ()
        if not isinstance(stop, (list, tuple)):
            raise TypeError(f"stop must be a str or a sequence of str, got {type(stop).__name__}")
        for s in stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty str, got {s!r} in stop={stop!r}")
        self.stop = tuple(stop)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.add_special_tokens, bool):
            raise TypeError(f"add_special_tokens must be a bool, got {self.add_special_tokens!r}")


def batch_seed(seed: int, problem_id: str, first_sample_index: int) -> int:
    """The random seed of the batch of ``problem_id`` that starts at ``first_sample_index``:
    a hash of the three (not Python's salted ``hash``), the same in every process and run."""
    key = json.dumps([seed, problem_id, first_sample_index]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _is_vllm(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "vllm"


def resolve_backend(model: Any, backend: str = "auto") -> str:
    """The backend that will run: ``"auto"`` gives ``"vllm"`` for a ``vllm.LLM``,
    ``"hydragen"`` when :mod:`hazyzoo.hydragen`'s model check accepts ``model`` and
    ``"generate"`` otherwise; a forced ``"hydragen"`` raises that check's error (``TypeError``
    / ``ValueError``) for a model it cannot drive, e.g. a recurrent one."""
    from hazyzoo import hydragen

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "vllm" or (backend == "auto" and (_is_vllm(model) or isinstance(model, str))):
        return "vllm"
    if isinstance(model, str):
        raise TypeError(
            f"model is the str {model!r}: only backend='vllm' takes a model name; load a "
            "transformers model (AutoModelForCausalLM.from_pretrained) for the others"
        )
    if backend == "generate":
        return "generate"
    try:
        hydragen._check_model(model)
    except (TypeError, ValueError) as err:
        if backend == "auto":
            return "generate"
        raise type(err)(
            f"backend='hydragen' cannot run {type(model).__name__}: {err}; use backend="
            "'generate' (or 'auto', which falls back to it)"
        ) from err
    return "hydragen"


# --------------------------------------------------------------------------------------------
# the output file


def _read_records(path: Path, *, repair: bool) -> list[dict[str, Any]]:
    """The records of ``path`` (none when it does not exist). A last line without its newline
    is a write cut short: with ``repair`` the file is truncated back to the last complete
    line, otherwise the line is skipped. A complete line that is not a record is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line
    if end < len(data) and repair:
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    records = []
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{number} is not valid JSON ({err}); only the last line may be cut "
                "short, so this file was edited or written by something else"
            ) from err
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("problem_id"), str)
            or isinstance(record.get("sample_index"), bool)
            or not isinstance(record.get("sample_index"), int)
        ):
            raise ValueError(
                f"{path}:{number} is not a sample record (needs a str problem_id and an int "
                f"sample_index): {line[:120]!r}"
            )
        records.append(record)
    return records


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """The records of a samples file as written by :func:`sample_problems`, in file order
    (a cut-short last line, from a killed run, is skipped; the file is not changed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist")
    return _read_records(path, repair=False)


def _check_or_write_settings(path: Path, settings: dict[str, Any], has_records: bool) -> None:
    """Keep the sample-defining settings beside the output; a resume with other settings
    would mix two sampling distributions in one file, so it is refused."""
    sidecar = path.with_name(path.name + CONFIG_SUFFIX)
    if sidecar.exists() and has_records:
        saved = json.loads(sidecar.read_text())
        diffs = [
            f"{name}: file has {saved.get(name)!r}, config has {settings[name]!r}"
            for name in settings
            if name in saved and saved[name] != settings[name]
        ]
        if diffs:
            raise ValueError(
                f"{path} holds samples made with other settings ({'; '.join(diffs)}); resuming "
                "would mix them: use a new output_path or the same settings"
            )
    sidecar.write_text(json.dumps(settings, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# backends: each turns (prompt, n, seed) into n completions


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with the torch RNG (CPU and ``device``) seeded to ``seed``; restore it after, so a
    caller's random state is left as it was."""
    if device.type == "cpu":
        fork = torch.random.fork_rng(devices=[])
    else:
        index = device.index if device.index is not None else 0
        fork = torch.random.fork_rng(devices=[index], device_type=device.type)
    with fork:
        torch.manual_seed(seed)
        yield


class _TorchSampler:
    """Samples with a transformers model: Hydragen (the prompt prefilled once, shared by the
    batch) or plain ``generate`` over the prompt replicated ``n`` times."""

    def __init__(self, model: Any, tokenizer: Any, config: SamplingConfig, backend: str) -> None:
        if tokenizer is None:
            raise TypeError(f"backend={backend!r} needs the model's tokenizer, got None")
        self.model, self.tokenizer, self.config, self.backend = model, tokenizer, config, backend
        pad_id, eos_id = _pad_and_eos_ids(model, tokenizer)
        self.limit = model_max_length(model)
        self.device = getattr(model, "device", None) or torch.device("cpu")
        self.generate_kwargs: dict[str, Any] = dict(
            do_sample=True,
            num_beams=1,
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )

    def encode(self, problem: dict[str, Any]) -> list[int]:
        ids = list(
            self.tokenizer(problem["prompt"], add_special_tokens=self.config.add_special_tokens)[
                "input_ids"
            ]
        )
        pid = problem["problem_id"]
        if not ids:
            raise ValueError(f"problem {pid!r}: the prompt tokenizes to no tokens")
        if self.limit is not None and len(ids) + self.config.max_new_tokens > self.limit:
            raise ValueError(
                f"problem {pid!r}: the prompt has {len(ids)} tokens; with max_new_tokens="
                f"{self.config.max_new_tokens} that exceeds the model's max length "
                f"{self.limit} (prompts are not truncated)"
            )
        return ids

    @torch.inference_mode()
    def __call__(self, prompt_ids: list[int], n: int, seed: int) -> list[str]:
        from hazyzoo import hydragen

        width = len(prompt_ids)
        kwargs = dict(self.generate_kwargs)
        if self.config.stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_StopStrings(self.tokenizer, list(self.config.stop), width)]
            )
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        with _seeded(seed, self.device):
            if self.backend == "hydragen":
                out = hydragen.generate(self.model, prompt[0], num_return_sequences=n, **kwargs)
            else:
                out = self.model.generate(
                    input_ids=prompt.expand(n, -1).contiguous(),
                    attention_mask=torch.ones(n, width, dtype=torch.long, device=self.device),
                    num_return_sequences=1,
                    **kwargs,
                )
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        texts = self.tokenizer.batch_decode(sequences[:, width:], skip_special_tokens=True)
        return [cut_at_stop(t, self.config.stop) for t in texts]


class _VllmSampler:
    """Samples with vLLM: one request per batch with ``SamplingParams(n=..., seed=...)``.
    Not covered by the tests (vLLM needs a GPU and is an optional dependency)."""

    def __init__(self, model: Any, config: SamplingConfig) -> None:
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "backend='vllm' needs vLLM: pip install vllm (or use backend='hydragen' / "
                "'generate' with a transformers model)"
            ) from err
        self.vllm, self.config = vllm, config
        self.llm = vllm.LLM(model=model, seed=config.seed) if isinstance(model, str) else model

    def encode(self, problem: dict[str, Any]) -> str:
        return problem["prompt"]  # vLLM tokenizes itself

    def __call__(self, prompt: str, n: int, seed: int) -> list[str]:
        config = self.config
        params = self.vllm.SamplingParams(
            n=n,
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            top_k=config.top_k if config.top_k > 0 else -1,
            max_tokens=config.max_new_tokens,
            seed=seed,
            stop=list(config.stop) or None,
        )
        (request,) = self.llm.generate([prompt], params, use_tqdm=False)
        return [cut_at_stop(o.text, config.stop) for o in request.outputs]


# --------------------------------------------------------------------------------------------
# the runner


def _check_problems(problems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(problems, (str, dict)) or not isinstance(problems, Sequence):
        raise TypeError(f"problems must be a sequence of dicts, got {type(problems).__name__}")
    problems = list(problems)
    if not problems:
        raise ValueError("problems is empty")
    seen: set[str] = set()
    for i, problem in enumerate(problems):
        if not isinstance(problem, dict):
            raise TypeError(f"problems[{i}] must be a dict, got {type(problem).__name__}")
        pid, prompt = problem.get("problem_id"), problem.get("prompt")
        if not isinstance(pid, str) or not pid:
            raise TypeError(f"problems[{i}]['problem_id'] must be a non-empty str, got {pid!r}")
        if pid in seen:
            raise ValueError(f"problems[{i}]: problem_id {pid!r} appears twice")
        seen.add(pid)
        if not isinstance(prompt, str) or not prompt:
            raise TypeError(f"problems[{i}] ({pid!r})['prompt'] must be a non-empty str")
    return problems


def _verify(
    verifier: Verifier | None, completion: str, problem: dict[str, Any]
) -> tuple[bool | None, str | None]:
    if verifier is None:
        return None, None
    result = verifier(completion, problem)
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(
            f"verifier must return (correct, answer), got {result!r:.80} for problem "
            f"{problem['problem_id']!r}"
        )
    correct, answer = result
    if correct is not None and not isinstance(correct, bool):
        raise TypeError(f"verifier's correct must be a bool or None, got {correct!r}")
    if answer is not None and not isinstance(answer, str):
        raise TypeError(f"verifier's answer must be a str or None, got {answer!r}")
    return correct, answer


def _batches(config: SamplingConfig) -> Iterator[range]:
    """A problem's batches of sample indices ``[j*B, (j+1)*B)``, the last one cut at
    ``num_samples``: a function of the sample index only, so a resumed run meets the same."""
    for start in range(0, config.num_samples, config.batch_size):
        yield range(start, min(start + config.batch_size, config.num_samples))


def sample_problems(
    model: Any,
    tokenizer: Any,
    problems: Sequence[dict[str, Any]],
    config: SamplingConfig,
    *,
    output_path: str | Path,
    verifier: Verifier | None = None,
    progress: bool = True,
    max_batches: int | None = None,
) -> list[dict[str, Any]]:
    """Sample ``config.num_samples`` completions per problem into ``output_path``; resumable.

    Args:
        model: a transformers causal LM (any for ``"generate"``, attention-interface models
            such as Llama for ``"hydragen"``), or for ``"vllm"`` a ``vllm.LLM`` or model name.
        tokenizer: the model's tokenizer (unused by vLLM, which may take None).
        problems: dicts with a unique str ``"problem_id"`` and a str ``"prompt"`` (more keys
            are passed on to the verifier).
        config: the :class:`SamplingConfig`.
        output_path: the JSON-lines file the records are appended to (parents created).
            Settings that define the samples are kept beside it in ``<output_path>.config.json``
            and a resume with different ones is refused (``num_samples`` may grow).
        verifier: ``verifier(completion, problem) -> (correct, answer)`` fills the record's
            ``correct`` and ``answer`` (``None`` leaves them null).
        progress: show a tqdm bar over samples.
        max_batches: stop after this many generate calls (a budget; also how tests stop a
            run part-way); ``None``: until every sample exists.

    Returns:
        The records of ``problems`` with sample index below ``num_samples`` that the file
        holds now (earlier runs' and this one's), ordered by problem then sample index.

    On start the existing file is read: a cut-short last line is truncated away, and every
    (problem_id, sample_index) present is skipped; a batch with some samples missing is
    regenerated with its own seed and only the missing ones are written, so the file never
    holds a duplicate and ends up as an uninterrupted run's. One writer per file at a time.
    Raising ``num_samples`` on resume keeps the samples written; the new ones match a fresh
    run with the larger ``num_samples`` exactly when the old one was a multiple of
    ``batch_size`` (a batch's samples depend on its length too).
    """
    from tqdm.auto import tqdm

    if not isinstance(config, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig, got {type(config).__name__}")
    if max_batches is not None:
        _check_int("max_batches", max_batches, 0)
    if verifier is not None and not callable(verifier):
        raise TypeError(f"verifier must be callable, got {type(verifier).__name__}")
    problems = _check_problems(problems)
    backend = resolve_backend(model, config.backend)
    sampler: Any
    if backend == "vllm":
        sampler = _VllmSampler(model, config)
    else:
        sampler = _TorchSampler(model, tokenizer, config, backend)
    prompts = [sampler.encode(p) for p in problems]  # every prompt checked before any work

    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = _read_records(path, repair=True)
    settings = {name: getattr(config, name) for name in _SAMPLE_DEFINING_FIELDS}
    settings["stop"] = list(config.stop)
    settings["backend"] = backend
    _check_or_write_settings(path, settings, has_records=bool(existing))
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for record in existing:
        done.setdefault((record["problem_id"], record["sample_index"]), record)

    wanted = {p["problem_id"] for p in problems}
    have = sum(1 for pid, i in done if pid in wanted and i < config.num_samples)
    bar = tqdm(
        total=len(problems) * config.num_samples,
        initial=have,
        desc=f"sampling ({backend})",
        unit="sample",
        disable=not progress,
    )
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    calls = 0
    try:
        with path.open("a", encoding="utf-8") as f:
            for problem, prompt in zip(problems, prompts):
                pid = problem["problem_id"]
                for indices in _batches(config):
                    missing = [i for i in indices if (pid, i) not in done]
                    if not missing:
                        continue
                    if max_batches is not None and calls >= max_batches:
                        raise _Budget
                    seed = batch_seed(config.seed, pid, indices[0])
                    completions = sampler(prompt, len(indices), seed)
                    calls += 1
                    if len(completions) != len(indices):
                        raise RuntimeError(
                            f"the {backend} backend returned {len(completions)} completions "
                            f"for a batch of {len(indices)}"
                        )
                    lines = []
                    for i, completion in zip(indices, completions):
                        if i not in missing:
                            continue
                        correct, answer = _verify(verifier, completion, problem)
                        record = {
                            "problem_id": pid,
                            "sample_index": i,
                            "completion": completion,
                            "answer": answer,
                            "correct": correct,
                            "score": None,
                        }
                        done[(pid, i)] = record
                        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
                    f.write("".join(lines))
                    f.flush()
                    os.fsync(f.fileno())
                    bar.update(len(lines))
    except _Budget:
        pass
    finally:
        bar.close()
        if was_training:
            model.train()
    return [
        done[(p["problem_id"], i)]
        for p in problems
        for i in range(config.num_samples)
        if (p["problem_id"], i) in done
    ]


class _Budget(Exception):
    """Raised inside :func:`sample_problems` when ``max_batches`` calls have run."""


def config_dict(config: SamplingConfig) -> dict[str, Any]:
    """``config`` as a JSON-able dict (for a runner's results file)."""
    out = dataclasses.asdict(config)
    out["stop"] = list(config.stop)
    return out

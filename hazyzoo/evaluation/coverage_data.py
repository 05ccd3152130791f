"""Sample sets of a repeated-sampling evaluation: one :class:`ProblemSamples` per problem.

Two on-disk forms are read and written:

- **Per problem** (one row per problem), the form of the released "Large Language Monkeys"
  sample sets, ``ScalingIntelligence/monkey_business`` on the Hub. Each configuration
  (``GSM8K_Llama-3-8B-Instruct``, ``MATH_Pythia-1B``, ``CodeContests_Gemma-2B``, ...) is one
  JSON file holding a list of rows. What a row holds was read from the authors' code,
  github.com/ScalingIntelligence/large_language_monkeys (commit 5c2d75a):
  ``llmonk/generate/gsm8k.py`` and ``code_contests.py`` write ``prompt`` (the few-shot prompt
  sent to the model), ``question``, ``samples`` (list of str) and, for GSM8K and MATH,
  ``gt_answer`` (the dataset's answer text: GSM8K's worked answer ending ``#### <number>``,
  MATH's solution with ``\\boxed{...}``); ``llmonk/evaluate/math_datasets.py`` adds
  ``is_corrects`` (list of bool, ``is_corrects[i]`` for ``samples[i]``; the repository README
  calls it ``is_correct``, the code and the released files ``is_corrects``). Public analyses
  of the released files also read ``orig_dset_split`` (``"test"``) and ``orig_dset_idx`` (the
  problem's index in the source dataset) from every row. :func:`load_monkey_business` needs
  ``samples`` and ``is_corrects`` and uses the others when present.
  :func:`write_problem_samples_jsonl` writes the same keys (plus ``problem_id``, ``answers``
  and ``scores``), so one loader reads both.
- **Per sample** (one JSON line per sample), what a sampling run appends as it goes:
  ``{"problem_id": str, "sample_index": int, "completion": str, "answer": str | null,
  "correct": bool | null, "score": float | null}``. :func:`read_sample_records` reads such a
  file (a last line cut off by a killed run is skipped with a warning) and
  :func:`group_samples` turns the records into :class:`ProblemSamples`.

:func:`load_problem_samples` reads either form from a path, telling them apart by their keys.
Nothing here imports torch; ``datasets`` is used only when a ``datasets.Dataset`` is passed
and ``pyarrow`` only for ``.parquet`` files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any


def _check_list(owner: str, name: str, value: Any, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{owner}.{name} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(
            f"{owner}.{name} has {len(value)} entries but samples has {length}; "
            "they must be aligned one-to-one"
        )
    return value


@dataclass
class ProblemSamples:
    """One problem and everything sampled for it, aligned by sample position.

    ``samples[j]`` is completion j, ``correct[j]`` whether it is correct (``None``: not
    verified), ``answers[j]`` the answer extracted from it (``None``: none found) and
    ``scores[j]`` a verifier's or reward model's score (higher is better). ``gt_answer`` is the
    reference answer when the task has one.
    """

    problem_id: str
    prompt: str
    samples: list[str]
    correct: list[bool | None]
    gt_answer: str | None = None
    answers: list[str | None] | None = None
    scores: list[float] | None = None

    def __post_init__(self) -> None:
        owner = f"ProblemSamples({self.problem_id!r})"
        if not isinstance(self.problem_id, str):
            raise TypeError(f"problem_id must be a str, got {type(self.problem_id).__name__}")
        if not self.problem_id:
            raise ValueError("problem_id must be a non-empty str, got ''")
        if not isinstance(self.prompt, str):
            raise TypeError(f"{owner}.prompt must be a str, got {type(self.prompt).__name__}")
        n = len(_check_list(owner, "samples", self.samples))
        for j, sample in enumerate(self.samples):
            if not isinstance(sample, str):
                raise TypeError(f"{owner}.samples[{j}] must be a str, got {type(sample).__name__}")
        for j, flag in enumerate(_check_list(owner, "correct", self.correct, n)):
            if flag is not None and not isinstance(flag, bool):
                raise TypeError(
                    f"{owner}.correct[{j}] must be a bool or None, got "
                    f"{type(flag).__name__} {flag!r}"
                )
        if self.gt_answer is not None and not isinstance(self.gt_answer, str):
            raise TypeError(
                f"{owner}.gt_answer must be a str or None, got {type(self.gt_answer).__name__}"
            )
        if self.answers is not None:
            for j, answer in enumerate(_check_list(owner, "answers", self.answers, n)):
                if answer is not None and not isinstance(answer, str):
                    raise TypeError(
                        f"{owner}.answers[{j}] must be a str or None, got "
                        f"{type(answer).__name__} {answer!r}"
                    )
        if self.scores is not None:
            for j, score in enumerate(_check_list(owner, "scores", self.scores, n)):
                if isinstance(score, bool) or not isinstance(score, (int, float)):
                    raise TypeError(
                        f"{owner}.scores[{j}] must be a float, got {type(score).__name__} {score!r}"
                    )
                if not math.isfinite(score):
                    raise ValueError(f"{owner}.scores[{j}] must be finite, got {score!r}")

    @property
    def num_samples(self) -> int:
        """How many samples were drawn."""
        return len(self.samples)

    @property
    def num_correct(self) -> int:
        """How many samples are known to be correct; unverified (``None``) ones do not count."""
        return sum(flag is True for flag in self.correct)

    def to_row(self) -> dict[str, Any]:
        """The per-problem row :func:`write_problem_samples_jsonl` writes (monkey_business keys)."""
        return {
            "problem_id": self.problem_id,
            "prompt": self.prompt,
            "samples": list(self.samples),
            "is_corrects": list(self.correct),
            "gt_answer": self.gt_answer,
            "answers": None if self.answers is None else list(self.answers),
            "scores": None if self.scores is None else [float(s) for s in self.scores],
        }


def _problem_from_row(row: Mapping[str, Any], index: int) -> ProblemSamples:
    """A per-problem row (monkey_business or ours) as :class:`ProblemSamples`.

    ``problem_id`` is the row's ``problem_id``, else ``orig_dset_idx``, else ``name`` or
    ``theorem_name``, else the row's position; ``prompt`` is ``prompt``, else ``question``,
    else empty.
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"row {index} must be a dict, got {type(row).__name__}")
    missing = [key for key in ("samples", "is_corrects") if key not in row]
    if missing:
        raise ValueError(
            f"row {index} lacks {missing}; a per-problem row needs 'samples' and "
            f"'is_corrects' (has {sorted(row)})"
        )
    for key in ("problem_id", "orig_dset_idx", "name", "theorem_name"):
        if row.get(key) is not None:
            problem_id = str(row[key])
            break
    else:
        problem_id = str(index)
    prompt = row.get("prompt")
    if prompt is None:
        prompt = row.get("question")
    try:
        return ProblemSamples(
            problem_id=problem_id,
            prompt="" if prompt is None else prompt,
            samples=_plain_list(row["samples"]),
            correct=_plain_list(row["is_corrects"]),  # ProblemSamples.correct <- is_corrects
            gt_answer=row.get("gt_answer"),
            answers=_plain_list(row.get("answers")),
            scores=_plain_list(row.get("scores")),
        )
    except (TypeError, ValueError) as error:
        raise type(error)(f"row {index}: {error}") from None


def _plain_list(value: Any) -> Any:
    """Arrow/numpy sequences (from parquet or ``datasets``) as Python lists; others unchanged."""
    if value is not None and not isinstance(value, (list, str)) and hasattr(value, "tolist"):
        return value.tolist()
    return value


def _read_json_rows(path: Path) -> list[Any]:
    """Rows of a ``.json`` file (a list of rows) or a ``.jsonl`` file (a row per line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
    return rows


def _read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from None
    return pq.read_table(path).to_pylist()


def _rows_from_path(path: Path) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".parquet":
        return _read_parquet_rows(path)
    if path.suffix in (".json", ".jsonl"):
        return _read_json_rows(path)
    raise ValueError(f"{path}: unknown file type {path.suffix!r}; use .json, .jsonl or .parquet")


def load_monkey_business(source: Any) -> list[ProblemSamples]:
    """Per-problem sample sets in the ``ScalingIntelligence/monkey_business`` form.

    ``source`` is a list of row dicts, a path to a ``.json`` (a list of rows, as released),
    ``.jsonl`` or ``.parquet`` file, or a ``datasets.Dataset`` (one split, e.g. the ``test``
    split of ``load_dataset("ScalingIntelligence/monkey_business", "GSM8K_Llama-3-8B-Instruct")``).
    Rows need ``samples`` and ``is_corrects``; see the module docstring for the other keys.
    """
    loaded = sys.modules.get("datasets")  # a Dataset can only exist if datasets is imported
    if isinstance(source, (str, os.PathLike)):
        rows: Iterable[Any] = _rows_from_path(Path(source))
    elif isinstance(source, list):
        rows = source
    elif loaded is not None and isinstance(
        source, (loaded.DatasetDict, loaded.IterableDatasetDict)
    ):
        raise TypeError(
            f"got a {type(source).__name__} with splits {list(source)}; pass one split, "
            "e.g. source['test']"
        )
    elif loaded is not None and isinstance(source, (loaded.Dataset, loaded.IterableDataset)):
        rows = iter(source)
    else:
        raise TypeError(
            "source must be a list of dicts, a .json/.jsonl/.parquet path or a "
            f"datasets.Dataset, got {type(source).__name__}"
        )
    problems = [_problem_from_row(row, index) for index, row in enumerate(rows)]
    _check_unique_ids(problems)
    return problems


def _check_unique_ids(problems: list[ProblemSamples]) -> None:
    seen: set[str] = set()
    for problem in problems:
        if problem.problem_id in seen:
            raise ValueError(f"problem_id {problem.problem_id!r} appears in more than one row")
        seen.add(problem.problem_id)


def _check_record(record: Any, where: str) -> dict[str, Any]:
    """One per-sample record, with absent optional keys filled in as None."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a sample record must be a JSON object, got {record!r:.80}")
    missing = [key for key in ("problem_id", "sample_index", "completion") if key not in record]
    if missing:
        raise ValueError(f"{where}: the sample record lacks {missing}")
    problem_id, index, completion = (
        record["problem_id"],
        record["sample_index"],
        record["completion"],
    )
    if not isinstance(problem_id, str) or not problem_id:
        raise ValueError(f"{where}: problem_id must be a non-empty str, got {problem_id!r}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"{where}: sample_index must be an int >= 0, got {index!r}")
    if not isinstance(completion, str):
        raise ValueError(f"{where}: completion must be a str, got {type(completion).__name__}")
    answer, correct, score = record.get("answer"), record.get("correct"), record.get("score")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"{where}: answer must be a str or null, got {answer!r}")
    if correct is not None and not isinstance(correct, bool):
        raise ValueError(f"{where}: correct must be true, false or null, got {correct!r}")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
        raise ValueError(f"{where}: score must be a finite number or null, got {score!r}")
    return {**record, "answer": answer, "correct": correct, "score": score}


def read_sample_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-sample records of a JSONL file, checked, in file order.

    Blank lines are skipped. A last line that is not valid JSON and has no closing newline is
    what a run killed mid-write leaves behind: it is skipped with a warning. Any other bad
    line is a ``ValueError`` naming its line number. Absent ``answer``/``correct``/``score``
    keys read as None.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")  # a complete last line leaves "" after its newline
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: cut off mid-write
                warnings.warn(
                    f"{path}:{number}: skipping a truncated last line ({len(line)} characters; "
                    "was the sampling run stopped mid-write?)",
                    stacklevel=2,
                )
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
        records.append(_check_record(record, f"{path}:{number}"))
    return records


def group_samples(
    records: Iterable[Mapping[str, Any]],
    prompts: Mapping[str, str] | None = None,
    gt_answers: Mapping[str, str] | None = None,
) -> list[ProblemSamples]:
    """Per-sample records grouped into one :class:`ProblemSamples` per problem.

    Problems come in the order of their first record; samples are sorted by ``sample_index``
    (gaps are allowed, e.g. after a run was stopped; a repeated ``(problem_id, sample_index)``
    is an error). ``answers`` is set when any of a problem's records has an ``answer`` key and
    ``scores`` when its records have scores (all or none of them). ``prompts`` and
    ``gt_answers``, when given, must cover every problem; otherwise the prompt is empty and
    there is no reference answer.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    has_answer_key: dict[str, bool] = {}
    for position, raw in enumerate(records):
        had_answer = isinstance(raw, Mapping) and "answer" in raw
        record = _check_record(dict(raw) if isinstance(raw, Mapping) else raw, f"record {position}")
        problem_id = record["problem_id"]
        groups.setdefault(problem_id, []).append(record)
        has_answer_key[problem_id] = has_answer_key.get(problem_id, False) or had_answer
    for name, mapping in (("prompts", prompts), ("gt_answers", gt_answers)):
        if mapping is not None:
            missing = [pid for pid in groups if pid not in mapping]
            if missing:
                raise ValueError(f"{name} has no entry for problem(s) {missing[:5]}")
    problems = []
    for problem_id, group in groups.items():
        group.sort(key=lambda r: r["sample_index"])
        for before, after in pairwise(group):
            if before["sample_index"] == after["sample_index"]:
                raise ValueError(
                    f"problem {problem_id!r} has sample_index {after['sample_index']} twice"
                )
        scores = [r["score"] for r in group]
        num_scored = sum(s is not None for s in scores)
        if 0 < num_scored < len(scores):
            raise ValueError(
                f"problem {problem_id!r}: {num_scored} of {len(scores)} samples have a score; "
                "give every sample a score or none"
            )
        problems.append(
            ProblemSamples(
                problem_id=problem_id,
                prompt="" if prompts is None else prompts[problem_id],
                samples=[r["completion"] for r in group],
                correct=[r["correct"] for r in group],
                gt_answer=None if gt_answers is None else gt_answers[problem_id],
                answers=[r["answer"] for r in group] if has_answer_key[problem_id] else None,
                scores=[float(s) for s in scores] if num_scored else None,
            )
        )
    return problems


def write_problem_samples_jsonl(
    problems: Iterable[ProblemSamples], path: str | os.PathLike
) -> Path:
    """Write one per-problem JSON line per problem (monkey_business keys, see
    :meth:`ProblemSamples.to_row`); :func:`load_problem_samples` reads it back."""
    path = Path(path)
    problems = list(problems)
    for position, problem in enumerate(problems):
        if not isinstance(problem, ProblemSamples):
            raise TypeError(
                f"problems[{position}] must be a ProblemSamples, got {type(problem).__name__}"
            )
    _check_unique_ids(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for problem in problems:
            stream.write(json.dumps(problem.to_row(), ensure_ascii=False) + "\n")
    return path


def load_problem_samples(path: str | os.PathLike) -> list[ProblemSamples]:
    """Problems from a file in either form, told apart by the keys of its first row.

    A row with ``sample_index`` and ``completion`` means per-sample JSONL (read with
    :func:`read_sample_records`, so a truncated last line is tolerated, and grouped with
    :func:`group_samples`); a row with ``samples`` and ``is_corrects`` means per-problem rows
    (our files and the monkey_business ones, ``.json``, ``.jsonl`` or ``.parquet``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".jsonl":
        first = _first_jsonl_row(path)
        if _is_sample_record(first):
            return group_samples(read_sample_records(path))
        rows = _rows_from_path(path) if first is not None else []
    else:
        rows = _rows_from_path(path)
        first = rows[0] if rows else None
    if first is None:
        raise ValueError(f"{path} holds no rows")
    if _is_sample_record(first):
        raise ValueError(f"{path}: per-sample records must be a .jsonl file")
    if isinstance(first, dict) and {"samples", "is_corrects"} <= first.keys():
        return load_monkey_business(rows)
    keys = sorted(first) if isinstance(first, dict) else type(first).__name__
    raise ValueError(
        f"{path}: cannot tell the form from the first row's keys {keys}; expected "
        "'sample_index' and 'completion' (per sample) or 'samples' and 'is_corrects' "
        "(per problem)"
    )


def _is_sample_record(row: Any) -> bool:
    return isinstance(row, dict) and {"sample_index", "completion"} <= row.keys()


def _first_jsonl_row(path: Path) -> Any:
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
    return None


__all__ = [
    "ProblemSamples",
    "group_samples",
    "load_monkey_business",
    "load_problem_samples",
    "read_sample_records",
    "write_problem_samples_jsonl",
]

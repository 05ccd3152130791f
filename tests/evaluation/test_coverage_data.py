"""Repeated-sampling data: ProblemSamples, the monkey_business loader (rows, .json, .jsonl,
.parquet, datasets.Dataset), per-sample JSONL records (truncated last line, bad lines,
duplicates) and the per-problem round trip."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from hazyzoo.evaluation.coverage_data import (
    ProblemSamples,
    group_samples,
    load_monkey_business,
    load_problem_samples,
    read_sample_records,
    write_problem_samples_jsonl,
)
from hazyzoo.evaluation.coverage_metrics import coverage_curve


def monkey_rows() -> list[dict]:
    """Two rows shaped like a GSM8K config of ScalingIntelligence/monkey_business."""
    return [
        {
            "question": "Tom has 3 apples and buys 4. How many?",
            "gt_answer": "3 + 4 = 7\n#### 7",
            "prompt": "Question: ...\nAnswer: ...\n\nQuestion: Tom has 3 apples and buys 4.",
            "samples": ["3+4=7\n#### 7", "#### 8", "#### 7"],
            "is_corrects": [True, False, True],
            "orig_dset_split": "test",
            "orig_dset_idx": 12,
        },
        {
            "question": "What is 2 * 5?",
            "gt_answer": "#### 10",
            "samples": ["#### 11", "#### 12"],
            "is_corrects": [False, False],
            "orig_dset_split": "test",
            "orig_dset_idx": 3,
        },
    ]


def test_problem_samples_counts_and_validation():
    problem = ProblemSamples("p", "prompt", ["a", "b", "c"], [True, None, False], gt_answer="a")
    assert problem.num_samples == 3
    assert problem.num_correct == 1  # None (not verified) does not count as correct
    with pytest.raises(ValueError, match=r"correct has 2 entries but samples has 3"):
        ProblemSamples("p", "", ["a", "b", "c"], [True, False])
    with pytest.raises(TypeError, match=r"correct\[1\] must be a bool or None, got int 1"):
        ProblemSamples("p", "", ["a", "b"], [True, 1])
    with pytest.raises(TypeError, match=r"samples\[0\] must be a str"):
        ProblemSamples("p", "", [3], [True])
    with pytest.raises(ValueError, match="answers has 1 entries but samples has 2"):
        ProblemSamples("p", "", ["a", "b"], [True, False], answers=["a"])
    with pytest.raises(ValueError, match=r"scores\[1\] must be finite"):
        ProblemSamples("p", "", ["a", "b"], [True, False], scores=[0.5, float("inf")])
    with pytest.raises(TypeError, match="samples must be a list, got tuple"):
        ProblemSamples("p", "", ("a",), [True])
    with pytest.raises(TypeError, match="gt_answer must be a str or None, got int"):
        ProblemSamples("p", "", ["a"], [True], gt_answer=7)
    with pytest.raises(ValueError, match="problem_id must be a non-empty str"):
        ProblemSamples("", "", ["a"], [True])


def test_load_monkey_business_from_rows():
    problems = load_monkey_business(monkey_rows())
    first, second = problems
    assert first.problem_id == "12" and second.problem_id == "3"  # orig_dset_idx
    assert first.prompt.startswith("Question: ...")  # the prompt sent to the model...
    assert second.prompt == "What is 2 * 5?"  # ...else the question
    assert first.gt_answer == "3 + 4 = 7\n#### 7"
    assert (first.num_samples, first.num_correct) == (3, 2)
    assert (second.num_samples, second.num_correct) == (2, 0)
    assert first.answers is None and first.scores is None
    coverage = coverage_curve(
        [p.num_samples for p in problems], [p.num_correct for p in problems], [1, 2]
    )
    assert coverage.tolist() == pytest.approx([(2 / 3 + 0) / 2, (1 + 0) / 2])
    # without any id key, the row position is the id
    bare = load_monkey_business([{"samples": ["x"], "is_corrects": [True]}])
    assert bare[0].problem_id == "0" and bare[0].prompt == "" and bare[0].gt_answer is None


def test_load_monkey_business_rejects_bad_rows():
    with pytest.raises(ValueError, match=r"row 0 lacks \['is_corrects'\]"):
        load_monkey_business([{"samples": ["x"], "is_correct": [True]}])
    rows = monkey_rows()
    rows[1]["orig_dset_idx"] = 12
    with pytest.raises(ValueError, match="problem_id '12' appears in more than one row"):
        load_monkey_business(rows)
    rows = monkey_rows()
    rows[0]["is_corrects"] = [True, False]
    with pytest.raises(ValueError, match=r"row 0: .*\.correct has 2 entries but samples has 3"):
        load_monkey_business(rows)
    with pytest.raises(TypeError, match="source must be a list of dicts"):
        load_monkey_business(42)
    with pytest.raises(TypeError, match="row 0 must be a dict"):
        load_monkey_business([["samples"]])


def test_load_monkey_business_from_files(tmp_path: Path):
    expected = load_monkey_business(monkey_rows())
    released = tmp_path / "GSM8K_Llama-3-8B-Instruct.json"  # the release: one JSON list
    released.write_text(json.dumps(monkey_rows()))
    assert load_monkey_business(released) == expected
    assert load_monkey_business(str(released)) == expected
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps(row) + "\n" for row in monkey_rows()))
    assert load_monkey_business(lines) == expected
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    table = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(monkey_rows()), table)
    assert load_monkey_business(table) == expected
    with pytest.raises(ValueError, match=r"unknown file type '\.csv'"):
        (tmp_path / "rows.csv").write_text("a,b\n")
        load_monkey_business(tmp_path / "rows.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_monkey_business(tmp_path / "missing.json")


def test_load_monkey_business_from_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(monkey_rows())
    assert load_monkey_business(dataset) == load_monkey_business(monkey_rows())
    with pytest.raises(TypeError, match=r"pass one split, e.g. source\['test'\]"):
        load_monkey_business(datasets.DatasetDict({"test": dataset}))


def sample_lines() -> list[str]:
    records = [
        {"problem_id": "b", "sample_index": 1, "completion": "B1", "answer": "4",
         "correct": False, "score": 0.1},
        {"problem_id": "a", "sample_index": 0, "completion": "A0", "answer": None,
         "correct": None, "score": 0.9},
        {"problem_id": "b", "sample_index": 0, "completion": "B0", "answer": "5",
         "correct": True, "score": -1},
        {"problem_id": "a", "sample_index": 2, "completion": "A2", "answer": "x",
         "correct": True, "score": 0.5, "seed": 7},
    ]  # fmt: skip
    return [json.dumps(r) + "\n" for r in records]


def test_read_sample_records_skips_a_truncated_last_line(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(sample_lines()) + '{"problem_id": "a", "sample_ind')
    with pytest.warns(UserWarning, match=r"samples.jsonl:5: skipping a truncated last line"):
        records = read_sample_records(path)
    assert [r["completion"] for r in records] == ["B1", "A0", "B0", "A2"]
    assert records[3]["seed"] == 7  # extra keys are kept
    # a complete file (newline-terminated, blank lines allowed) reads without a warning
    path.write_text("".join(sample_lines()) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_sample_records(path)) == 4
    # absent optional keys read as None
    path.write_text('{"problem_id": "a", "sample_index": 0, "completion": "c"}')
    assert read_sample_records(path)[0] == {
        "problem_id": "a", "sample_index": 0, "completion": "c",
        "answer": None, "correct": None, "score": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ('{"problem_id": "a", "sample_ind\n', r":2: not a JSON line"),
        ('{"problem_id": "a", "completion": "c"}\n', r":2: the sample record lacks \['sample_index'\]"),
        ('{"problem_id": "a", "sample_index": -1, "completion": "c"}\n', r":2: sample_index must"),
        ('{"problem_id": "a", "sample_index": 1.0, "completion": "c"}\n', r":2: sample_index must"),
        ('{"problem_id": 3, "sample_index": 1, "completion": "c"}\n', r":2: problem_id must"),
        ('{"problem_id": "a", "sample_index": 1, "completion": "c", "correct": 1}\n',
         r":2: correct must be true, false or null, got 1"),
        ('{"problem_id": "a", "sample_index": 1, "completion": "c", "score": "high"}\n',
         r":2: score must be a finite number or null"),
        ('{"problem_id": "a", "sample_index": 1, "completion": "c", "answer": 4}\n',
         r":2: answer must be a str or null, got 4"),
        ("[1, 2]\n", r":2: a sample record must be a JSON object"),
    ],
)  # fmt: skip
def test_read_sample_records_names_the_bad_line(tmp_path: Path, bad_line: str, match: str):
    path = tmp_path / "samples.jsonl"
    path.write_text(sample_lines()[0] + bad_line + sample_lines()[1])
    with pytest.raises(ValueError, match=match):
        read_sample_records(path)


def test_group_samples_sorts_by_index_and_keeps_first_appearance_order(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(sample_lines()))
    problems = group_samples(
        read_sample_records(path),
        prompts={"a": "prompt a", "b": "prompt b", "unused": "?"},
        gt_answers={"a": "x", "b": "5"},
    )
    b, a = problems
    assert (b.problem_id, b.prompt, b.gt_answer) == ("b", "prompt b", "5")
    assert b.samples == ["B0", "B1"] and b.correct == [True, False]
    assert b.answers == ["5", "4"] and b.scores == [-1.0, 0.1]
    assert a.samples == ["A0", "A2"] and a.correct == [None, True] and a.answers == [None, "x"]
    assert (a.num_samples, a.num_correct) == (2, 1)
    # no answer key and no scores: answers and scores are None, prompt empty
    bare = group_samples([{"problem_id": "q", "sample_index": 0, "completion": "c"}])
    assert bare[0].answers is None and bare[0].scores is None and bare[0].prompt == ""


def test_group_samples_rejects_duplicates_and_gaps_in_mappings():
    record = {"problem_id": "q", "sample_index": 0, "completion": "c"}
    with pytest.raises(ValueError, match="problem 'q' has sample_index 0 twice"):
        group_samples([record, dict(record, completion="d")])
    with pytest.raises(ValueError, match=r"prompts has no entry for problem\(s\) \['q'\]"):
        group_samples([record], prompts={"other": "x"})
    with pytest.raises(ValueError, match=r"gt_answers has no entry"):
        group_samples([record], gt_answers={})
    with pytest.raises(ValueError, match="1 of 2 samples have a score"):
        group_samples([dict(record, score=0.3), dict(record, sample_index=1)])
    with pytest.raises(ValueError, match=r"record 1: sample_index must be an int >= 0"):
        group_samples([record, dict(record, sample_index="1")])


def test_per_problem_round_trip_and_form_detection(tmp_path: Path):
    problems = [
        ProblemSamples("p1", "prompt 1", ["s0", "s1"], [True, None], gt_answer="42",
                       answers=["42", None], scores=[0.25, 1.0]),
        ProblemSamples("p2", "prompt 2", ["t0"], [False]),
    ]  # fmt: skip
    path = write_problem_samples_jsonl(problems, tmp_path / "out" / "problems.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert set(rows[0]) >= {"problem_id", "prompt", "samples", "is_corrects", "gt_answer"}
    assert rows[0]["is_corrects"] == [True, None]
    assert load_problem_samples(path) == problems
    # the same loader reads a monkey_business release file and per-sample JSONL
    released = tmp_path / "MATH_Pythia-1B.json"
    released.write_text(json.dumps(monkey_rows()))
    assert load_problem_samples(released) == load_monkey_business(monkey_rows())
    per_sample = tmp_path / "samples.jsonl"
    per_sample.write_text("".join(sample_lines()) + '{"problem_id": "b", "sam')
    with pytest.warns(UserWarning, match="truncated"):
        grouped = load_problem_samples(per_sample)
    assert [p.problem_id for p in grouped] == ["b", "a"]
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"text": "hello"}\n')
    with pytest.raises(ValueError, match=r"cannot tell the form .* \['text'\]"):
        load_problem_samples(unknown)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no rows"):
        load_problem_samples(empty)
    with pytest.raises(ValueError, match="problem_id 'p1' appears in more than one row"):
        write_problem_samples_jsonl([problems[0], problems[0]], tmp_path / "dup.jsonl")
    with pytest.raises(TypeError, match=r"problems\[0\] must be a ProblemSamples"):
        write_problem_samples_jsonl([rows[0]], tmp_path / "bad.jsonl")

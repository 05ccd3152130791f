"""Repeated sampling (Large Language Monkeys): records, resume, backends, stop strings, hook."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import hazyzoo
from hazyzoo.evaluation import sampling
from hazyzoo.evaluation.arithmetic import build_arithmetic_tokenizer
from hazyzoo.evaluation.sampling import (
    RECORD_FIELDS,
    SamplingConfig,
    load_samples,
    resolve_backend,
    sample_problems,
)
from hazyzoo.jrt import cut_at_stop
from tests.evaluation import tiny

PROBLEMS = [
    {"problem_id": "p0", "prompt": "Tom has 3 apples and buys 4 more.\nAnswer:"},
    {"problem_id": "p1", "prompt": "Anna has 5 books.\nAnswer:"},
    {"problem_id": "p2", "prompt": "How many coins does Ben have?\nAnswer:"},
]


@pytest.fixture(scope="module")
def tok():
    # pad 0, eos 1, exact decode (pieces keep their leading space), "\n" a token of its own
    return build_arithmetic_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny.llama(len(tok), seed=1)


@pytest.fixture(scope="module")
def based(tok):
    return tiny.based(len(tok), seed=2)


def _config(**overrides) -> SamplingConfig:
    defaults = dict(num_samples=5, batch_size=2, max_new_tokens=5, temperature=1.0, stop=())
    return SamplingConfig(**{**defaults, **overrides})


def _run(model, tok, path: Path, config: SamplingConfig, **kwargs):
    return sample_problems(model, tok, PROBLEMS, config, output_path=path, progress=False, **kwargs)


def test_records_schema_and_counts(llama, tok, tmp_path) -> None:
    path = tmp_path / "samples.jsonl"
    records = _run(llama, tok, path, _config())
    assert len(records) == len(PROBLEMS) * 5
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records == load_samples(path)
    for record in records:
        assert tuple(record) == RECORD_FIELDS
        assert isinstance(record["completion"], str)
        assert record["answer"] is None and record["correct"] is None and record["score"] is None
    for problem in PROBLEMS:
        mine = [r["sample_index"] for r in records if r["problem_id"] == problem["problem_id"]]
        assert mine == list(range(5))
    # sampling, not greedy: five samples of a random model are not all alike
    p0 = [r["completion"] for r in records if r["problem_id"] == "p0"]
    assert len(set(p0)) > 1
    assert p0[0:2] != p0[2:4]  # each batch has its own seed
    settings = json.loads(path.with_name(path.name + ".config.json").read_text())
    assert settings["backend"] == "hydragen" and settings["batch_size"] == 2


@pytest.mark.parametrize("which", ["llama", "based"])
def test_resume_after_kill_matches_uninterrupted(which, llama, based, tok, tmp_path) -> None:
    model = {"llama": llama, "based": based}[which]
    config = _config()
    full_path = tmp_path / "full.jsonl"
    full = _run(model, tok, full_path, config)

    # killed after three generate calls, then the last write cut half-way through a line
    path = tmp_path / "resumed.jsonl"
    partial = _run(model, tok, path, config, max_batches=3)
    assert len(partial) == 2 + 2 + 1  # p0's batches [0,2), [2,4), [4,5)
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 12  # 11 bytes into the last line
    path.write_bytes(data[:cut])
    assert len(load_samples(path)) == 4

    resumed = _run(model, tok, path, config)
    assert resumed == full
    assert path.read_bytes() == full_path.read_bytes()  # same lines, same order, no duplicate
    keys = [(r["problem_id"], r["sample_index"]) for r in load_samples(path)]
    assert len(keys) == len(set(keys)) == len(PROBLEMS) * 5


def test_resume_mid_batch_and_complete_file_does_no_work(llama, tok, tmp_path, monkeypatch) -> None:
    config = _config()
    full_path, path = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    full = _run(llama, tok, full_path, config)
    lines = full_path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]))  # p0's second batch [2,4) holds only sample 2
    assert _run(llama, tok, path, config) == full
    assert path.read_bytes() == full_path.read_bytes()

    def fail(*args, **kwargs):
        raise AssertionError("generate called although every sample exists")

    monkeypatch.setattr(llama, "generate", fail)
    assert _run(llama, tok, path, config) == full


def test_resume_with_other_settings_is_refused(llama, tok, tmp_path) -> None:
    path = tmp_path / "samples.jsonl"
    _run(llama, tok, path, _config(), max_batches=1)
    with pytest.raises(ValueError, match=r"temperature: file has 1.0, config has 0.5"):
        _run(llama, tok, path, _config(temperature=0.5))


def test_seed_determines_samples_and_global_rng_is_left_alone(llama, tok, tmp_path) -> None:
    state = torch.get_rng_state()
    a = _run(llama, tok, tmp_path / "a.jsonl", _config(seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    b = _run(llama, tok, tmp_path / "b.jsonl", _config(seed=3))
    c = _run(llama, tok, tmp_path / "c.jsonl", _config(seed=4))
    assert a == b
    assert [r["completion"] for r in a] != [r["completion"] for r in c]


def test_auto_backend_picks_hydragen_for_llama_and_generate_for_based(
    llama, based, tok, tmp_path, monkeypatch
) -> None:
    assert resolve_backend(llama, "auto") == "hydragen"
    assert resolve_backend(based, "auto") == "generate"
    assert resolve_backend(llama, "generate") == "generate"
    calls = []
    real = hazyzoo.hydragen.generate

    def spy(model, prefix_ids, **kwargs):
        calls.append((model, kwargs["num_return_sequences"]))
        return real(model, prefix_ids, **kwargs)

    monkeypatch.setattr(hazyzoo.hydragen, "generate", spy)
    _run(llama, tok, tmp_path / "llama.jsonl", _config())
    assert [n for _, n in calls] == [2, 2, 1] * len(PROBLEMS)
    calls.clear()
    records = _run(based, tok, tmp_path / "based.jsonl", _config())
    assert calls == [] and len(records) == len(PROBLEMS) * 5


def test_hydragen_and_generate_backends_agree_on_llama(llama, tok, tmp_path) -> None:
    # the same seeds drive the same sampling steps over the same logits (to float rounding)
    fast = _run(llama, tok, tmp_path / "h.jsonl", _config(backend="hydragen"))
    plain = _run(llama, tok, tmp_path / "g.jsonl", _config(backend="generate"))
    assert [r["completion"] for r in fast] == [r["completion"] for r in plain]


def test_forced_hydragen_on_based_is_a_clear_error(based, tok, tmp_path) -> None:
    with pytest.raises(TypeError, match=r"backend='hydragen' cannot run BasedForCausalLM"):
        _run(based, tok, tmp_path / "x.jsonl", _config(backend="hydragen"))
    assert not (tmp_path / "x.jsonl").exists()


def test_stop_strings_cut_completions(llama, tok, tmp_path) -> None:
    stops = ("a", "e")  # in most words, so most completions get cut
    free = _run(llama, tok, tmp_path / "free.jsonl", _config(max_new_tokens=6))
    cut = _run(llama, tok, tmp_path / "cut.jsonl", _config(max_new_tokens=6, stop=stops))
    assert [cut_at_stop(r["completion"], stops) for r in free] == [r["completion"] for r in cut]
    assert not any(s in r["completion"] for r in cut for s in stops)
    assert sum(a["completion"] != b["completion"] for a, b in zip(free, cut)) >= 3


def test_verifier_hook_fills_correct_and_answer(llama, tok, tmp_path) -> None:
    seen = []

    def verifier(completion: str, problem: dict) -> tuple[bool | None, str | None]:
        seen.append(problem["problem_id"])
        words = completion.split()
        return (len(words) % 2 == 0, words[0] if words else None)

    records = _run(llama, tok, tmp_path / "v.jsonl", _config(), verifier=verifier)
    assert seen == [r["problem_id"] for r in records]
    for record in records:
        words = record["completion"].split()
        assert record["correct"] is (len(words) % 2 == 0)
        assert record["answer"] == (words[0] if words else None)
    assert load_samples(tmp_path / "v.jsonl") == records

    with pytest.raises(TypeError, match="verifier must return"):
        _run(llama, tok, tmp_path / "bad.jsonl", _config(), verifier=lambda c, p: True)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("num_samples", 0, ValueError),
        ("batch_size", 1.5, TypeError),
        ("temperature", 0.0, ValueError),
        ("top_p", 1.5, ValueError),
        ("top_k", -1, ValueError),
        ("seed", -2, ValueError),
        ("stop", ("",), ValueError),
        ("backend", "beam", ValueError),
    ],
)
def test_config_validation_names_the_field(field, value, error) -> None:
    with pytest.raises(error, match=field if field != "stop" else "stop strings"):
        _config(**{field: value})


def test_bad_problems_and_corrupt_file_are_errors(llama, tok, tmp_path) -> None:
    config = _config()
    with pytest.raises(ValueError, match="'p0' appears twice"):
        sample_problems(llama, tok, [PROBLEMS[0]] * 2, config, output_path=tmp_path / "a")
    with pytest.raises(TypeError, match="problem_id"):
        sample_problems(
            llama, tok, [{"problem_id": 3, "prompt": "x"}], config, output_path=tmp_path / "b"
        )
    path = tmp_path / "corrupt.jsonl"
    path.write_text('{"problem_id": "p0"\n{"problem_id": "p0", "sample_index": 1}\n')
    with pytest.raises(ValueError, match=r"corrupt.jsonl:1 is not valid JSON"):
        _run(llama, tok, path, config)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_says_how_to_install(tmp_path) -> None:
    with pytest.raises(ImportError, match="pip install vllm"):
        sample_problems("some/model", None, PROBLEMS, _config(), output_path=tmp_path / "v")
    assert sampling.resolve_backend("some/model") == "vllm"

"""The README's code that a user would copy runs as written."""

from __future__ import annotations

import re

import pytest

from hazyzoo.modeling.layers import SEQUENCE_MIXERS
from tests.conftest import REPO_ROOT
from tests.modeling import test_mixer_contract as contract


def _section_code(heading: str) -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under '## {heading}'"
    return blocks[0]


@pytest.fixture
def token_shift():
    code = _section_code("Adding a mixer")
    assert len(code.strip().splitlines()) <= 40
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    try:
        yield SEQUENCE_MIXERS["token_shift"]
    finally:
        SEQUENCE_MIXERS.pop("token_shift", None)


def test_adding_a_mixer_example_registers_a_mixer_that_keeps_the_contract(token_shift):
    assert token_shift.cls.__name__ == "TokenShift"
    contract.test_sequence_mixer_follows_the_protocol(token_shift)
    contract.test_pieces_through_the_cache_equal_one_call(token_shift)
    contract.test_decode_steps_update_the_state_in_place(token_shift)
    contract.test_left_padding_is_invisible(token_shift)
    contract.test_cache_layer_survives_batch_operations(token_shift)


def test_mad_example_runs_as_written():
    code = _section_code("MAD hybrids and the MAD synthetic tasks")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (2, 20)


def test_vqvae_example_runs_as_written():
    code = _section_code("VQ-VAE with the rotation trick")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["again"].shape == (4, 1, 16, 16)


def test_prospector_example_runs_as_written():
    pytest.importorskip("sklearn")
    code = _section_code("Prospector heads")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    scores, datum = namespace["scores"], namespace["data"][1]
    assert scores.shape == datum.ground_truth.shape
    # "high on the motif": the motif's mean score tops the rest of the document's
    motif = datum.ground_truth == 1
    assert scores[motif].mean() > scores[~motif].mean()
    assert namespace["proba"].shape == (4,)


def test_cookbook_example_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    code = _section_code("Cookbook: template data, mixing, fine-tuning and GPT4All evaluation")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert len(namespace["data"]["train"]) == 100
    assert sorted(set(namespace["data"]["train"]["template"])) == ["copy_span", "yes_no_membership"]
    weights = namespace["weights"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert [round(weights[t], 2) for t in namespace["effects"]] == [0.56, 0.21, 0.22]

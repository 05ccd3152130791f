"""Model cards and Hub uploads, offline: which files would be uploaded to which repo."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl

from hazyzoo import BasedConfig, BasedForCausalLM
from hazyzoo.cli import main as cli_main
from hazyzoo.hub import count_checkpoint_parameters, write_model_card

EXPECTED_FILES = {"config.json", "model.safetensors", "generation_config.json", "README.md"}


@pytest.fixture
def fake_hub(monkeypatch):
    """Patch the two network calls of an upload and record what they were asked to do."""
    calls: dict[str, list] = {"create_repo": [], "commits": []}

    def create_repo(self, repo_id, *args, **kwargs):
        calls["create_repo"].append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, *args, **kwargs):
        files = {}
        for op in operations:
            src = op.path_or_fileobj
            files[op.path_in_repo] = open(src, "rb").read() if isinstance(src, str) else src
        calls["commits"].append({"repo_id": repo_id, "files": files, **kwargs})
        return None

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def _model() -> BasedForCausalLM:
    torch.manual_seed(0)
    return BasedForCausalLM(BasedConfig.tiny())


def _check_card(text: str) -> dict:
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "hazyzoo"
    assert meta["pipeline_tag"] == "text-generation"
    assert "based" in meta["tags"] and "hazyzoo" in meta["tags"]
    return meta


def test_push_to_hub_uploads_config_weights_generation_config_and_card(fake_hub):
    _model().push_to_hub("someone/tiny-based", commit_message="first", base_model="org/base")
    assert fake_hub["create_repo"] == ["someone/tiny-based"]
    (commit,) = fake_hub["commits"]
    assert commit["repo_id"] == "someone/tiny-based"
    assert set(commit["files"]) == EXPECTED_FILES
    assert commit["commit_message"] == "first"
    card = commit["files"]["README.md"].decode()
    meta = _check_card(card)
    assert meta["base_model"] == "org/base"
    assert 'from_pretrained("someone/tiny-based")' in card


def test_save_pretrained_with_push_to_hub(fake_hub, tmp_path):
    _model().save_pretrained(tmp_path / "ckpt", push_to_hub=True, repo_id="someone/other")
    assert fake_hub["create_repo"] == ["someone/other"]
    assert set(fake_hub["commits"][0]["files"]) == EXPECTED_FILES
    assert set(p.name for p in (tmp_path / "ckpt").iterdir()) == EXPECTED_FILES


def test_card_parses_with_model_card_load(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    assert (
        cli_main(
            ["card", str(tmp_path), "--base-model", "hazyresearch/based-360m", "--tag", "mqar"]
        )
        == 0
    )
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "hazyzoo"
    assert card.data.base_model == "hazyresearch/based-360m"
    assert "mqar" in card.data.tags
    n = count_checkpoint_parameters(tmp_path)
    assert n == sum(p.numel() for p in model.parameters())  # tied head counted once
    assert "| sliding_window | 5 |" in card.text


def test_card_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_card(tmp_path)
    assert cli_main(["card", str(tmp_path)]) == 2


def test_card_template_lookup():
    from hazyzoo.hub import card_template

    assert card_template("based.md").read_text().startswith("---\n{{ card_data }}")
    with pytest.raises(FileNotFoundError, match="nope.md"):
        card_template("nope.md")

"""Model cards and Hub uploads, offline: which files would be uploaded to which repo."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl

from hazyzoo import BasedConfig, BasedForCausalLM
from hazyzoo.cli import main as cli_main
from hazyzoo.hub import count_checkpoint_parameters, is_hazyzoo_card, write_model_card

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
    assert cli_main(["card", str(tmp_path)]) == 1


def test_card_template_lookup():
    from hazyzoo.hub import card_template

    assert card_template("based.md").read_text().startswith("---\n{{ card_data }}")
    with pytest.raises(FileNotFoundError, match="nope.md"):
        card_template("nope.md")


def _meta(path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_a_hub_page_shows(tmp_path):
    _model().save_pretrained(tmp_path)
    meta = _meta(tmp_path / "README.md")
    assert meta["license"] == "apache-2.0"  # the BASED reference code's license
    assert meta["library_name"] == "hazyzoo" and meta["pipeline_tag"] == "text-generation"
    assert "based" in meta["tags"]
    assert not {"language", "datasets", "base_model"} & set(meta)  # unknown: not invented
    assert is_hazyzoo_card(tmp_path / "README.md")


def test_card_keeps_existing_metadata_unless_told_otherwise(tmp_path):
    _model().save_pretrained(tmp_path)
    args = ["--base-model", "org/base", "--tag", "mqar", "--dataset", "org/data"]
    assert cli_main(["card", str(tmp_path), *args, "--language", "en"]) == 0
    # A user adds fields to the hazyzoo card's metadata (and keeps the marker line).
    text = (tmp_path / "README.md").read_text()
    text = text.replace("library_name: hazyzoo", "library_name: hazyzoo\nco2_eq_emissions: 12")
    (tmp_path / "README.md").write_text(text)
    assert cli_main(["card", str(tmp_path), "--tag", "extra"]) == 0
    meta = _meta(tmp_path / "README.md")
    assert meta["base_model"] == "org/base" and meta["datasets"] == ["org/data"]
    assert meta["language"] == ["en"] and meta["co2_eq_emissions"] == 12
    assert {"mqar", "extra", "hazyzoo"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0"
    assert cli_main(["card", str(tmp_path), "--license", "mit", "--base-model", "o/b2"]) == 0
    meta = _meta(tmp_path / "README.md")
    assert meta["license"] == "mit" and meta["base_model"] == "o/b2"
    assert "mqar" in meta["tags"] and meta["co2_eq_emissions"] == 12


def test_handwritten_readme_is_kept_unless_overwrite(tmp_path, capsys):
    _model().save_pretrained(tmp_path)
    mine = "---\nlicense: mit\n---\n# My model\n\nI wrote this.\n"
    (tmp_path / "README.md").write_text(mine)
    assert cli_main(["card", str(tmp_path)]) == 1
    assert "README.md was not written by hazyzoo" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == mine
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_model_card(tmp_path)
    _model().save_pretrained(tmp_path)  # save_pretrained leaves any README.md alone
    assert (tmp_path / "README.md").read_text() == mine
    assert cli_main(["card", str(tmp_path), "--overwrite"]) == 0
    assert is_hazyzoo_card(tmp_path / "README.md")
    assert _meta(tmp_path / "README.md")["license"] == "apache-2.0"  # not taken from mine


def test_card_says_where_input_ids_come_from(tmp_path):
    from tests.test_remote_code import tiny_tokenizer

    _model().save_pretrained(tmp_path / "bare")
    bare = (tmp_path / "bare" / "README.md").read_text()
    assert "This repository has no tokenizer files" in bare and "AutoTokenizer" not in bare
    _model().save_pretrained(tmp_path / "tok")
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    assert cli_main(["card", str(tmp_path / "tok"), "--repo-id", "me/tiny"]) == 0
    card = (tmp_path / "tok" / "README.md").read_text()
    assert 'tokenizer = AutoTokenizer.from_pretrained("me/tiny")' in card
    assert "input_ids = tokenizer(" in card and "The tokenizer is included" in card
    # A model with GPT-2's vocabulary and no tokenizer files: the released models' tokenizer.
    torch.manual_seed(0)
    BasedForCausalLM(BasedConfig.tiny(vocab_size=50264)).save_pretrained(tmp_path / "gpt2")
    card = (tmp_path / "gpt2" / "README.md").read_text()
    assert 'tokenizer = AutoTokenizer.from_pretrained("gpt2")' in card
    assert "no tokenizer files: use the `gpt2` tokenizer" in card


def test_card_renders_from_the_bundled_template_alone(tmp_path, monkeypatch):
    import hazyzoo.hub as hub

    monkeypatch.setattr(hub, "_CARD_DIRS", (tmp_path / "nowhere",))
    monkeypatch.setattr(
        hub, "_BUNDLED_CARD_TEMPLATES", {"based.md": "---\n{{ card_data }}\n---\nX"}
    )
    _model().save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "README.md").read_text().endswith("---\nX")


def test_update_model_card_follows_hazyzoo_cards_and_leaves_users_alone(tmp_path):
    from hazyzoo.hub import update_model_card

    _model().save_pretrained(tmp_path)
    (tmp_path / "README.md").unlink()
    assert update_model_card(tmp_path) == tmp_path / "README.md"  # written when absent
    assert update_model_card(tmp_path, base_model="org/base") == tmp_path / "README.md"
    assert _meta(tmp_path / "README.md")["base_model"] == "org/base"
    (tmp_path / "README.md").write_text("# mine\n")
    assert update_model_card(tmp_path) is None
    assert (tmp_path / "README.md").read_text() == "# mine\n"

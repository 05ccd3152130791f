"""The hazyzoo command and the README's promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hazyzoo.cli import build_parser, main
from hazyzoo.zoo import ZOO, zoo_markdown
from tests.conftest import REPO_ROOT

MISSION_PARTS = [
    "BASED",
    "JRT-RNN",
    "RTF",
    "MAD",
    "M2-BERT",
    "VQ-VAE rotation trick",
    "Prospector heads",
    "Hydragen",
    "Cookbook",
    "LoCoV1",
    "Repeated sampling",
]


def test_list_prints_every_part_with_its_status(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for part in MISSION_PARTS:
        assert part in out
    assert {e.status for e in ZOO} <= {"available", "planned", "partial"}


def test_readme_carries_the_same_zoo_table():
    readme = (REPO_ROOT / "README.md").read_text()
    assert zoo_markdown() in readme, (
        "README zoo table is out of date: paste `hazyzoo list --markdown`"
    )


def test_readme_names_the_two_commands_and_ci_runs_make_test():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_bad_arguments_exit_with_usage_error():
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["convert", "mamba", "a", "b"])
    assert err.value.code == 2


def test_import_needs_neither_datasets_nor_evaluate():
    # Make the path finder behave as if the two packages were not installed (the GPU image).
    code = (
        "import sys, importlib.machinery as m\n"
        "orig = m.PathFinder.find_spec\n"
        "def find_spec(name, path=None, target=None):\n"
        "    if name.split('.')[0] in ('datasets', 'evaluate'):\n"
        "        return None\n"
        "    return orig(name, path, target)\n"
        "m.PathFinder.find_spec = staticmethod(find_spec)\n"
        "import hazyzoo, hazyzoo.cli, hazyzoo.datasets_scripts\n"
        "from transformers import AutoConfig\n"
        "assert AutoConfig.for_model('hazyzoo_based').model_type == 'hazyzoo_based'\n"
        "assert 'datasets' not in sys.modules and 'evaluate' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)

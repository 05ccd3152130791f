"""Shared test set-up: offline Hub, deterministic small CPU runs, golden-data location."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the tests may reach the Hub; set before transformers/huggingface_hub import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO_ROOT = Path(__file__).resolve().parent.parent


def golden_dir(name: str) -> Path:
    """``$HAZYZOO_GOLDEN_DIR/<name>`` (default ``../shared/golden``); skip when absent."""
    root = Path(os.environ.get("HAZYZOO_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden"))
    path = root / name
    if not path.is_dir():
        pytest.skip(f"golden data {path} not found (set HAZYZOO_GOLDEN_DIR)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

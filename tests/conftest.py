"""Shared test set-up: offline Hub, deterministic small CPU runs, golden-data location."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the tests may reach the Hub; set before transformers/huggingface_hub import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton fixes this when a
# kernel is defined, i.e. when hazyzoo.kernels is first imported, so it is set here, before any
# test module imports hazyzoo. Models still run the PyTorch references on CPU tensors (dispatch
# picks Triton only for CUDA tensors unless HAZYZOO_KERNELS=triton).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


def pytest_collection_modifyitems(config, items) -> None:
    """Skip tests marked ``gpu`` on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

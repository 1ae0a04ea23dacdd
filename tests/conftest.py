"""Shared fixtures: composed configs with an isolated cache/runs dir per test, and hardware markers.

The materialized embedded model is shared by all tests (`.cache/models` in the repo, git-ignored)
so it is dequantized once per machine, not once per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["CRESCENT_ROOT"] = str(ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("CRESCENT_MODELS", str(ROOT / ".cache" / "models"))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An isolated cache and runs folder for one test (models stay shared)."""
    monkeypatch.setenv("CRESCENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CRESCENT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


@pytest.fixture
def compose(workdir):
    """compose(["key=value", ...]) -> the primary config, as run.py would build it."""
    from crescent.cli import compose as compose_config

    return compose_config


SHARED_DATA = Path(os.environ.get("CRESCENT_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def seed_data(tmp_path, monkeypatch):
    """A data folder holding gsm8k/train.jsonl, so configs with data.source=seed_gsm8k validate:
    the offline data when this checkout has it, else a one-row stand-in (config tests only)."""
    if (SHARED_DATA / "gsm8k" / "train.jsonl").is_file():
        return SHARED_DATA
    stub = tmp_path / "data"
    (stub / "gsm8k").mkdir(parents=True)
    (stub / "gsm8k" / "train.jsonl").write_text(
        '{"question": "What is 2 + 3?", "answer": "#### 5"}\n'
    )
    monkeypatch.setenv("CRESCENT_DATA", str(stub))
    return stub

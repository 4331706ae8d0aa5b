"""Fixtures for the evaluation harness tests (helpers live in eval_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_dataset
from pointseg.evaluation.datasets import load_dataset


@pytest.fixture
def synth_dir(tmp_path) -> Path:
    return make_dataset(tmp_path / "synth")


@pytest.fixture
def synth(synth_dir):
    return load_dataset(synth_dir)



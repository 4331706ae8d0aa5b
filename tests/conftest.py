"""Shared fixtures for the core tests (plain helpers live in synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pointseg import FeatureCache
from synthetic import RESNET18_TRUNK


@pytest.fixture(scope="session")
def cache() -> FeatureCache:
    return FeatureCache()


@pytest.fixture
def shared_weights() -> Path:
    if not RESNET18_TRUNK.is_file():
        pytest.skip("../shared/weights/resnet18-imagenet-trunk is not present")
    return RESNET18_TRUNK

"""Fixtures of the batch tests: one small model (trained once per session) and small images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py

from synthetic import points_from_truth, two_texture_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # batchkit.py

from batchkit import TILE  # noqa: E402


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    from pointseg.segmenter import Segmenter

    images, points = [], []
    for seed in (0, 1):
        image, truth = two_texture_image(seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 5, seed))
    # context_upscale=1: these tests are about tiles, workers and resuming, on a native context (the default
    # would enlarge it for these 160 x 224 images, which tiled prediction refuses: test_tiled_context.py)
    seg = Segmenter(classes=["left", "right", "disc"], tile_size=TILE, cross_validate=False,
                    context_upscale=1).fit(images, points)
    path = tmp_path_factory.mktemp("model") / "m.pointseg"
    seg.save(path)
    return path

"""Fixtures of the batch tests: one small model (trained once per session) and small images."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py

from synthetic import points_from_truth, two_texture_image  # noqa: E402

#: model tile size: small, so a ~600 px image already has several tiles
TILE = 256


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    from pointseg.segmenter import Segmenter

    images, points = [], []
    for seed in (0, 1):
        image, truth = two_texture_image(seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 5, seed))
    seg = Segmenter(classes=["left", "right", "disc"], tile_size=TILE, cross_validate=False).fit(images, points)
    path = tmp_path_factory.mktemp("model") / "m.pointseg"
    seg.save(path)
    return path


def write_images(folder: Path, count: int, start: int = 100, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = two_texture_image(seed=start + i)
        path = folder / f"img{i:03d}{suffix}"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def mosaic(height: int, width: int) -> np.ndarray:
    """A synthetic image of several parts side by side (regions cross the tile borders)."""
    rows = [np.concatenate([two_texture_image(seed=10 * r + c)[0] for c in range(-(-width // 224))], axis=1)
            for r in range(-(-height // 160))]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:height, :width])


def summary(path: Path, drop=("seconds",)) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]

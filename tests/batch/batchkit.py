"""Helpers of the batch tests (small images, summary rows), in a module of its own name: ``conftest`` names
several modules in one run, so a test importing it at run time could get another folder's."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py

from synthetic import two_texture_image  # noqa: E402

#: model tile size: small, so a ~600 px image already has several tiles
TILE = 256


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

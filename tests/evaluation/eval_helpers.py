"""Synthetic datasets whose answers are known, and toy methods, for the evaluation harness tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pointseg.evaluation.datasets import IGNORE
from pointseg.evaluation.methods import Method


def make_dataset(root: Path, n: int = 6, size=(40, 52), with_empty: bool = True, ignore_band: bool = True,
                 noise: float = 0.0, seed: int = 0, rect=(14, 16)) -> Path:
    """Grey images: background 40, a bright (200) rectangle of class 1 at a different place in each image.

    The last image has no class 1 when ``with_empty``; the first has a ring of ignore pixels (255) around
    its rectangle when ``ignore_band``.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    for i in range(n):
        mask = np.zeros((h, w), np.uint8)
        if not (with_empty and i == n - 1):
            top, left = 6 + 2 * i, 8 + 3 * i          # a different image each time
            mask[top:top + rect[0], left:left + rect[1]] = 1
        img = np.where(mask == 1, 200.0, 40.0)
        if noise:
            img = img + rng.normal(0, noise, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if ignore_band and i == 0:
            ring = np.zeros_like(mask, bool)
            ring[4:24, 6:30] = True
            ring[7:19, 9:27] = False
            mask = np.where(ring & (mask == 0), IGNORE, mask).astype(np.uint8)
        Image.fromarray(np.stack([img] * 3, -1)).save(root / "images" / f"im{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i:02d}.png")
    (root / "classes.json").write_text(json.dumps({"0": "normal", "1": "defect"}))
    (root / "meta.json").write_text(json.dumps({"ignore_index": None}))
    return root


class OracleMethod(Method):
    """Predicts the ground truth (ignore pixels as class 0): a perfect method."""

    kind = "oracle"

    def __init__(self, dataset, name="oracle"):
        self.name, self.dataset = name, dataset
        self.fits = []

    def fit(self, images, points, keys, seed=0):
        self.fits.append([np.asarray(p).copy() for p in points])

    def predict(self, image, key):
        m = self.dataset.load_mask(key).astype(np.int64)
        return np.where(m == IGNORE, 0, m)


class ConstantMethod(Method):
    """Predicts class 0 everywhere, whatever the clicks."""

    kind = "constant"

    def __init__(self, name="constant"):
        self.name = name
        self.fits = []

    def fit(self, images, points, keys, seed=0):
        self.fits.append([np.asarray(p).copy() for p in points])

    def predict(self, image, key):
        return np.zeros(image.shape[:2], np.int64)


class NearestMeanMethod(Method):
    """Nearest class mean of the grey value at the clicked pixels: learns the synthetic task from clicks."""

    kind = "nearest-mean"

    def __init__(self, name="nearest-mean"):
        self.name = name

    def fit(self, images, points, keys, seed=0):
        vals, labels = [], []
        for img, p in zip(images, points):
            p = np.asarray(p, np.int64).reshape(-1, 3)
            vals.append(img[p[:, 1], p[:, 0], 0].astype(float))
            labels.append(p[:, 2])
        v, l = np.concatenate(vals), np.concatenate(labels)
        self.classes_ = np.unique(l)
        self.means_ = np.array([v[l == c].mean() for c in self.classes_])

    def predict(self, image, key):
        d = np.abs(image[..., 0].astype(float)[..., None] - self.means_)
        return self.classes_[np.argmin(d, axis=-1)].astype(np.int64)

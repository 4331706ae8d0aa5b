"""Synthetic images whose right answer is known, and where ../shared lives (imported by the core tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESNET18_TRUNK = SHARED / "weights" / "resnet18-imagenet-trunk" / "resnet18-trunk-tvlayout.pth"


def two_texture_image(h: int = 160, w: int = 224, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth grey left part, a striped reddish right part and a dark disc "defect": (image, truth)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float32)
    img[...] = 150 + rng.normal(0, 4, (h, w, 1))
    right = xx >= w // 2
    stripes = 60 * (np.sin(xx / 2.0) > 0)
    img[right] = np.stack([200 + stripes, 90 + stripes * 0.2, 80 + stripes * 0.2], -1)[right]
    disc = (yy - h * 0.3) ** 2 + (xx - w * 0.25) ** 2 < (min(h, w) * 0.12) ** 2
    img[disc] = 30
    truth = np.where(right, 1, 0)
    truth[disc] = 2
    return np.clip(img, 0, 255).astype(np.uint8), truth


def points_from_truth(truth: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = []
    for c in np.unique(truth):
        ys, xs = np.nonzero(truth == c)
        idx = rng.choice(len(xs), per_class, replace=False)
        pts += [[xs[i], ys[i], c] for i in idx]
    return np.array(pts, dtype=np.float64)


def fitted_two_texture(backbone: str = "efficientnet_lite0"):
    """A Segmenter fitted on :func:`two_texture_image` (seed 0) with 6 points per class, the model the ranking
    tests score other images with: ``(seg, image, truth, points)``."""
    from pointseg import Segmenter

    image, truth = two_texture_image(seed=0)
    points = points_from_truth(truth, per_class=6, seed=0)
    return Segmenter(backbone, cross_validate=False).fit([image], [points]), image, truth, points

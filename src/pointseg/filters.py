"""Full-resolution low-level features: what the stride-4 deep map cannot see.

Thin cracks, membranes and small pits are a few pixels wide; on a stride-4 grid their deep features are blurred
into the surroundings. A small filter bank at full resolution (the recipe of ilastik, Labkit and scikit-image's
trainable segmentation) keeps them: per scale σ ∈ {1, 2, 4} the smoothed intensity, gradient magnitude,
Laplacian and the two Hessian eigenvalues (scale-normalised), plus the colour channels themselves.
The linear head sees them beside the deep features ("hybrid" features) and weighs each block per class.

Larger scales are left to the deep features, which see far more context. Computed with scipy's separable
Gaussian filters (about 150 ms per megapixel here). Every filter has a
support of at most :data:`HALO` pixels, so bands of rows computed with that much context equal the whole image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

SIGMAS = (1.0, 2.0, 4.0)
PER_SIGMA = ("gaussian", "gradient", "laplacian", "hessian_max", "hessian_min")
CHANNELS = 3 + len(SIGMAS) * len(PER_SIGMA)
#: context (pixels) each filter needs on each side: the Gaussian's 4σ radius plus 1 for the derivatives
HALO = int(math.ceil(4 * max(SIGMAS))) + 2
#: bumped whenever the responses change, so models and cached features of another bank are not mixed up
VERSION = 1


def channel_names() -> list[str]:
    return ["red", "green", "blue"] + [f"{name}_s{s:g}" for s in SIGMAS for name in PER_SIGMA]


def _derivatives(g: np.ndarray):
    """Central first and second differences, one-sided at the borders (no padded copy)."""
    gx, gy, gxx, gyy = (np.zeros_like(g) for _ in range(4))
    gx[:, 1:-1] = (g[:, 2:] - g[:, :-2]) * 0.5
    gy[1:-1] = (g[2:] - g[:-2]) * 0.5
    gxx[:, 1:-1] = g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]
    gyy[1:-1] = g[2:] - 2 * g[1:-1] + g[:-2]
    gxy = np.zeros_like(g)
    gxy[1:-1] = (gx[2:] - gx[:-2]) * 0.5
    return gx, gy, gxx, gyy, gxy


def low_level_features(rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 → ``CHANNELS x H x W`` float32 filter responses (see module docstring)."""
    h, w = rgb.shape[:2]
    out = np.empty((CHANNELS, h, w), dtype=np.float32)
    np.multiply(np.moveaxis(rgb, -1, 0), np.float32(1.0 / 255.0), out=out[:3])
    grey = out[:3].mean(axis=0)
    i = 3
    for sigma in SIGMAS:
        g = ndi.gaussian_filter(grey, sigma, mode="reflect", truncate=4.0)
        gx, gy, gxx, gyy, gxy = _derivatives(g)
        s2 = np.float32(sigma * sigma)
        trace = (gxx + gyy) * s2
        root = np.sqrt(((gxx - gyy) * s2) ** 2 + 4 * (gxy * s2) ** 2)
        out[i] = g
        out[i + 1] = np.sqrt(gx * gx + gy * gy) * np.float32(sigma)
        out[i + 2] = trace
        out[i + 3] = (trace + root) * 0.5
        out[i + 4] = (trace - root) * 0.5
        i += len(PER_SIGMA)
    return out


def low_level_band(rgb: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of :func:`low_level_features`, computed from those rows plus :data:`HALO` of context."""
    h = rgb.shape[0]
    a, b = max(0, r0 - HALO), min(h, r1 + HALO)
    return low_level_features(rgb[a:b])[:, r0 - a: r1 - a]

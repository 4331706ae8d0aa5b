"""Formula (1) of the method: where a clicked pixel lands on the feature grid, and its feature vector.

Convention. A point ``(x, y)`` names the pixel in column ``x``, row ``y`` (0-based; fractional values
are allowed, e.g. sub-pixel clicks in a zoomed viewer). Pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``, so
its centre is ``(x + 0.5, y + 0.5)``. Formula (1) maps continuous image coordinates to continuous feature
coordinates, ``x_f = x * w_f / w``, and feature cell ``j`` has its centre at ``j + 0.5``. The vector for a
point is therefore sampled bilinearly at cell index ``(x + 0.5) * w_f / w - 0.5`` (clamped at the borders).

This is exactly the convention of ``torch.nn.functional.interpolate(..., align_corners=False)``, which
upsamples the logits for prediction; since the head is linear, the logit a point was trained with equals
the logit predicted at that pixel, so the training accuracy shown to the user is the accuracy of the map
the user sees.
"""

from __future__ import annotations

import numpy as np


def project(xy: np.ndarray, extent: tuple[int, int], grid_size: tuple[int, int]) -> np.ndarray:
    """Image pixel coordinates ``(n, 2)`` [x, y] → continuous feature-cell indices ``(n, 2)`` [u, v]."""
    (h, w), (hf, wf) = extent, grid_size
    xy = np.asarray(xy, dtype=np.float64)
    u = (xy[:, 0] + 0.5) * wf / w - 0.5
    v = (xy[:, 1] + 0.5) * hf / h - 0.5
    return np.stack([u, v], axis=1)


def sample_bilinear(data: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of a ``C x h x w`` map at cell coordinates ``(n, 2)`` → ``(n, C)``."""
    c, h, w = data.shape
    u = np.clip(uv[:, 0], 0.0, w - 1)
    v = np.clip(uv[:, 1], 0.0, h - 1)
    u0 = np.floor(u).astype(np.intp)
    v0 = np.floor(v).astype(np.intp)
    u1 = np.minimum(u0 + 1, w - 1)
    v1 = np.minimum(v0 + 1, h - 1)
    du = (u - u0)[:, None]
    dv = (v - v0)[:, None]
    flat = data.reshape(c, -1).T  # (h*w, C) view-free gather below
    top = flat[v0 * w + u0] * (1 - du) + flat[v0 * w + u1] * du
    bottom = flat[v1 * w + u0] * (1 - du) + flat[v1 * w + u1] * du
    return (top * (1 - dv) + bottom * dv).astype(np.float32)


def sample_points(fmap, xy: np.ndarray) -> np.ndarray:
    """Feature vectors of a :class:`~pointseg.features.FeatureMap` at image points ``(n, 2)``."""
    if len(xy) == 0:
        return np.zeros((0, fmap.deep_channels), dtype=np.float32)
    uv = project(xy, fmap.extent, fmap.grid_size)
    deep = sample_bilinear(fmap.data, uv)
    if fmap.context is None:
        return deep
    return np.concatenate([deep, sample_upsampled(fmap.context, uv, fmap.grid_size)], axis=1)


def sample_upsampled(coarse: np.ndarray, uv: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """Bilinear samples at grid coordinates ``uv`` of ``coarse`` upsampled to ``grid_size`` (bilinear,
    ``align_corners=False``), without building the upsampled map: each of the four grid cells around a point
    is itself a bilinear sample of the coarse map at that cell's centre."""
    hf, wf = grid_size
    _, hc, wc = coarse.shape
    u = np.clip(uv[:, 0], 0.0, wf - 1)
    v = np.clip(uv[:, 1], 0.0, hf - 1)
    u0, v0 = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
    u1, v1 = np.minimum(u0 + 1, wf - 1), np.minimum(v0 + 1, hf - 1)
    du, dv = (u - u0)[:, None], (v - v0)[:, None]

    def cell(ui, vi):  # a grid cell's upsampled value; the interpolation clamps negative sources at 0
        cu = np.maximum((ui + 0.5) * wc / wf - 0.5, 0.0)
        cv = np.maximum((vi + 0.5) * hc / hf - 0.5, 0.0)
        return sample_bilinear(coarse, np.stack([cu, cv], axis=1))

    top = cell(u0, v0) * (1 - du) + cell(u1, v0) * du
    bottom = cell(u0, v1) * (1 - du) + cell(u1, v1) * du
    return (top * (1 - dv) + bottom * dv).astype(np.float32)

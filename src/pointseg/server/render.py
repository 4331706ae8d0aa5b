"""Compact encodings of predictions for the browser, and the "suggest where to click" regions.

Overlays travel as palette PNGs: one byte per pixel before compression, and a few kilobytes after
it for typical label maps, instead of megabytes of JSON.  Probability and uncertainty views are
palette PNGs too, whose palette carries per-entry transparency (tRNS), so the browser composites
them directly over the image.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pointseg.annotations import parse_color

#: zlib level for overlays: level 1 is ~5x faster than the default and only ~20% larger on label maps
PNG_LEVEL = 1


def _png(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL, **params)
    return buf.getvalue()


def label_png(labels: np.ndarray, colors: list[str]) -> bytes:
    """Label map ``(H, W)`` → palette PNG whose palette entry ``k`` is class ``k``'s colour (the core's
    label-PNG format, at a fast compression level)."""
    from pointseg.outputs import encode_png, palette_image

    return encode_png(palette_image(labels, colors), compress_level=PNG_LEVEL)


def ramp_png(values: np.ndarray, color: tuple[int, int, int], *, max_alpha: int = 230,
             gamma: float = 1.0) -> bytes:
    """Values in [0, 1] ``(H, W)`` → palette PNG of one colour whose opacity follows the value."""
    q = np.clip(np.rint(np.asarray(values, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(q, mode="P")
    img.putpalette(list(color) * 256)
    alpha = (np.linspace(0, 1, 256) ** gamma * max_alpha).astype(np.uint8)
    return _png(img, transparency=alpha.tobytes())


def proba_png(proba_k: np.ndarray, color: str) -> bytes:
    return ramp_png(proba_k, parse_color(color), max_alpha=235)


def uncertainty_png(uncertainty: np.ndarray, n_classes: int) -> bytes:
    """1 − max probability, rescaled so the most uncertain possible value (1 − 1/K) is opaque magenta."""
    top = max(1e-6, 1.0 - 1.0 / max(2, n_classes))
    return ramp_png(np.asarray(uncertainty) / top, (236, 0, 140), max_alpha=240, gamma=0.8)


def label_stats(labels: np.ndarray, classes: list[str], background: int = 0,
                ng_area: float | None = None) -> dict:
    """Fraction of pixels per class and connected regions of every class but the background one (the
    core's summary row, as used in ``summary.csv``; OK/NG when ``ng_area`` is set)."""
    from pointseg.outputs import summarize

    if background:
        # the core's summary treats the first class as the good one: put the background class first
        order = [background] + [k for k in range(len(classes)) if k != background]
        lut = np.empty(max(len(classes), int(labels.max(initial=0)) + 1), dtype=labels.dtype)
        lut[order] = np.arange(len(order), dtype=labels.dtype)
        labels, classes = lut[labels], [classes[k] for k in order]
    return summarize(labels, classes, ng_area=ng_area)


def suggest_clicks(uncertainty: np.ndarray, *, n: int = 5, avoid: list[tuple[float, float]] = (),
                   block: int | None = None) -> list[dict]:
    """The centres of the ``n`` most uncertain regions, at least two blocks apart and away from clicks.

    The uncertainty map is averaged over blocks of about 1/24 of the image side (a region, not a
    single noisy pixel), then greedily picked with non-maximum suppression.  Returned coordinates are
    pixel positions ``x, y`` with a ``score`` in [0, 1] (mean uncertainty of the block) and ``radius``.
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    h, w = u.shape
    if block is None:
        block = int(max(8, round(max(h, w) / 24)))
    hb, wb = max(1, h // block), max(1, w // block)
    crop = u[: hb * block, : wb * block]
    if crop.size == 0:
        return []
    grid = crop.reshape(hb, block, wb, block).mean(axis=(1, 3))
    taken = np.zeros_like(grid, dtype=bool)
    for ax, ay in avoid:
        bx, by = int(ax // block), int(ay // block)
        taken[max(0, by - 1): by + 2, max(0, bx - 1): bx + 2] = True
    order = np.argsort(grid, axis=None)[::-1]
    picks = []
    for flat in order:
        by, bx = divmod(int(flat), wb)
        if taken[by, bx]:
            continue
        score = float(grid[by, bx])
        if score <= 0.02 or len(picks) >= n:
            break
        picks.append({"x": (bx + 0.5) * block, "y": (by + 0.5) * block, "score": round(score, 4),
                      "radius": block * 0.75})
        taken[max(0, by - 2): by + 3, max(0, bx - 2): bx + 3] = True
    return picks

"""Simulated users: where the clicks go.

Clicks are ``(n, 3)`` int64 arrays of ``[x, y, class]`` with ``x`` = column and ``y`` = row of the clicked
pixel (integer pixel indices; :mod:`pointseg.evaluation.methods` converts them to the core's convention).

Two protocols:

* **random** (:func:`random_clicks`): per image and per class present, clicks drawn uniformly among the
  class's pixels at least ``margin`` px from a class boundary; nested over the number of clicks (the 5-click
  set contains the 2-click set).
* **corrective** (:func:`initial_clicks`, :func:`corrective_click`): one click per class present at the point
  deepest inside the class, then one click at a time at the point deepest inside the largest wrongly
  labelled region of the current prediction, labelled with its true class (the NoC protocol of RITM /
  SimpleClick, extended to several classes).
"""
from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from .datasets import IGNORE

_SQUARE = np.ones((3, 3), dtype=bool)


def stable_seed(*parts: int | str) -> list[int]:
    """An entropy list for :func:`numpy.random.default_rng` that is stable across runs and platforms."""
    out = []
    for p in parts:
        out.append(zlib.crc32(p.encode()) if isinstance(p, str) else int(p))
    return out


def eligible_pixels(mask: np.ndarray, class_id: int, margin: int = 2) -> np.ndarray:
    """Boolean map of the pixels where a random click on ``class_id`` may go.

    A pixel is eligible when every pixel within ``margin`` px (a (2·margin+1)² square) that lies inside the
    image belongs to the class, i.e. the class mask eroded by ``margin`` (other classes and ignore pixels
    count as boundary, the image border does not). When the eroded mask is empty (thin or tiny regions),
    the unshrunk class mask is used.
    """
    region = mask == class_id
    if margin <= 0 or not region.any():
        return region
    eroded = ndimage.binary_erosion(region, structure=_SQUARE, iterations=margin, border_value=1)
    return eroded if eroded.any() else region


def random_clicks(
    mask: np.ndarray,
    n_classes: int,
    counts: list[int] | tuple[int, ...],
    seed: int,
    key: str,
    margin: int = 2,
) -> dict[int, np.ndarray]:
    """Nested random click sets for one image.

    Parameters
    ----------
    mask : HxW uint8 class ids, :data:`~pointseg.evaluation.datasets.IGNORE` = ignore.
    n_classes : number of classes.
    counts : clicks per class, e.g. ``(2, 5, 10, 20)``.
    seed, key : the draw depends only on (seed, key, class), so every method sees the same clicks.
    margin : boundary margin in pixels (see :func:`eligible_pixels`).

    Returns
    -------
    dict mapping each count N to an ``(m, 3)`` array ``[x, y, class]`` with N clicks per class present
    (fewer when a class has fewer eligible pixels); the set for a smaller N is a prefix of the larger one
    within each class.

    Examples
    --------
    >>> m = np.zeros((20, 20), np.uint8); m[:, 10:] = 1
    >>> sets = random_clicks(m, 2, (2, 5), seed=0, key="a")
    >>> sets[2].shape, sets[5].shape
    ((4, 3), (10, 3))
    """
    counts = sorted(set(int(c) for c in counts))
    biggest = counts[-1] if counts else 0
    per_class: dict[int, np.ndarray] = {}
    for c in range(n_classes):
        ok = eligible_pixels(mask, c, margin)
        flat = np.flatnonzero(ok)
        if flat.size == 0:
            continue
        rng = np.random.default_rng(stable_seed(seed, key, c, 2))
        pick = rng.choice(flat.size, size=min(biggest, flat.size), replace=False)
        ys, xs = np.unravel_index(flat[pick], mask.shape)
        per_class[c] = np.stack([xs, ys, np.full_like(xs, c)], axis=1).astype(np.int64)
    out = {}
    for n in counts:
        parts = [arr[:n] for arr in per_class.values()]
        out[n] = np.concatenate(parts, axis=0) if parts else np.zeros((0, 3), np.int64)
    return out


def deepest_point(region: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel of ``region`` farthest from its boundary (Euclidean distance transform;
    pixels outside the image count as boundary). Among equally deep pixels (e.g. the ridge of an elongated
    rectangle) the one nearest their centroid is taken, then the first in raster order."""
    padded = np.pad(region, 1, constant_values=False)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    top = dist.max()
    cand = np.argwhere(dist >= top - 1e-9)
    if len(cand) == 1:
        return int(cand[0, 0]), int(cand[0, 1])
    centre = cand.mean(axis=0)
    best = cand[int(np.argmin(((cand - centre) ** 2).sum(axis=1)))]
    return int(best[0]), int(best[1])


def initial_clicks(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """One click per class present, at the point deepest inside that class's largest region."""
    clicks = []
    for c in range(n_classes):
        region = mask == c
        if not region.any():
            continue
        region = _largest_component(region)
        r, col = deepest_point(region)
        clicks.append((col, r, c))
    return np.asarray(clicks, dtype=np.int64).reshape(-1, 3)


def _largest_component(region: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(region)
    if n <= 1:
        return region
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def error_regions(prediction: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected wrongly-labelled regions, split by true class.

    Returns ``(labels, sizes, true_class)``: a label image (0 = correct or ignore), the pixel count of each
    region (index 0 unused) and each region's true class. 4-connectivity; a region never mixes true classes,
    so its click has one well-defined label.
    """
    wrong = (prediction != mask) & (mask != IGNORE)
    labels = np.zeros(mask.shape, dtype=np.int32)
    true_class = [0]
    offset = 0
    for c in np.unique(mask[wrong]):
        lab, n = ndimage.label(wrong & (mask == c))
        labels[lab > 0] = lab[lab > 0] + offset
        true_class.extend([int(c)] * n)
        offset += n
    sizes = np.bincount(labels.ravel(), minlength=offset + 1)
    return labels, sizes, np.asarray(true_class, dtype=np.int64)


def corrective_click(
    prediction: np.ndarray, mask: np.ndarray, clicked: np.ndarray | None = None
) -> np.ndarray | None:
    """The next corrective click: ``[x, y, class]`` at the point deepest inside the largest wrongly
    labelled region of ``prediction``, labelled with its true class; ``None`` when nothing is wrong.

    ``clicked`` (``(n, 3)`` existing clicks) are removed from the error map first, so a pixel the classifier
    keeps getting wrong is not clicked twice. Ties between equally large regions go to the lowest true class,
    then to raster order.
    """
    if prediction.shape != mask.shape:
        raise ValueError(f"prediction shape {prediction.shape} != mask shape {mask.shape}")
    pred = prediction.copy() if clicked is not None and len(clicked) else prediction
    if clicked is not None and len(clicked):
        cl = np.asarray(clicked, dtype=np.int64)
        pred[cl[:, 1], cl[:, 0]] = mask[cl[:, 1], cl[:, 0]]
    labels, sizes, true_class = error_regions(pred, mask)
    if sizes.size <= 1 or sizes[1:].max() == 0:
        return None
    sizes = sizes.copy()
    sizes[0] = -1
    best = int(np.argmax(sizes))
    r, c = deepest_point(labels == best)
    return np.array([c, r, true_class[best]], dtype=np.int64)

"""An anomaly image score learned from clean surface: a memory bank of normal feature vectors.

The supervised image score (largest predicted defect region) only knows the defect types the user clicked.
A part with a defect type no annotated image showed scores like clean surface: it is missed. PatchCore
(Roth et al. 2022) and PaDiM (Defard et al. 2021) judge a part instead by how unlike *normal* surface each
of its patches is: keep the deep feature vectors of defect-free images (a memory bank), and score each cell
of a new image by the distance to its nearest neighbour in the bank. No defect example is needed, so any
defect type counts.

Here the vectors are the segmenter's own deep features (the stride-4 block), averaged over 3 x 3 cells and
taken every second cell (stride 8: PatchCore's "locally aware patch features"), standardised per channel with
the bank's statistics, then projected to :data:`PROJECTED_DIMS` dimensions by a fixed random matrix (Johnson-Lindenstrauss: distances are kept within a few per cent, and the nearest-neighbour search
is ~4x cheaper; PaDiM's random channel subset is the same idea). The bank holds at most :data:`BANK_MAX`
vectors, drawn at random (seeded) from the OK images' cells - or, without OK images, from the cells of the
annotated defective images that the model calls background well away from any defect (see
:func:`safe_background_cells`). The image score is the maximum of the nearest-neighbour distance map after
a light Gaussian smoothing (σ = 1 cell), so one odd cell does not decide a part, over the cells away from
the image's edge (:func:`interior`).

>>> bank = build_bank([np.random.default_rng(0).normal(size=(50, 8))])
>>> bank.n_vectors, bank.n_channels
(50, 8)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pointseg.errors import PointsegError

#: vectors kept in a bank (a random, seeded subset beyond that): 4,096 x 64 float32 = 1 MB in a model file.
#: Scoring a part costs cells x BANK_MAX x PROJECTED_DIMS multiply-adds (a 500 x 1250 px part: 10,000 cells)
BANK_MAX = 4096
#: dimensions of the projected vectors
PROJECTED_DIMS = 64
#: grid cells per bank cell along each axis (stride 4 -> 8)
CELL_STEP = 2
#: σ (cells) of the smoothing of the distance map before its maximum is taken
SMOOTH_SIGMA = 1.0
#: cells along the image's edge left out of the bank and of the score (see :func:`interior`)
BORDER_CELLS = 2
#: added to each channel's standard deviation (a constant channel must not divide by zero)
SCALE_FLOOR = 1e-3
#: grid rows of the stride-4 map read at once (bounds memory on huge images)
BAND_CELLS = 256
#: test vectors per nearest-neighbour block (bounds the distance matrix: 2048 x 4096 float32 = 32 MB)
QUERY_BLOCK = 2048
#: defect cells (model labels or clicks) are kept this many bank cells away from the background cells a
#: bank without OK images is built from
SAFE_MARGIN = 2


def projection_matrix(n_channels: int, seed: int = 0) -> np.ndarray:
    """A fixed Gaussian random projection ``n_channels x PROJECTED_DIMS`` (scaled so lengths are kept)."""
    rng = np.random.default_rng([seed, n_channels, 13])
    return (rng.standard_normal((n_channels, PROJECTED_DIMS)) / math.sqrt(PROJECTED_DIMS)).astype(np.float32)


def cell_grid_size(fmap) -> tuple[int, int]:
    """Bank cells that cover the image (not its padding): ``(rows, cols)`` at stride ``stride * CELL_STEP``."""
    h, w = fmap.image_size
    cell = fmap.stride * CELL_STEP
    return -(-h // cell), -(-w // cell)


def cell_features(fmap) -> np.ndarray:
    """The locally averaged deep feature vector (the stride-4 block only: the stride-32 context describes
    where a cell is in the part more than what its surface looks like, and measured worse) of every bank
    cell of ``fmap``'s image: ``(rows * cols, channels)`` float32 in row-major order (:func:`cell_grid_size`),
    read in bands of rows so a huge image's map is never copied whole."""
    from scipy.ndimage import uniform_filter

    rows, cols = cell_grid_size(fmap)
    gh, gw = fmap.grid_size
    out = np.empty((rows * cols, fmap.data.shape[0]), np.float32)
    band = max(CELL_STEP, BAND_CELLS // CELL_STEP * CELL_STEP)
    for r0 in range(0, min(gh, rows * CELL_STEP), band):
        r1 = min(gh, r0 + band)
        a0, a1 = max(0, r0 - 1), min(gh, r1 + 1)   # one cell of halo for the 3 x 3 average
        c1 = min(gw, cols * CELL_STEP + 1)
        block = np.asarray(fmap.data[:, a0:a1, :c1], dtype=np.float32)
        block = uniform_filter(block, size=(1, 3, 3), mode="nearest")
        block = block[:, r0 - a0: r1 - a0: CELL_STEP, : cols * CELL_STEP: CELL_STEP]
        first = r0 // CELL_STEP
        n_rows = min(rows - first, band // CELL_STEP)
        if block.shape[1] < n_rows or block.shape[2] < cols:   # a grid one cell short of the image's cells
            block = np.pad(block, ((0, 0), (0, n_rows - block.shape[1]), (0, cols - block.shape[2])), mode="edge")
        block = block[:, :n_rows, :cols]
        out[first * cols: (first + n_rows) * cols] = block.reshape(block.shape[0], -1).T
    return out


def interior(shape: tuple[int, int]) -> np.ndarray:
    """``(rows, cols)`` bool: the cells at least :data:`BORDER_CELLS` from the image's edge (all of them
    when the image is too small to leave any). A CNN's cells at the edge see its zero padding, and a part's
    edge (a cut, a chamfer) differs from tile to tile more than its surface does: measured, including them
    made the score worse on both per-part sets."""
    rows, cols = shape
    keep = np.zeros(shape, bool)
    b = BORDER_CELLS
    if rows > 2 * b and cols > 2 * b:
        keep[b: rows - b, b: cols - b] = True
    else:
        keep[:] = True
    return keep


def cells_of_labels(labels: np.ndarray, fmap, background: int) -> np.ndarray:
    """``(rows, cols)`` bool: bank cells with any non-background pixel of ``labels``."""
    rows, cols = cell_grid_size(fmap)
    cell = fmap.stride * CELL_STEP
    h, w = labels.shape
    pad = np.zeros((rows * cell, cols * cell), bool)
    pad[:h, :w] = labels != background
    return pad.reshape(rows, cell, cols, cell).any(axis=(1, 3))


def safe_background_cells(labels: np.ndarray, fmap, background: int, defect_xy: np.ndarray | None) -> np.ndarray:
    """``(rows, cols)`` bool: cells the model calls background with no predicted defect and no defect click
    within :data:`SAFE_MARGIN` cells - the normal surface of an annotated defective image."""
    from scipy.ndimage import binary_dilation

    defect = cells_of_labels(labels, fmap, background)
    cell = fmap.stride * CELL_STEP
    if defect_xy is not None and len(defect_xy):
        r = np.clip((np.asarray(defect_xy)[:, 1] // cell).astype(np.intp), 0, defect.shape[0] - 1)
        c = np.clip((np.asarray(defect_xy)[:, 0] // cell).astype(np.intp), 0, defect.shape[1] - 1)
        defect[r, c] = True
    near = binary_dilation(defect, np.ones((3, 3), bool), iterations=SAFE_MARGIN) if defect.any() else defect
    return ~near


def nearest_distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query vector to its nearest bank vector (blocked matrix products)."""
    from threadpoolctl import threadpool_limits

    bank_sq = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(queries), np.float32)
    with threadpool_limits(1):   # a product of this size gains nothing from a busy thread pool
        for q0 in range(0, len(queries), QUERY_BLOCK):
            q = queries[q0: q0 + QUERY_BLOCK]
            d2 = bank_sq[None, :] - 2.0 * (q @ bank.T)
            out[q0: q0 + len(q)] = d2.min(axis=1) + np.einsum("ij,ij->i", q, q)
    return np.sqrt(np.maximum(out, 0.0))


def subsample(vectors: np.ndarray, limit: int = BANK_MAX, seed: int = 0) -> np.ndarray:
    """At most ``limit`` rows of ``vectors``, drawn without replacement (seeded: the same bank every time)."""
    if len(vectors) <= limit:
        return vectors
    keep = np.sort(np.random.default_rng([seed, 29]).choice(len(vectors), limit, replace=False))
    return vectors[keep]


@dataclass
class AnomalyBank:
    """Normal feature vectors and how new cells are brought into their space; :meth:`score` judges an image.

    A cell's feature vector ``f`` (:func:`cell_features`) becomes ``((f - mean) / scale) @ projection``:
    standardised per channel with the bank's own statistics (so no channel dominates the distance by its
    scale alone), then projected. ``vectors``: ``(n, PROJECTED_DIMS)`` float32; ``mean``, ``scale``:
    ``(channels,)``; ``projection``: ``(channels, PROJECTED_DIMS)``; ``source``: ``"ok_images"`` or
    ``"defective_background"`` (no OK images: see the module docstring).
    """

    vectors: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    projection: np.ndarray
    source: str = "ok_images"

    def __post_init__(self):
        self.vectors, self.mean, self.scale, self.projection = (
            np.ascontiguousarray(a, dtype=np.float32) for a in (self.vectors, self.mean, self.scale, self.projection))
        c = self.projection.shape[0] if self.projection.ndim == 2 else -1
        if (self.vectors.ndim != 2 or self.projection.ndim != 2 or self.vectors.shape[1] != self.projection.shape[1]
                or not len(self.vectors) or self.mean.shape != (c,) or self.scale.shape != (c,)):
            raise PointsegError(f"an anomaly bank needs (n, d) vectors, (c,) mean and scale and a (c, d) projection, "
                                f"got {self.vectors.shape}, {self.mean.shape}, {self.scale.shape}, {self.projection.shape}")
        if not all(np.isfinite(a).all() for a in (self.vectors, self.mean, self.scale, self.projection)) \
                or (self.scale <= 0).any():
            raise PointsegError("the anomaly bank holds non-finite values or a scale <= 0; retrain the model")
        if self.source not in BANK_SOURCES:
            raise PointsegError(f"unknown anomaly bank source {self.source!r}; one of {', '.join(BANK_SOURCES)}")

    @property
    def n_vectors(self) -> int:
        return int(len(self.vectors))

    @property
    def n_channels(self) -> int:
        return int(self.projection.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        return (((features - self.mean) / self.scale) @ self.projection).astype(np.float32, copy=False)

    def distance_map(self, fmap, features: np.ndarray | None = None) -> np.ndarray:
        """``(rows, cols)`` smoothed nearest-neighbour distance of each bank cell of ``fmap``'s image."""
        from scipy.ndimage import gaussian_filter

        if fmap.data.shape[0] != self.n_channels:
            raise PointsegError(f"the anomaly bank was built on {self.n_channels} feature channels, this image "
                                f"has {fmap.data.shape[0]}: use the model with the backbone it was trained with")
        features = cell_features(fmap) if features is None else features
        dist = nearest_distances(self.project(features), self.vectors).reshape(cell_grid_size(fmap))
        return gaussian_filter(dist, SMOOTH_SIGMA, mode="nearest", truncate=3.0) if SMOOTH_SIGMA else dist

    def score(self, fmap, features: np.ndarray | None = None, where: np.ndarray | None = None) -> float:
        """The image's anomaly score: the largest smoothed distance over its :func:`interior` cells (and
        only those where ``where`` is true, when given: a clean-surface score of a defective image)."""
        dist = self.distance_map(fmap, features)
        keep = interior(dist.shape) if where is None else interior(dist.shape) & where
        return float(dist[keep].max()) if keep.any() else 0.0


BANK_SOURCES = ("ok_images", "defective_background")


def build_bank(feature_sets: list[np.ndarray], source: str = "ok_images", seed: int = 0) -> AnomalyBank | None:
    """A bank from the cell features of several images (each ``(n_i, channels)``, already restricted to the
    cells that count), at most :data:`BANK_MAX` vectors with equal shares per image where they have that
    many (what a small image leaves goes to the others); ``None`` when there are none."""
    sets = [f for f in feature_sets if len(f)]
    if not sets:
        return None
    feats = np.concatenate([subsample(f, n, seed + i) for i, (f, n) in enumerate(zip(sets, _shares(sets)))])
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0) + SCALE_FLOOR
    bank = AnomalyBank(np.zeros((1, PROJECTED_DIMS)), mean, scale, projection_matrix(feats.shape[1]), source)
    bank.vectors = bank.project(feats)
    return bank


def _shares(sets: list[np.ndarray], total: int = BANK_MAX) -> list[int]:
    """Rows to keep of each set: equal shares of ``total``, a set smaller than its share keeping all it has
    and leaving the rest to the others (water-filling)."""
    order = sorted(range(len(sets)), key=lambda i: len(sets[i]))
    shares, left = [0] * len(sets), total
    for k, i in enumerate(order):
        shares[i] = min(len(sets[i]), left // (len(sets) - k))
        left -= shares[i]
    return shares

"""Auto-context: a second head that also sees the first head's class probabilities around each pixel.

Why. A linear head on the CNN + filter-bank features labels each pixel from that pixel's features alone;
on thin structures (cracks, membranes) it marks a band 2-3x wider than the annotation, and no choice of
points lifts it (BENCHMARKS.md, "Thin structures"). The shape of its own score map says more: the centre of
a line is a ridge of the crack probability (strongly negative curvature across it), the band's edges are
slopes (large gradient). Stage 2 (ilastik's auto-context, Tu & Bai 2010) is a second logistic regression
on the original features plus the stage-1 probabilities filtered at a few scales (smoothed, gradient
magnitude, Hessian eigenvalues), trained on the same points.

Why out-of-fold. On its own training points stage 1 is right by construction, so stage 2 trained on
in-sample maps would learn "trust stage 1". The stage-2 training rows therefore take their context from
stage-1 heads fitted without them: leave-one-image-out when the points span several images, else
stratified k-fold over the points (the one cross-validation protocol's splits,
:func:`pointseg.classifier.cross_validation_folds`). Prediction uses the full stage-1 head.

More clicks. Under corrective clicks the second stage helps up to ~20 clicks per image and hurts beyond
(CrackForest: +0.026 IoU over the linear head at 20, -0.05 at 40): the late clicks land in the 1-3 px band
where the annotation and the image disagree, and stage 2 follows them. Its logits are therefore faded into
stage 1's as clicks accumulate (:func:`stage2_weight`): ``a * stage 2 + (1 - a) * stage 1`` with
``a = min(1, STAGE2_FULL_CLICKS / clicks per image)`` — the full stage 2 up to that many clicks per
annotated image, half of it at twice as many (BENCHMARKS.md, "The thin preset under more clicks").

Cost. Context channels need only the stage-1 logits of a box plus a margin of :data:`RADIUS` pixels, so a
box's stage-2 logits equal the same crop of the whole image's (viewports stay exact); both heads' linear
parts are one matrix product with 2K rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pointseg.classifier import LinearHead, PointClassifier, Standardizer, cross_validation_folds, single_thread
from pointseg.features import Scores

#: bumped whenever the context channels change (a model file stores it; a mismatch asks for a retrain)
AUTOCONTEXT_VERSION = 1
#: scales (pixels) at which the stage-1 probabilities are filtered; under corrective clicks on CrackForest
#: (0.5, 1, 2, 4), (1, 2) and (1, 2, 4, 8) all did worse (BENCHMARKS.md, "Thresholds, stage-2 inputs ...")
CONTEXT_SIGMAS = (1.0, 2.0, 4.0)
#: per scale: the smoothed probability, its gradient magnitude and its Hessian eigenvalues (max, min)
PER_SIGMA = ("smoothed", "gradient", "hessian_max", "hessian_min")
#: Gaussians are truncated at 3 sigma (scipy's radius: int(3 sigma + 0.5)); the second derivatives are
#: central differences of central differences, two pixels more
TRUNCATE = 3.0
RADIUS = int(TRUNCATE * max(CONTEXT_SIGMAS) + 0.5) + 2
#: stage 2's L2 strength relative to stage 1's (C / this): a few strongly predictive context channels
#: beside hundreds of features that already fit the points, so a firmer penalty keeps stage 2 from
#: re-fitting the points through the features (bench/thin_diagnosis.py --ceiling); x10 was no better over
#: six seeds, and a weaker or firmer penalty on the context channels alone did worse
STAGE2_PENALTY = 4.0
#: clicks (point rows) per annotated image up to which stage 2 counts in full; beyond, its logits are
#: blended with stage 1's, weight STAGE2_FULL_CLICKS / clicks per image (None: never faded). A stage-2
#: penalty growing or decaying with the clicks, and stage 2 fitted on the first 20 clicks only, did worse
STAGE2_FULL_CLICKS: float | None = 20.0
#: stage 2's class weighting: "same" (stage 1's ``class_weight``) or a value for stage 2 alone
STAGE2_CLASS_WEIGHT = "same"
#: how the out-of-fold stage-1 heads are made: "images" (leave-one-image-out when the points span several
#: images, else k-fold over the points: the cross-validation protocol's folds) or "points" (k-fold over the
#: points always)
FOLDS = "images"


def context_classes(n_classes: int) -> list[int]:
    """Classes whose probability maps feed stage 2 (two classes: the second only, the first is 1 - it)."""
    return [1] if n_classes == 2 else list(range(n_classes))


def n_context_channels(n_classes: int) -> int:
    return len(context_classes(n_classes)) * (1 + len(CONTEXT_SIGMAS) * len(PER_SIGMA))


def context_names(classes: list[str]) -> list[str]:
    """Names of the context channels, in order (for reports and the model file)."""
    names = []
    for k in context_classes(len(classes)):
        names.append(f"p[{classes[k]}]")
        names += [f"{name}_s{s:g}(p[{classes[k]}])" for s in CONTEXT_SIGMAS for name in PER_SIGMA]
    return names


def _filtered(prob: np.ndarray) -> np.ndarray:
    """``(n, k, h, w)`` probabilities (already padded by RADIUS) → ``(n, C_ctx, h, w)`` context channels.
    Only the interior (RADIUS from every side) is exact; callers crop it."""
    from scipy.ndimage import gaussian_filter

    n, k, h, w = prob.shape
    out = np.empty((n, k, 1 + len(CONTEXT_SIGMAS) * len(PER_SIGMA), h, w), dtype=np.float32)
    out[:, :, 0] = prob
    for i, sigma in enumerate(CONTEXT_SIGMAS):
        g = gaussian_filter(prob, (0, 0, sigma, sigma), mode="nearest", truncate=TRUNCATE)
        gy, gx = np.gradient(g, axis=(2, 3))
        gyy, gyx = np.gradient(gy, axis=(2, 3))
        gxx = np.gradient(gx, axis=3)
        # scale-normalised (sigma, sigma^2) so the channels of different scales have like magnitudes
        half_trace, diff = (gxx + gyy) / 2, np.sqrt(((gxx - gyy) / 2) ** 2 + gyx**2)
        j = 1 + i * len(PER_SIGMA)
        out[:, :, j] = g
        out[:, :, j + 1] = sigma * np.hypot(gx, gy)
        out[:, :, j + 2] = sigma**2 * (half_trace + diff)
        out[:, :, j + 3] = sigma**2 * (half_trace - diff)
    return out.reshape(n, -1, h, w)


def _probabilities(logits: torch.Tensor, n_classes: int) -> np.ndarray:
    return torch.softmax(logits, dim=-3)[..., context_classes(n_classes), :, :].numpy()


def _grown(y0, y1, x0, x1, size):
    """The box grown by RADIUS, clipped to the image, and the edge padding that completes it."""
    h, w = size
    a0, a1, b0, b1 = max(0, y0 - RADIUS), min(h, y1 + RADIUS), max(0, x0 - RADIUS), min(w, x1 + RADIUS)
    pad = ((a0 - (y0 - RADIUS), (y1 + RADIUS) - a1), (b0 - (x0 - RADIUS), (x1 + RADIUS) - b1))
    return (a0, a1, b0, b1), pad


def context_at(scores, xy: np.ndarray, n_classes: int) -> np.ndarray:
    """Context channels ``(n, C_ctx)`` at image points ``xy`` ``(n, 2)`` [x, y] (the pixel a point falls
    in), from a stage-1 :class:`~pointseg.features.Scores`; equal to :func:`context_box` of the whole image
    at those pixels (image edges are extended as the whole-image filters extend them)."""
    h, w = scores.image_size
    cols = np.clip(np.floor(xy[:, 0]).astype(np.intp), 0, w - 1)
    rows = np.clip(np.floor(xy[:, 1]).astype(np.intp), 0, h - 1)
    side = 2 * RADIUS + 1
    patches = np.empty((len(xy), len(context_classes(n_classes)), side, side), dtype=np.float32)
    for i, (r, c) in enumerate(zip(rows, cols)):
        (a0, a1, b0, b1), pad = _grown(r, r + 1, c, c + 1, (h, w))
        prob = _probabilities(scores.logits(a0, a1, b0, b1), n_classes)
        patches[i] = np.pad(prob, ((0, 0), *pad), mode="edge")
    if not len(xy):
        return np.zeros((0, n_context_channels(n_classes)), dtype=np.float32)
    return _filtered(patches)[:, :, RADIUS, RADIUS]


@dataclass
class AutoContextHead:
    """Two linear heads: ``stage1`` on the features, ``stage2`` on the features followed by the context
    channels of stage 1's probabilities (:func:`context_names`)."""

    stage1: LinearHead
    stage2: LinearHead

    @property
    def n_classes(self) -> int:
        return int(self.stage1.coef.shape[0])

    def folded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(weights (2K, C), bias (2K,), context weights (K, C_ctx))`` on raw features: rows 0..K-1 are
        stage 1's logits, K..2K-1 stage 2's feature part (its bias included); stage 2's logits are those
        plus ``context weights @ context channels``."""
        w1, b1 = self.stage1.folded()
        w2, b2 = self.stage2.folded()
        c = w1.shape[1]
        return np.concatenate([w1, w2[:, :c]]), np.concatenate([b1, b2]), np.ascontiguousarray(w2[:, c:])


class AutoContextScores(Scores):
    """Stage-2 :class:`~pointseg.features.Scores`: logits of any box, exact against the whole image.

    ``both`` is the Scores of the stacked linear parts (2K rows, :meth:`AutoContextHead.folded`). The deep
    grid, the deep and fine parts and the fine mean (what zoomed-out previews use) are stage 1's: a screen
    pixel there covers several image pixels, and the context is a full-resolution refinement. A Scores
    itself, so everything that takes a head's Scores (``Segmenter.predict_region``) takes these.
    """

    def __init__(self, both, context_weights: np.ndarray):  # no Scores.__init__: every method is answered here
        self.both = both
        self.k = int(context_weights.shape[0])
        self.w_context = torch.from_numpy(np.ascontiguousarray(context_weights, dtype=np.float32))
        self.image_size, self.extent = both.image_size, both.extent
        self.grid_size, self.stride = both.grid_size, both.stride
        self.levels = both.levels  # the pooled levels of zoomed-out previews: stage 1's, as the grid

    def grid_window(self, rows, cols, level: int = 0) -> torch.Tensor:
        return self.both.grid_window(rows, cols, level)[: self.k]

    def grid(self) -> torch.Tensor:
        return self.grid_window((0, self.grid_size[0]), (0, self.grid_size[1]))

    def fine_mean_logits(self):
        fine = self.both.fine_mean_logits()
        return None if fine is None else fine[: self.k]

    def deep_logits(self, y0, y1, x0, x1) -> torch.Tensor:
        return self.both.deep_logits(y0, y1, x0, x1)[: self.k]

    def fine_logits(self, y0, y1, x0, x1):
        fine = self.both.fine_logits(y0, y1, x0, x1)
        return None if fine is None else fine[: self.k]

    def stage1_logits(self, y0, y1, x0, x1) -> torch.Tensor:
        return self.both.logits(y0, y1, x0, x1)[: self.k]

    def logits(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        (a0, a1, b0, b1), pad = _grown(y0, y1, x0, x1, self.image_size)
        both = self.both.logits(a0, a1, b0, b1)
        prob = np.pad(_probabilities(both[: self.k], self.k), ((0, 0), *pad), mode="edge")
        ctx = _filtered(prob[None])[0, :, RADIUS:-RADIUS, RADIUS:-RADIUS]
        inner = both[self.k:, y0 - a0: y1 - a0, x0 - b0: x1 - b0]
        out = torch.matmul(self.w_context, torch.from_numpy(ctx).reshape(ctx.shape[0], -1))
        return out.reshape(self.k, y1 - y0, x1 - x0).add_(inner)


def stage2_weight(n_rows: int, n_images: int) -> float:
    """Stage 2's share of the logits after ``n_rows`` clicks (scribble strokes count one each) on
    ``n_images`` annotated images (module docstring, "More clicks"): 1 up to STAGE2_FULL_CLICKS per image,
    then that over the clicks per image."""
    if STAGE2_FULL_CLICKS is None or n_rows <= 0 or n_images <= 0:
        return 1.0
    return float(min(1.0, STAGE2_FULL_CLICKS * n_images / n_rows))


def blended(stage1: LinearHead, stage2: LinearHead, weight: float) -> LinearHead:
    """The stage-2 head whose logits are ``weight * stage 2 + (1 - weight) * stage 1``: stage 2's feature
    inputs share stage 1's standardiser, so the blend is one stage-2 LinearHead (context weights scaled),
    and prediction, boxes and the model file are those of any stage-2 head."""
    if weight >= 1.0:
        return stage2
    c = stage1.coef.shape[1]
    coef = weight * stage2.coef.astype(np.float64)
    coef[:, :c] += (1.0 - weight) * stage1.coef
    intercept = weight * stage2.intercept.astype(np.float64) + (1.0 - weight) * stage1.intercept
    return LinearHead(coef.astype(np.float32), intercept.astype(np.float32), stage2.standardizer)


def fit_autocontext(clf: PointClassifier, stage1: LinearHead, fmaps: list, X: np.ndarray, xy: np.ndarray,
                    y: np.ndarray, groups: np.ndarray, n_classes: int, standardizer: Standardizer,
                    init: AutoContextHead | None = None, n_actions: int | None = None) -> AutoContextHead:
    """Fit stage 2 on click rows ``X`` (features), ``xy`` (positions), ``y``, ``groups`` (index into
    ``fmaps``) with out-of-fold stage-1 context (module docstring); ``stage1`` is the full stage-1 head.
    ``n_actions``: the user's clicks and scribble strokes behind the rows, which the fade counts (default:
    the rows; a scribble's rasterised points are one stroke, placed along the structure, not corrective
    clicks)."""
    with single_thread():  # hundreds of patch-sized products: a thread pool only adds waiting (see classifier)
        context = out_of_fold_context(clf, stage1, fmaps, X, xy, y, groups, n_classes, standardizer)
    mean = context.mean(axis=0)
    scale = context.std(axis=0)
    scale[scale < 1e-3] = 1.0
    both = Standardizer(np.concatenate([standardizer.mean, mean]).astype(np.float32),
                        np.concatenate([standardizer.scale, scale]).astype(np.float32))
    start = init.stage2 if init is not None and init.stage2.coef.shape == (n_classes, both.mean.shape[0]) else None
    weight = clf.class_weight if STAGE2_CLASS_WEIGHT == "same" else STAGE2_CLASS_WEIGHT
    firm = PointClassifier(clf.kind, clf.C / STAGE2_PENALTY, weight, clf.random_state)
    stage2 = firm.fit(np.concatenate([X, context], axis=1), y, n_classes, both, init=start)
    n_actions = len(y) if n_actions is None else int(n_actions)
    return AutoContextHead(stage1, blended(stage1, stage2, stage2_weight(n_actions, len(np.unique(groups)))))


def _folds(y: np.ndarray, groups: np.ndarray) -> list:
    """Leave-one-image-out (FOLDS "images") unless a held-out image holds the only points of a class (one
    defect type per image, as on neu_seg): its stage-1 head could not predict that class, and stage 2 would
    learn that the class never shows in stage 1. Then, and with FOLDS "points", k-fold over the points."""
    if FOLDS == "images":
        folds, _ = cross_validation_folds(y, groups)
        if all(np.isin(np.unique(y[test]), y[train]).all() for train, test in folds):
            return folds
    folds, _ = cross_validation_folds(y, np.zeros_like(groups))
    return folds


def out_of_fold_context(clf, stage1, fmaps, X, xy, y, groups, n_classes, standardizer) -> np.ndarray:
    """Context channels of each row from a stage-1 head fitted without that row's fold (the full head
    where a fold's training part lacks a second class)."""
    context = np.zeros((len(y), n_context_channels(n_classes)), dtype=np.float32)
    folds = _folds(y, groups)
    if not folds:
        folds = [(np.arange(len(y)), np.arange(len(y)))]
    for train, test in folds:
        head = stage1
        if len(np.unique(y[train])) >= 2 and len(train) < len(y):
            head = clf.fit(X[train], y[train], n_classes, standardizer, init=stage1)
        w, b = head.folded()
        for g in np.unique(groups[test]):
            rows = test[groups[test] == g]
            context[rows] = context_at(fmaps[g].score(w, b), xy[rows], n_classes)
    return context

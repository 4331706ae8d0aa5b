"""Thin structures and small images (issue 13): one variant of the default under the corrective protocol.

    python bench/accuracy_thin.py DATASET SEEDS VARIANT [SPEC] [--test N] [--budget B]
    python bench/accuracy_thin.py crackforest 0,1,2 none                       # the reference row
    python bench/accuracy_thin.py crackforest 0,1,2 sigmas=0.7,1,2,4           # another fine filter bank
    python bench/accuracy_thin.py neu_seg 0,1,2 none 'default:smoothing=1.0'   # a Segmenter option
    python bench/accuracy_thin.py crackforest 0,1,2 none 'default:autocontext=True'   # the auto-context head

Runs `pointseg evaluate`'s corrective protocol (the same splits and clicks: 3 training images per seed, up to
BUDGET clicks each, N held-out images evenly spaced) for one method spec, with VARIANT patched into the
library first, and prints one JSON line: interactive defect IoU at BUDGET clicks (the issue's crack target),
transfer defect IoU at 10 and BUDGET clicks (mean ± sd over seeds, as the BENCHMARKS tables give them),
NoC@85, the tolerant defect F1 (within 2 px, as crack-detection papers score; with its precision and
recall) interactive and at 10 clicks transfer, and the wall time. VARIANT is "none" or an exploratory patch that is not (yet) a library option:

    sigmas=A,B,...   the fine filter bank's scales (pointseg.filters.SIGMAS)
    ridge            add line measures per scale (dark and bright ridges from the Hessian eigenvalues)
    tophatN          add black and white morphological top-hats of the grey image (N×N square)
    bwA / dwA        the fine (deep) block times A after standardisation (a weaker L2 penalty when A > 1)
    s2pA             auto-context (spec option autocontext=True): stage 2's penalty A times stage 1's
                     (pointseg.autocontext.STAGE2_PENALTY)
    s2unweighted     auto-context's stage 2 with unweighted classes (stage 1 stays balanced)
    oofpoints        auto-context's out-of-fold stage-1 heads by k-fold over the points, not by image
    ctxwA            auto-context's standardised context channels times A (their penalty / A²)
    ctxs=A,B,...     auto-context's filter scales (pointseg.autocontext.CONTEXT_SIGMAS; RADIUS follows)
    nofade           auto-context without the fade of stage 2 into stage 1 beyond 20 clicks per image
                     (pointseg.autocontext.STAGE2_FULL_CLICKS = None: the thin preset before this change)
    s2growN / s2propN  auto-context's stage-2 penalty times n_rows / N (s2grow: never below the shipped x4)
    s2decayN         auto-context's stage-2 penalty times N / n_rows beyond N rows, never below stage 1's
    s2offN           auto-context: the linear head (stage 2 off) beyond N click rows
    s2blendA         auto-context: logits A * stage 2 + (1 - A) * stage 1
    s2fadeN          auto-context: the same with A = min(1, N / n_rows)
    ridgeD[rR]       two classes: a predicted defect pixel kept only within D (logit) of the window maximum
                     (window 2R+1, R default 3)
    hystD            two classes: ridge pixels of the logit above -D connected to the predicted defect added
    anisoS           two classes: the defect logit smoothed along the structure tensor's direction (σ S px)
    skelW            two classes: the predicted mask's skeleton dilated by a disk of radius W, within the mask
    s2firstN         auto-context's stage 2 fitted on the first N click rows of each image only
    mixctx           auto-context's stage 2 on each click twice: out-of-fold and in-sample context
    pcaN             auto-context's stage 2 on N principal directions of the clicks' features + context
    shiftA           the two-class defect-minus-background logit lowered by A (threshold at +A; auto-context:
                     stage 2's)
    oofshift[bacc]   linear head: the shift chosen from out-of-fold (leave-one-image-out) click margins,
                     maximising the clicks' defect IoU (or balanced accuracy)
    mlpH[aALPHA]     a one-hidden-layer ReLU head (H units, L2 ALPHA, default 1/C) instead of the linear one
    ctxN             the stride-32 context map of an image whose context grid is under N cells on its short
                     side computed on a copy upscaled by a power of two, pooled back to its grid

Join several with "+". Results are appended to bench/results/accuracy_thin.jsonl.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from _common import append_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def apply_variant(variant: str) -> None:
    import pointseg.filters as FL

    extra: list[int] = []
    ridges = squares = False
    for part in variant.split("+"):
        if part in ("", "none"):
            continue
        if part.startswith("sigmas="):
            FL.SIGMAS = tuple(float(s) for s in part.split("=", 1)[1].split(","))
        elif part == "ridge":
            ridges = True
        elif part == "squares":
            squares = True
        elif part.startswith("tophat"):
            extra.append(int(part[6:] or 5))
        elif part.startswith("bw"):
            _block_weight("fine", float(part[2:]))
        elif part.startswith("dw"):
            _block_weight("deep", float(part[2:]))
        elif part.startswith("rho_"):
            _within_image_weight(part[4:])
        elif part.startswith("s2p"):
            import pointseg.autocontext as AC

            AC.STAGE2_PENALTY = float(part[3:])
        elif part == "nofade":  # auto-context without the fade into stage 1 (the thin preset before 2026-12-02)
            import pointseg.autocontext as AC

            AC.STAGE2_FULL_CLICKS = None
        elif part.startswith("s2grow") or part.startswith("s2prop"):  # stage-2 penalty x n_rows / N
            _stage2_penalty_with_clicks(float(part[6:] or 60), floor=part.startswith("s2grow"))
        elif part.startswith("s2decay"):  # stage-2 penalty x N / n_rows beyond N rows (down to stage 1's)
            _stage2_penalty_decay(float(part[7:] or 60))
        elif part.startswith("s2off"):  # no stage 2 (the linear head) beyond N click rows
            _stage2_blend(lambda n, n0=float(part[5:] or 60): 0.0 if n > n0 else 1.0)
        elif part.startswith("s2blend"):  # stage-2 logits averaged with stage 1's, weight A on stage 2
            _stage2_blend(lambda n, a=float(part[7:] or 0.5): a)
        elif part.startswith("s2fade"):  # stage 2's weight N / n beyond N rows
            _stage2_blend(lambda n, n0=float(part[6:] or 60): min(1.0, n0 / n))
        elif part.startswith("ridge") and part != "ridge":  # ridgeD[rR]: keep crack pixels near the local max
            delta, _, radius = part[5:].partition("r")
            _ridge_relative(float(delta), int(radius or 3))
        elif part.startswith("hyst"):  # hystD: faint crack ridges connected to the predicted crack added
            _hysteresis_ridges(float(part[4:] or 2))
        elif part.startswith("aniso"):  # anisoS: the crack logit smoothed along the structure tensor's direction
            _anisotropic_logit(float(part[5:] or 3))
        elif part.startswith("skel"):  # predicted crack thinned to its skeleton, dilated by a disk of radius W
            _skeleton_width(float(part[4:] or 1))
        elif part.startswith("s2first"):  # stage 2 on the first N rows (clicks) of each image only
            _stage2_first_clicks(int(part[7:] or 20))
        elif part.startswith("mlp"):  # a one-hidden-layer head instead of the linear one: mlpH[aALPHA]
            hidden, _, alpha = part[3:].partition("a")
            _mlp_head(int(hidden or 32), float(alpha) if alpha else None)
        elif part == "mixctx":  # auto-context's stage 2 on out-of-fold and in-sample context rows
            _mixed_context()
        elif part.startswith("pca"):  # auto-context's stage 2 on N principal directions of the clicks + context
            _stage2_projected(int(part[3:]))
        elif part.startswith("ctxs="):  # auto-context's filter scales (the largest sets the margin)
            import pointseg.autocontext as AC

            AC.CONTEXT_SIGMAS = tuple(float(v) for v in part[5:].split(","))
            AC.RADIUS = int(AC.TRUNCATE * max(AC.CONTEXT_SIGMAS) + 0.5) + 2
        elif part.startswith("ctxw"):  # auto-context's context channels times A after standardisation
            _context_weight(float(part[4:]))
        elif part == "oofpoints":  # auto-context's out-of-fold heads by k-fold over points, not by image
            import pointseg.autocontext as AC

            AC.FOLDS = "points"
        elif part == "s2unweighted":  # auto-context's stage 2 with class_weight=None
            import pointseg.autocontext as AC

            AC.STAGE2_CLASS_WEIGHT = None
        elif part.startswith("oofshift"):  # the shift chosen from out-of-fold click margins
            _oof_shift(part[8:] or "iou")
        elif part.startswith("shift"):  # the defect logit minus a constant (threshold above 0)
            _threshold_shift(float(part[5:]))
        elif part.startswith("ctxboth"):
            _context_upscaled(int(part[7:]), keep_original=True)
        elif part.startswith("ctx"):
            _context_upscaled(int(part[3:]))
        else:
            raise SystemExit(f"unknown variant {part!r}")
    FL.CHANNELS = 3 + len(FL.SIGMAS) * len(FL.PER_SIGMA)
    FL.HALO = int(math.ceil(4 * max(FL.SIGMAS))) + 2
    if ridges or extra or squares:
        _add_channels(FL, ridges, extra, squares)


def _block_weight(block: str, factor: float) -> None:
    """One block's standardised features times ``factor`` (a weaker L2 penalty on it when > 1)."""
    import pointseg.classifier as CL
    import pointseg.filters as FL

    orig = CL.Standardizer.from_moments.__func__

    def from_moments(cls, moments):
        st = orig(cls, moments)
        st.scale = st.scale.copy()
        n_fine = FL.CHANNELS if st.scale.shape[0] > FL.CHANNELS + 100 else 0
        if block == "fine":
            st.scale[st.scale.shape[0] - n_fine:] /= factor
        else:
            st.scale[: st.scale.shape[0] - n_fine] /= factor
        return st

    CL.Standardizer.from_moments = classmethod(from_moments)


#: the stage-2 row counts and penalties used, for the record
STAGE2_LOG: list[tuple[int, float]] = []


def _stage2_penalty_with_clicks(n0: float, floor: bool) -> None:
    """Auto-context's stage-2 penalty times n / n0 (n: the click rows it is fitted on): C2 ∝ 1/n, a
    penalty per click rather than per model, so that more clicks do not let stage 2 follow them through the
    features. ``floor``: never below the shipped STAGE2_PENALTY (max(1, n / n0))."""
    import pointseg.autocontext as AC
    import pointseg.segmenter as S

    AC.STAGE2_FULL_CLICKS = None  # measured before the library's fade (its own rule instead)
    orig = AC.fit_autocontext
    base = AC.STAGE2_PENALTY

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, *a, **k):
        factor = len(y) / n0
        AC.STAGE2_PENALTY = base * (max(1.0, factor) if floor else factor)
        STAGE2_LOG.append((len(y), AC.STAGE2_PENALTY))
        try:
            return orig(clf, stage1, fmaps, X, xy, y, *a, **k)
        finally:
            AC.STAGE2_PENALTY = base

    AC.fit_autocontext = fit_autocontext
    S.fit_autocontext = fit_autocontext


def _stage2_penalty_decay(n0: float) -> None:
    """Auto-context's stage-2 penalty times n0 / n beyond n0 click rows, never below stage 1's (×1): as
    clicks accumulate stage 2 relaxes toward the linear head's penalty (which gains from more clicks)."""
    import pointseg.autocontext as AC
    import pointseg.segmenter as S

    AC.STAGE2_FULL_CLICKS = None  # measured before the library's fade (its own rule instead)
    orig = AC.fit_autocontext
    base = AC.STAGE2_PENALTY

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, *a, **k):
        AC.STAGE2_PENALTY = max(1.0, base * min(1.0, n0 / len(y)))
        STAGE2_LOG.append((len(y), AC.STAGE2_PENALTY))
        try:
            return orig(clf, stage1, fmaps, X, xy, y, *a, **k)
        finally:
            AC.STAGE2_PENALTY = base

    AC.fit_autocontext = fit_autocontext
    S.fit_autocontext = fit_autocontext


def _stage2_blend(weight) -> None:
    """Auto-context's stage-2 head replaced by ``a * stage 2 + (1 - a) * stage 1`` (logits; a = weight(n),
    n the click rows): one folded stage-2 LinearHead (the features share stage 1's standardiser), so the
    prediction path is unchanged; a = 0 is the linear head exactly (context weights zero)."""
    import numpy as np

    import pointseg.autocontext as AC
    import pointseg.segmenter as S
    from pointseg.classifier import LinearHead

    AC.STAGE2_FULL_CLICKS = None  # measured before the library's fade (s2fade60 is that fade)
    orig = AC.fit_autocontext

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, *rest, **k):
        a = float(weight(len(y)))
        STAGE2_LOG.append((len(y), a))
        head = orig(clf, stage1, fmaps, X, xy, y, *rest, **k)
        if a == 1.0:
            return head
        s2, c = head.stage2, stage1.coef.shape[1]
        coef = a * s2.coef.astype(np.float64)
        coef[:, :c] += (1 - a) * stage1.coef
        intercept = a * s2.intercept + (1 - a) * stage1.intercept
        return AC.AutoContextHead(stage1, LinearHead(coef.astype(np.float32), intercept.astype(np.float32),
                                                     s2.standardizer))

    AC.fit_autocontext = fit_autocontext
    S.fit_autocontext = fit_autocontext


def _ridge_relative(delta: float, radius: int) -> None:
    """Two classes: a predicted defect pixel is kept only where its (smoothed) defect-minus-background
    logit is within ``delta`` of the largest one in the (2 radius + 1)² window around it: a threshold
    relative to the structure's own ridge, which narrows a thin crack's shoulders (the band the head marks
    past the annotation) and leaves a flat-topped wide region whole."""
    import numpy as np
    from scipy import ndimage as ndi

    import pointseg.segmenter as S

    def predict(self, image, *a, **k):
        full = self.predict_full(image, probabilities=True)
        labels = np.asarray(full.labels)
        if len(self.classes_) != 2:
            return labels
        p = np.clip(np.asarray(full.probabilities, dtype=np.float64), 1e-7, 1.0)
        logit = np.log(p[1]) - np.log(p[0])
        peak = ndi.maximum_filter(logit, size=2 * radius + 1, mode="nearest")
        drop = (labels == 1) & (logit < peak - delta)
        return np.where(drop, 0, labels).astype(labels.dtype)

    S.Segmenter.predict = predict


def _hysteresis_ridges(low: float, ridge: float = 0.5) -> None:
    """Two classes: hysteresis on the (smoothed) defect-minus-background logit, as Canny links edges —
    pixels above ``-low`` that lie on a ridge of the logit (within ``ridge`` of their 3×3 maximum) join the
    predicted defect when connected (8-neighbours) to it: faint stretches of a crack the head misses (its
    tolerant recall is the weak side) without widening the band, which is off the ridge."""
    import numpy as np
    from scipy import ndimage as ndi

    import pointseg.segmenter as S

    def predict(self, image, *a, **k):
        full = self.predict_full(image, probabilities=True)
        labels = np.asarray(full.labels)
        if len(self.classes_) != 2:
            return labels
        p = np.clip(np.asarray(full.probabilities, dtype=np.float64), 1e-7, 1.0)
        logit = np.log(p[1]) - np.log(p[0])
        strong = labels == 1
        weak = strong | ((logit > -low) & (logit >= ndi.maximum_filter(logit, size=3, mode="nearest") - ridge))
        comp, _ = ndi.label(weak, structure=np.ones((3, 3)))
        keep = np.unique(comp[strong])
        grown = np.isin(comp, keep[keep > 0])
        return np.where(grown & ~strong & (labels == 0), 1, labels).astype(labels.dtype)

    S.Segmenter.predict = predict


def _anisotropic_logit(sigma_along: float, sigma_across: float = 0.5, n_angles: int = 8) -> None:
    """Two classes: the (smoothed) defect-minus-background logit re-smoothed along the local structure only
    (a 1-D Gaussian of ``sigma_along`` px oriented along the structure tensor's minor direction of the logit,
    ``sigma_across`` across; the nearest of ``n_angles`` oriented kernels per pixel), then thresholded at 0:
    a crack's faint stretches borrow evidence from its neighbours along it, nothing is blurred across it."""
    import numpy as np
    from scipy import ndimage as ndi

    import pointseg.segmenter as S

    r = int(np.ceil(3 * sigma_along))
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1].astype(np.float64)
    angles = np.pi * np.arange(n_angles) / n_angles
    kernels = []
    for t in angles:  # t: direction along the structure (x = cos t, y = sin t)
        along = xx * np.cos(t) + yy * np.sin(t)
        across = -xx * np.sin(t) + yy * np.cos(t)
        k = np.exp(-0.5 * (along / sigma_along) ** 2 - 0.5 * (across / sigma_across) ** 2)
        kernels.append(k / k.sum())

    def predict(self, image, *a, **k):
        full = self.predict_full(image, probabilities=True)
        labels = np.asarray(full.labels)
        if len(self.classes_) != 2:
            return labels
        p = np.clip(np.asarray(full.probabilities, dtype=np.float64), 1e-7, 1.0)
        logit = np.log(p[1]) - np.log(p[0])
        gy, gx = np.gradient(ndi.gaussian_filter(logit, 1.0))
        jxx, jyy, jxy = (ndi.gaussian_filter(v, 2.0) for v in (gx * gx, gy * gy, gx * gy))
        theta = 0.5 * np.arctan2(2 * jxy, jxx - jyy) + np.pi / 2  # along = perpendicular to the gradient
        idx = np.round((theta % np.pi) / (np.pi / n_angles)).astype(int) % n_angles
        out = np.empty_like(logit)
        for i, kern in enumerate(kernels):
            sel = idx == i
            if sel.any():
                out[sel] = ndi.convolve(logit, kern, mode="nearest")[sel]
        crack = out > 0
        return np.where(labels == 1, np.where(crack, 1, 0), np.where(crack & (labels == 0), 1, labels)).astype(labels.dtype)

    S.Segmenter.predict = predict


def _skeleton_width(radius: float) -> None:
    """Two classes: the predicted defect mask replaced by its skeleton (skimage) dilated by a disk of
    ``radius`` px, within the original mask: non-maximum suppression across a thin structure's width, then
    a fixed width (radius 1: 3 px, CrackForest's annotated cracks are 3-5 px wide)."""
    import numpy as np
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    import pointseg.segmenter as S

    orig = S.Segmenter.predict
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    disk = (yy ** 2 + xx ** 2) <= radius ** 2 + 1e-9

    def predict(self, image, *a, **k):
        labels = np.asarray(orig(self, image, *a, **k))
        if len(self.classes_) != 2 or labels.ndim != 2:
            return labels
        mask = labels == 1
        thin = ndi.binary_dilation(skeletonize(mask), structure=disk) & mask
        return np.where(thin, 1, np.where(mask, 0, labels)).astype(labels.dtype)

    S.Segmenter.predict = predict


def _stage2_first_clicks(n_first: int) -> None:
    """Auto-context's stage 2 (and its out-of-fold stage-1 heads) fitted on the first ``n_first`` click rows
    of each image only (the rows are in click order); stage 1 keeps every click."""
    import numpy as np

    import pointseg.autocontext as AC
    import pointseg.segmenter as S

    AC.STAGE2_FULL_CLICKS = None  # measured before the library's fade
    orig = AC.fit_autocontext

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, groups, *a, **k):
        keep = np.concatenate([np.flatnonzero(groups == g)[:n_first] for g in np.unique(groups)])
        keep.sort()
        STAGE2_LOG.append((len(keep), AC.STAGE2_PENALTY))
        return orig(clf, stage1, fmaps, X[keep], xy[keep], y[keep], groups[keep], *a, **k)

    AC.fit_autocontext = fit_autocontext
    S.fit_autocontext = fit_autocontext


def _context_weight(factor: float) -> None:
    """Auto-context's standardised context channels times ``factor``: their L2 penalty divided by
    factor² while the features keep stage 2's (STAGE2_PENALTY ×) penalty."""
    import pointseg.autocontext as AC

    orig = AC.Standardizer

    class Weighted(orig):
        def __init__(self, mean, scale):
            scale = scale.copy()
            n_ctx = AC.n_context_channels(2)
            if scale.shape[0] > 300:  # the stage-2 standardiser: features then context
                scale[-n_ctx:] /= factor
            super().__init__(mean, scale)

    AC.Standardizer = Weighted


def _mlp_head(hidden: int, alpha: float | None) -> None:
    """The logistic head replaced by a one-hidden-layer ReLU network on the standardised features, fitted
    by full-batch L-BFGS on ``sum_i w_i CE_i + alpha/2 (|W1|^2 + |W2|^2)`` (balanced w_i; alpha default
    1/C, the linear head's penalty in the same form). Prediction stays exact per box: the hidden layer's
    pre-activations are a linear head with ``hidden`` rows (deep part on the stride-4 grid, fine part at
    full resolution), then ReLU and the output layer per pixel."""
    from dataclasses import dataclass

    import numpy as np
    import torch

    import pointseg.classifier as CL
    import pointseg.segmenter as S
    from pointseg.features import Scores

    @dataclass
    class MLPHead:
        w1: np.ndarray  # (H, C) on standardised features
        b1: np.ndarray
        w2: np.ndarray  # (K, H)
        b2: np.ndarray
        standardizer: object

        def folded(self):
            w = (self.w1 / self.standardizer.scale[None, :]).astype(np.float32)
            return w, (self.b1 - w @ self.standardizer.mean).astype(np.float32)

        def scores(self, X):
            w, b = self.folded()
            return np.maximum(X @ w.T + b, 0) @ self.w2.T + self.b2

    class MLPScores(Scores):
        def __init__(self, hidden_scores, w2, b2):
            self.hidden = hidden_scores
            self.w2 = torch.from_numpy(np.ascontiguousarray(w2, dtype=np.float32))
            self.b2 = torch.from_numpy(np.ascontiguousarray(b2, dtype=np.float32))
            self.image_size, self.extent = hidden_scores.image_size, hidden_scores.extent
            self.grid_size, self.stride = hidden_scores.grid_size, hidden_scores.stride
            self.levels = hidden_scores.levels

        def _out(self, h):
            k, shape = h.shape[0], h.shape[1:]
            out = torch.matmul(self.w2, torch.relu(h).reshape(k, -1)) + self.b2[:, None]
            return out.reshape(-1, *shape)

        def grid_window(self, rows, cols, level=0):  # previews only: the network on the deep part alone
            return self._out(self.hidden.grid_window(rows, cols, level))

        def fine_mean_logits(self):
            return None

        def deep_logits(self, y0, y1, x0, x1):
            return self._out(self.hidden.deep_logits(y0, y1, x0, x1))

        def fine_logits(self, y0, y1, x0, x1):
            return None

        def logits(self, y0, y1, x0, x1):
            return self._out(self.hidden.logits(y0, y1, x0, x1))

    def fit(self, X, y, n_classes, standardizer, init=None):
        present = np.unique(y)
        Xs = torch.from_numpy(np.asarray(standardizer.transform(X), np.float64))
        target = torch.from_numpy(np.searchsorted(present, y).astype(np.int64))
        k, c = len(present), X.shape[1]
        counts = np.bincount(target.numpy(), minlength=k).astype(np.float64)
        sw = torch.from_numpy((len(y) / (k * counts))[target.numpy()] if self.class_weight == "balanced"
                              else np.ones(len(y)))
        lam = (1.0 / self.C) if alpha is None else alpha
        g = torch.Generator().manual_seed(0)
        w1 = (torch.randn(hidden, c, generator=g, dtype=torch.float64) / np.sqrt(c)).requires_grad_()
        b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
        w2 = (torch.randn(k, hidden, generator=g, dtype=torch.float64) / np.sqrt(hidden)).requires_grad_()
        b2 = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w1, b1, w2, b2], max_iter=300, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            out = torch.relu(Xs @ w1.T + b1) @ w2.T + b2
            loss = (sw * torch.nn.functional.cross_entropy(out, target, reduction="none")).sum()
            loss = loss + lam / 2 * ((w1 ** 2).sum() + (w2 ** 2).sum())
            loss.backward()
            return loss

        with CL.single_thread():
            opt.step(closure)
        W2 = np.zeros((n_classes, hidden), np.float32)
        B2 = np.full(n_classes, CL.ABSENT_LOGIT, np.float32)
        W2[present], B2[present] = w2.detach().numpy(), b2.detach().numpy()
        return MLPHead(w1.detach().numpy().astype(np.float32), b1.detach().numpy().astype(np.float32), W2, B2,
                       standardizer)

    CL.PointClassifier.fit = fit
    orig_grid = S.Segmenter.decision_grid

    def decision_grid(self, image, stream_above=None):
        if isinstance(self.head_, MLPHead):
            w, b = self.head_.folded()
            return MLPScores(self.extractor.image_scores(image, w, b), self.head_.w2, self.head_.b2)
        return orig_grid(self, image, stream_above)

    S.Segmenter.decision_grid = decision_grid


def _mixed_context() -> None:
    """Auto-context's stage 2 trained on every click twice, half weight each: once with its out-of-fold
    stage-1 context (as shipped) and once with the full stage-1 head's (in-sample) context, which is what
    the clicked images show at prediction."""
    import numpy as np

    import pointseg.autocontext as AC
    import pointseg.segmenter as S
    from pointseg.classifier import single_thread

    orig = AC.out_of_fold_context

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, groups, n_classes, standardizer, init=None):
        with single_thread():
            inner = np.zeros((len(y), AC.n_context_channels(n_classes)), np.float32)
            w, b = stage1.folded()
            for g in np.unique(groups):
                rows = np.flatnonzero(groups == g)
                inner[rows] = AC.context_at(fmaps[g].score(w, b), xy[rows], n_classes)
        saved = AC.out_of_fold_context
        AC.out_of_fold_context = lambda *a: np.concatenate([orig(*a), inner])
        try:
            return _fit(clf, stage1, fmaps, np.concatenate([X, X]), np.concatenate([xy, xy]),
                        np.concatenate([y, y]), groups, n_classes, standardizer, init)
        finally:
            AC.out_of_fold_context = saved

    def _fit(clf, stage1, fmaps, X2, xy2, y2, groups, n_classes, standardizer, init):
        # the shipped fit, with out_of_fold_context called on the single rows (it returns both halves)
        n = len(groups)
        real = AC.out_of_fold_context
        AC.out_of_fold_context = lambda c, s1, f, X, xy, y, g, k, st: real(c, s1, f, X[:n], xy[:n], y[:n], g, k, st)
        try:
            return orig_fit(clf, stage1, fmaps, X2, xy2, y2, groups, n_classes, standardizer, init)
        finally:
            AC.out_of_fold_context = real

    orig_fit = AC.fit_autocontext
    AC.fit_autocontext = fit_autocontext
    S.fit_autocontext = fit_autocontext


def _stage2_projected(n_components: int) -> None:
    """Auto-context's stage 2 on fewer inputs: the click rows' standardised features projected on their
    ``n_components`` principal directions, plus the context channels (penalty C / STAGE2_PENALTY); folded
    back into an ordinary stage-2 LinearHead on [features, context] (coef = c_pca @ V), so prediction and
    the model file are unchanged."""
    import numpy as np

    import pointseg.autocontext as AC
    from pointseg.classifier import LinearHead, PointClassifier, Standardizer, single_thread

    def fit_autocontext(clf, stage1, fmaps, X, xy, y, groups, n_classes, standardizer, init=None):
        with single_thread():
            context = AC.out_of_fold_context(clf, stage1, fmaps, X, xy, y, groups, n_classes, standardizer)
        mean, scale = context.mean(axis=0), context.std(axis=0)
        scale[scale < 1e-3] = 1.0
        both = Standardizer(np.concatenate([standardizer.mean, mean]).astype(np.float32),
                            np.concatenate([standardizer.scale, scale]).astype(np.float32))
        Xs = standardizer.transform(X).astype(np.float64)
        _, _, vt = np.linalg.svd(Xs - Xs.mean(axis=0), full_matrices=False)
        v = vt[: min(n_components, len(vt))]
        z = np.concatenate([Xs @ v.T, (context - mean) / scale], axis=1).astype(np.float32)
        weight = clf.class_weight if AC.STAGE2_CLASS_WEIGHT == "same" else AC.STAGE2_CLASS_WEIGHT
        firm = PointClassifier(clf.kind, clf.C / AC.STAGE2_PENALTY, weight, clf.random_state)
        identity = Standardizer(np.zeros(z.shape[1], np.float32), np.ones(z.shape[1], np.float32))
        small = firm.fit(z, y, n_classes, identity)
        k = len(v)
        coef = np.concatenate([small.coef[:, :k] @ v, small.coef[:, k:]], axis=1).astype(np.float32)
        return AC.AutoContextHead(stage1, LinearHead(coef, small.intercept, both))

    AC.fit_autocontext = fit_autocontext
    import pointseg.segmenter as S

    S.fit_autocontext = fit_autocontext


def _shift_head(head, shift: float):
    """A two-class head (linear, or auto-context's stage 2) with the defect-minus-background logit lowered
    by ``shift`` (the decision threshold moved to +shift)."""
    import dataclasses

    from pointseg.autocontext import AutoContextHead
    from pointseg.classifier import LinearHead

    if isinstance(head, AutoContextHead):
        return dataclasses.replace(head, stage2=_shift_head(head.stage2, shift))
    if not isinstance(head, LinearHead) or head.intercept.shape[0] != 2:
        return head
    intercept = head.intercept.copy()
    intercept[1] -= shift
    return LinearHead(head.coef, intercept, head.standardizer)


def _threshold_shift(shift: float) -> None:
    import pointseg.segmenter as S

    orig = S.Segmenter.fit

    def fit(self, *a, **k):
        orig(self, *a, **k)
        self.head_ = _shift_head(self.head_, shift)
        return self

    S.Segmenter.fit = fit


#: the out-of-fold shifts chosen, for the record
OOF_SHIFTS: list[float] = []


def _oof_shift(criterion: str) -> None:
    """Two classes: the threshold on the defect-minus-background logit chosen from out-of-fold margins of
    the click rows (leave-one-image-out heads, the auto-context folds): the shift on a grid of -3..3 that
    maximises the defect IoU counted over the clicks (criterion "iou") or the balanced accuracy ("bacc"),
    ties broken toward 0. Linear head only (stage 1 before any stage 2)."""
    import numpy as np

    import pointseg.segmenter as S
    from pointseg.autocontext import _folds
    from pointseg.classifier import LinearHead, head_scores

    orig = S.Segmenter._fit_parts
    grid = np.round(np.arange(-3, 3.01, 0.25), 2)

    def _fit_parts(self, clf, parts, n_classes, standardizer, init):
        head, X, y, groups = orig(self, clf, parts, n_classes, standardizer, init)
        if n_classes != 2 or not isinstance(head, LinearHead):
            return head, X, y, groups
        margin = np.full(len(y), np.nan)
        for train, test in _folds(y, groups):
            if len(np.unique(y[train])) < 2:
                continue
            h = clf.fit(X[train], y[train], n_classes, standardizer, init=head)
            s = head_scores(h, X[test])
            margin[test] = s[:, 1] - s[:, 0]
        ok = ~np.isnan(margin)
        if ok.sum() < 4 or len(np.unique(y[ok])) < 2:
            return head, X, y, groups
        m, t = margin[ok], y[ok] == 1
        best, best_score = 0.0, -1.0
        for shift in sorted(grid, key=abs):
            pred = m > shift
            if criterion == "bacc":
                score = (pred[t].mean() + (~pred[~t]).mean()) / 2
            else:
                score = (pred & t).sum() / max((pred | t).sum(), 1)
            if score > best_score + 1e-12:
                best, best_score = float(shift), score
        OOF_SHIFTS.append(best)
        return _shift_head(head, best), X, y, groups

    S.Segmenter._fit_parts = _fit_parts


def _within_image_weight(block: str) -> None:
    """Standardised channels times sqrt(within-image variance / total variance) over the training images.

    A channel that is nearly constant within each image (a stride-32 context cell covers most of a
    200-px image) can only tell the training images apart, which three images cannot teach; its weight
    shrinks with the share of its variance that lies within images. ``block``: ctx (the context block,
    one factor per channel), deep (deep and context), all.
    """
    import numpy as np

    import pointseg.classifier as CL
    import pointseg.filters as FL

    orig = CL.Standardizer.from_moments.__func__

    def from_moments(cls, moments):
        st = orig(cls, moments)
        count = sum(m[2] for m in moments)
        within = sum(m[1] - m[0] ** 2 / m[2] for m in moments) / count
        total = np.maximum(st.scale.astype(np.float64) ** 2, 1e-12)
        rho = np.clip(within / total, 1e-3, 1.0)
        n = st.scale.shape[0]
        n_fine = FL.CHANNELS if n > FL.CHANNELS + 100 else 0
        sel = np.zeros(n, bool)
        if block == "ctx" and n - n_fine == 368:
            sel[176:368] = True
        elif block == "deep":
            sel[: n - n_fine] = True
        elif block == "all":
            sel[:] = True
        st.scale = st.scale.copy()
        st.scale[sel] = (st.scale[sel] / np.sqrt(rho[sel])).astype(np.float32)
        return st

    CL.Standardizer.from_moments = classmethod(from_moments)


def _context_upscaled(min_cells: int, keep_original: bool = False) -> None:
    """The stride-32 context map of an image whose context grid is under ``min_cells`` on its short side
    computed on a copy upscaled by the power of two that brings it there, then average-pooled back to the
    image's stride-32 grid (so the map keeps its geometry). ``keep_original``: both maps side by side (the
    original twice where the rule does not trigger, so every image has the same channels)."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as TF

    import pointseg.features as F

    orig = F.FeatureExtractor.compute_parts

    def compute_parts(self, rgb, progress=None):
        data, context = orig(self, rgb, progress)
        if context is None:
            return data, context
        short = min(context.shape[1:])
        if short >= min_cells:
            return data, (np.concatenate([context, context]) if keep_original else context)
        f = 2 ** math.ceil(math.log2(min_cells / short))
        hp, wp = self.padded_size(rgb.shape[:2])
        padded = F._pad_reflect(rgb, hp, wp)
        t = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float()
        up = TF.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)
        up = up.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        _, ctx_up = orig(self, up)
        pooled = TF.avg_pool2d(torch.from_numpy(ctx_up)[None], f)[0].numpy()
        pooled = np.ascontiguousarray(pooled[:, : context.shape[1], : context.shape[2]])
        return data, (np.concatenate([context, pooled]) if keep_original else pooled)

    F.FeatureExtractor.compute_parts = compute_parts


def _add_channels(FL, ridges: bool, sizes: list[int], squares: bool = False) -> None:
    """Extra fine channels. Ridges: per scale, line measures from the Hessian eigenvalues (λmax ≥ λmin):
    dark = max(0, λmax − |λmin|), high across a dark line and near zero on blobs and flat ground, and its
    mirror for bright lines (the ratio Sato's and Frangi's vesselness build on), which a linear head cannot
    form from the eigenvalues. Top-hats of the grey image (square of each size): black (closing − image:
    dark lines and pits narrower than the square) and white (image − opening), the classic crack detector.
    Squares: every filter response squared (quadratic capacity for the linear head)."""
    from scipy import ndimage as ndi
    import numpy as np

    base, n_base, per = FL.low_level_features, FL.CHANNELS, len(FL.PER_SIGMA)

    def with_extra(rgb):
        out = base(rgb)[:n_base]  # the bank fills its first n_base channels of a CHANNELS-long array
        grey = out[:3].mean(axis=0)
        extra = []
        if ridges:
            for k in range(len(FL.SIGMAS)):
                lam_max, lam_min = out[3 + k * per + 3], out[3 + k * per + 4]
                extra.append(np.maximum(lam_max - np.abs(lam_min), 0))
                extra.append(np.maximum(-lam_min - np.abs(lam_max), 0))
        for size in sizes:
            extra.append(ndi.grey_closing(grey, size=size, mode="reflect") - grey)
            extra.append(grey - ndi.grey_opening(grey, size=size, mode="reflect"))
        if squares:
            extra += list(out[3:] ** 2)
        return np.concatenate([out, np.stack(extra).astype(np.float32)])

    FL.low_level_features = with_extra
    FL.CHANNELS += 2 * len(sizes) + (2 * len(FL.SIGMAS) if ridges else 0) + (n_base - 3 if squares else 0)
    FL.HALO = max([FL.HALO] + [size + 2 for size in sizes])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("seeds")
    ap.add_argument("variant")
    ap.add_argument("spec", nargs="?", default="default")
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    args = ap.parse_args()
    apply_variant(args.variant)

    from pointseg import FeatureCache
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    ds = load_dataset(SHARED / "datasets" / args.dataset)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = EvalConfig(protocols=("corrective",), seeds=seeds, train_images=3, test=args.test,
                        budget=args.budget, transfer_at=(10, args.budget))
    method = build_method(args.spec, ds.classes, cache=FeatureCache())
    start = time.perf_counter()
    result = evaluate(ds, [method], config)
    wall = time.perf_counter() - start
    summary = result["summary"]["corrective"][method.name]
    curve = summary["curve"]

    def fg(split, k, key="fg_iou"):
        stat = curve[split].get(str(k), {}).get(key)
        return None if stat is None else [round(stat["mean"], 4), round(stat["std"], 4)]

    per_seed = [next(c["transfer"]["fg_iou"] for c in run["curve"] if c["clicks"] == 10 and c["transfer"])
                for run in result["runs"]]
    per_seed_interactive = [next(c["interactive"]["fg_iou"] for c in run["curve"]
                                 if c["clicks"] == args.budget and c["interactive"]) for run in result["runs"]]
    row = {"dataset": args.dataset, "variant": args.variant, "spec": args.spec, "seeds": list(seeds),
           "test": args.test, "budget": args.budget,
           "interactive_fg": fg("interactive", args.budget),
           "interactive_fg_per_seed": [round(v, 4) for v in per_seed_interactive],
           "interactive_miou": round(curve["interactive"][str(args.budget)]["miou"]["mean"], 4),
           "transfer_fg10": fg("transfer", 10), "transfer_fg10_per_seed": [round(v, 4) for v in per_seed],
           "transfer_fg": fg("transfer", args.budget),
           "noc85": round(summary["noc"]["85"]["mean"], 2),
           # the tolerant crack F1 (2 px, crack-detection papers' measure; pointseg.evaluation.metrics)
           "interactive_f1tol": fg("interactive", args.budget, "fg_f1_tol"),
           "interactive_f1tol_per_seed": [round(next(c["interactive"]["fg_f1_tol"] for c in run["curve"]
                                                     if c["clicks"] == args.budget), 4) for run in result["runs"]],
           "interactive_ptol_rtol": [fg("interactive", args.budget, "fg_precision_tol")[0],
                                     fg("interactive", args.budget, "fg_recall_tol")[0]],
           "transfer_f1tol10": fg("transfer", 10, "fg_f1_tol"),
           "transfer_f1tol10_per_seed": [round(next(c["transfer"]["fg_f1_tol"] for c in run["curve"]
                                                    if c["clicks"] == 10 and c["transfer"]), 4)
                                         for run in result["runs"]],
           "transfer_ptol_rtol10": [fg("transfer", 10, "fg_precision_tol")[0],
                                    fg("transfer", 10, "fg_recall_tol")[0]],
           **({"oof_shift_mean": round(float(sum(OOF_SHIFTS) / len(OOF_SHIFTS)), 3),
               "oof_shift_last": OOF_SHIFTS[-1]} if OOF_SHIFTS else {}),
           **({"stage2_rows_max": max(r for r, _ in STAGE2_LOG),
               "stage2_penalty_max": round(max(p for _, p in STAGE2_LOG), 3)} if STAGE2_LOG else {}), "wall_s": round(wall, 1),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": round(os.getloadavg()[0], 2)}
    append_jsonl("accuracy_thin", row)


if __name__ == "__main__":
    main()

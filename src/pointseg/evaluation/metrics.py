"""Segmentation metrics: IoU accumulated over images, per-image mIoU and the number of clicks (NoC).

IoU of class c = TP / (TP + FP + FN) from a confusion matrix summed over all evaluated images, ignore
pixels excluded; a class whose union is empty over the whole set has no IoU (NaN) and is left out of means.

Tolerant precision / recall / F1 (:func:`tolerance_counts`): the measure crack-detection papers report
(CrackForest, Shi et al. 2016: a predicted pixel within 2 px of an annotated crack pixel is correct), since
a thin structure's annotated width is uncertain by a pixel or two and strict IoU punishes a 1-px offset of
a 3-px line as much as a miss.
"""
from __future__ import annotations

import math

import numpy as np

from .datasets import IGNORE


def confusion_matrix(mask: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class; ignore pixels skipped.

    Examples
    --------
    >>> confusion_matrix(np.array([[0, 1, 255]]), np.array([[0, 0, 1]]), 2).tolist()
    [[1, 0], [1, 0]]
    """
    if mask.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} != mask shape {mask.shape}")
    keep = mask != IGNORE
    t = mask[keep].astype(np.int64)
    p = np.asarray(prediction)[keep].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"prediction has class ids outside 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN where the class is neither present nor predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def mean_iou(cm: np.ndarray) -> float:
    """Mean of the defined per-class IoUs."""
    return _nanmean(iou_per_class(cm))


def foreground_iou(cm: np.ndarray) -> float:
    """IoU of the non-first classes (the defect / foreground classes users care about): the IoU of class 1
    for two-class sets, the mean over classes 1..K-1 otherwise."""
    return _nanmean(iou_per_class(cm)[1:])


class IoUAccumulator:
    """Sum confusion matrices over images; read IoU / mIoU / foreground IoU at any time.

    Examples
    --------
    >>> acc = IoUAccumulator(2)
    >>> _ = acc.add(np.array([[0, 1]]), np.array([[0, 1]]))
    >>> acc.miou
    1.0
    """

    def __init__(self, n_classes: int, tolerance: float | None = None):
        self.n_classes = n_classes
        self.cm = np.zeros((n_classes, n_classes), dtype=np.int64)
        self.n_images = 0
        #: with a tolerance (pixels), also the tolerant counts of each foreground class (:func:`tolerance_counts`)
        self.tolerance = tolerance
        self.tol_counts = np.zeros((max(n_classes - 1, 0), 4), dtype=np.int64)

    def add(self, mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's confusion matrix."""
        cm = confusion_matrix(mask, prediction, self.n_classes)
        self.cm += cm
        self.n_images += 1
        if self.tolerance is not None:
            for c in range(1, self.n_classes):
                self.tol_counts[c - 1] += tolerance_counts(mask, prediction, c, self.tolerance)
        return cm

    def tolerant(self) -> dict:
        """Foreground precision / recall / F1 with the tolerance: per class from the summed counts, then the
        mean over the foreground classes that have any (as :func:`foreground_iou`)."""
        per = [tolerance_scores(c) for c in self.tol_counts]
        return {k: _nanmean([p[k] for p in per]) for k in ("precision", "recall", "f1")}

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.cm)

    @property
    def miou(self) -> float:
        return mean_iou(self.cm)

    @property
    def fg_iou(self) -> float:
        return foreground_iou(self.cm)

    def as_dict(self, class_names: list[str] | tuple[str, ...]) -> dict:
        out = {
            "miou": self.miou,
            "fg_iou": self.fg_iou,
            "iou": {name: float(v) for name, v in zip(class_names, self.iou)},
            "n_images": self.n_images,
        }
        if self.tolerance is not None:  # extra keys only: the IoU fields are unchanged
            tol = self.tolerant()
            out.update({"tolerance_px": float(self.tolerance), "fg_f1_tol": tol["f1"],
                        "fg_precision_tol": tol["precision"], "fg_recall_tol": tol["recall"]})
        return out


def tolerance_counts(mask: np.ndarray, prediction: np.ndarray, cls: int, tolerance: float) -> np.ndarray:
    """``[predicted hits, predicted, true hits, true]`` pixel counts of class ``cls`` with a distance
    tolerance (pixels, Euclidean): a predicted pixel is a hit when an annotated pixel of the class lies
    within ``tolerance`` of it, an annotated pixel is a hit when a predicted one does. Ignore pixels count
    neither as predicted nor as annotated (an annotated pixel next to them still matches). ``tolerance`` 0
    gives plain pixel precision and recall.

    Examples
    --------
    >>> line = np.zeros((5, 5), int); line[2] = 1
    >>> shifted = np.roll(line, 1, axis=0)
    >>> tolerance_counts(line, shifted, 1, 1).tolist(), tolerance_counts(line, shifted, 1, 0).tolist()
    ([5, 5, 5, 5], [0, 5, 0, 5])
    """
    if mask.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} != mask shape {mask.shape}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    keep = mask != IGNORE
    true = (mask == cls) & keep
    pred = (np.asarray(prediction) == cls) & keep
    counts = np.array([0, int(pred.sum()), 0, int(true.sum())], dtype=np.int64)
    if counts[1] and counts[3]:
        near_true, near_pred = within(true, tolerance), within(pred, tolerance)
        counts[0] = int((pred & near_true).sum())
        counts[2] = int((true & near_pred).sum())
    return counts


#: tolerances (px) up to which :func:`within` dilates by the disk instead of a distance transform
DILATION_MAX_TOLERANCE = 8.0


def within(region: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels whose Euclidean distance to ``region`` (bool) is at most ``tolerance``: the dilation of the
    region by the disk of that radius, which equals scipy's ``distance_transform_edt(~region) <= tolerance``
    on the pixel grid and is ~7x faster at 1 MP for 2 px; the distance transform above
    :data:`DILATION_MAX_TOLERANCE`."""
    from scipy import ndimage as ndi

    if tolerance > DILATION_MAX_TOLERANCE:
        return ndi.distance_transform_edt(~region) <= tolerance + 1e-9
    r = int(math.floor(tolerance + 1e-9))
    if r == 0:
        return region.copy()
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    return ndi.binary_dilation(region, structure=(yy ** 2 + xx ** 2) <= tolerance ** 2 + 1e-9)


def tolerance_scores(counts) -> dict:
    """``{"precision", "recall", "f1"}`` from :func:`tolerance_counts` (summed over images). Nothing
    annotated and nothing predicted: NaN (as IoU's empty union); one of them empty: the other scores 0."""
    hit_p, n_p, hit_t, n_t = (float(c) for c in counts)
    if n_p == 0 and n_t == 0:
        return {"precision": math.nan, "recall": math.nan, "f1": math.nan}
    precision = hit_p / n_p if n_p else 0.0
    recall = hit_t / n_t if n_t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def tolerant_f1(mask: np.ndarray, prediction: np.ndarray, cls: int = 1, tolerance: float = 2.0) -> float:
    """F1 of class ``cls`` on one image with a distance tolerance (:func:`tolerance_counts`)."""
    return tolerance_scores(tolerance_counts(mask, prediction, cls, tolerance))["f1"]


def image_miou(mask: np.ndarray, prediction: np.ndarray, n_classes: int) -> float:
    """mIoU of one image over the classes present in its mask or prediction (1.0 for a perfect prediction)."""
    return mean_iou(confusion_matrix(mask, prediction, n_classes))


def number_of_clicks(curve: list[tuple[int, float]], threshold: float, budget: int) -> int:
    """NoC: the click count of the first state whose mIoU reaches ``threshold``; ``budget`` when none does.

    Parameters
    ----------
    curve : ``(clicks on this image, image mIoU)`` pairs in the order the states occurred.

    Examples
    --------
    >>> number_of_clicks([(2, 0.5), (3, 0.86), (4, 0.95)], 0.85, 20)
    3
    >>> number_of_clicks([(2, 0.5), (3, 0.6)], 0.85, 20)
    20
    """
    for clicks, value in curve:
        if not math.isnan(value) and value >= threshold - 1e-12:
            return min(int(clicks), budget)
    return budget


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (NaNs dropped; std 0 for one value, NaN for none)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

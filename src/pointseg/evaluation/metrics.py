"""Segmentation metrics: IoU accumulated over images, per-image mIoU and the number of clicks (NoC).

IoU of class c = TP / (TP + FP + FN) from a confusion matrix summed over all evaluated images, ignore
pixels excluded; a class whose union is empty over the whole set has no IoU (NaN) and is left out of means.
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
    >>> acc.add(np.array([[0, 1]]), np.array([[0, 1]]))
    >>> acc.miou
    1.0
    """

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.cm = np.zeros((n_classes, n_classes), dtype=np.int64)
        self.n_images = 0

    def add(self, mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's confusion matrix."""
        cm = confusion_matrix(mask, prediction, self.n_classes)
        self.cm += cm
        self.n_images += 1
        return cm

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
        return {
            "miou": self.miou,
            "fg_iou": self.fg_iou,
            "iou": {name: float(v) for name, v in zip(class_names, self.iou)},
            "n_images": self.n_images,
        }


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

import math

import numpy as np

from pointseg.evaluation.metrics import (IoUAccumulator, confusion_matrix, foreground_iou, image_miou,
                                         iou_per_class, mean_iou, mean_std, number_of_clicks)


def test_confusion_skips_ignore_pixels():
    gt = np.array([[0, 0, 1, 1, 255]])
    pr = np.array([[0, 1, 1, 1, 0]])
    assert confusion_matrix(gt, pr, 2).tolist() == [[1, 1], [0, 2]]


def test_iou_values_and_absent_class_left_out():
    gt = np.array([[0, 0, 1, 1]])
    pr = np.array([[0, 1, 1, 1]])
    cm = confusion_matrix(gt, pr, 3)
    iou = iou_per_class(cm)
    assert iou[0] == 0.5 and math.isclose(iou[1], 2 / 3) and math.isnan(iou[2])
    assert math.isclose(mean_iou(cm), (0.5 + 2 / 3) / 2)
    assert math.isclose(foreground_iou(cm), 2 / 3)            # mean of classes 1..K-1 that are defined


def test_accumulated_iou_sums_intersections_and_unions_over_images():
    acc = IoUAccumulator(2)
    acc.add(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # class 1: 4/4
    acc.add(np.array([[1, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))  # class 1: 0/1
    assert math.isclose(acc.iou[1], 4 / 5)                        # not the mean of per-image IoUs (0.5)
    assert acc.n_images == 2


def test_perfect_prediction_has_image_miou_one():
    gt = np.array([[0, 1], [2, 255]])
    assert image_miou(gt, np.array([[0, 1], [2, 0]]), 3) == 1.0


def test_number_of_clicks_and_budget_cap():
    curve = [(2, 0.7), (3, 0.81), (4, 0.9)]
    assert number_of_clicks(curve, 0.80, 20) == 3
    assert number_of_clicks(curve, 0.90, 20) == 4
    assert number_of_clicks(curve, 0.95, 20) == 20
    assert number_of_clicks([(2, 1.0)], 0.9, 20) == 2


def test_mean_std_over_seeds():
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.4, 0.6, float("nan")])
    assert math.isclose(m, 0.5) and math.isclose(s, math.sqrt(0.02))

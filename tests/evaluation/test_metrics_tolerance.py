"""The tolerant precision / recall / F1 (crack-detection papers' measure) and its place in the runner's
results: a 1-px offset of a thin line is forgiven within the tolerance, nothing outside it."""
import math

import numpy as np
import pytest

from pointseg.evaluation.datasets import IGNORE
from pointseg.evaluation.metrics import IoUAccumulator, tolerance_counts, tolerance_scores, tolerant_f1


def _line(shape=(40, 60), row=20, width=1, cols=slice(5, 55)):
    m = np.zeros(shape, dtype=np.int64)
    m[row: row + width, cols] = 1
    return m


def test_a_line_shifted_by_one_pixel_is_perfect_within_two_pixels_and_wrong_at_zero():
    truth, pred = _line(), _line(row=21)
    assert tolerant_f1(truth, pred, 1, tolerance=2) == pytest.approx(1.0)
    assert tolerant_f1(truth, pred, 1, tolerance=1) == pytest.approx(1.0)
    assert tolerant_f1(truth, pred, 1, tolerance=0) == 0.0


def test_the_tolerance_is_a_distance_not_a_count_of_pixels_shifted():
    truth = _line()
    assert tolerant_f1(truth, _line(row=23), 1, tolerance=2) == 0.0  # 3 px away: outside
    assert tolerant_f1(truth, _line(row=22), 1, tolerance=2) == pytest.approx(1.0)
    # a dot offset by (2, 2) px is 2.83 px away (Euclidean, not chessboard)
    dot, diag = np.zeros((9, 9), np.int64), np.zeros((9, 9), np.int64)
    dot[3, 3], diag[5, 5] = 1, 1
    assert tolerance_counts(dot, diag, 1, 2).tolist() == [0, 1, 0, 1]
    assert tolerance_counts(dot, diag, 1, 3).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("tolerance", [0, 0.5, 1, 1.5, 2, 2.9, 4.3, 8, 9.5])
def test_the_disk_dilation_equals_the_distance_transform(tolerance):
    from scipy.ndimage import distance_transform_edt

    from pointseg.evaluation.metrics import within

    region = np.random.default_rng(1).random((60, 70)) < 0.02
    np.testing.assert_array_equal(within(region, tolerance), distance_transform_edt(~region) <= tolerance + 1e-9)


def test_zero_tolerance_is_plain_pixel_precision_and_recall():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 2, (30, 30)), rng.integers(0, 2, (30, 30))
    hit_p, n_p, hit_t, n_t = tolerance_counts(truth, pred, 1, 0)
    tp = int(((truth == 1) & (pred == 1)).sum())
    assert (hit_p, n_p, hit_t, n_t) == (tp, (pred == 1).sum(), tp, (truth == 1).sum())


def test_an_empty_prediction_scores_zero_and_a_wide_band_loses_precision_only():
    truth = _line()
    assert tolerant_f1(truth, np.zeros_like(truth), 1, 2) == 0.0
    band = _line(row=14, width=13)  # rows 14..26: 6 px either side of the line
    s = tolerance_scores(tolerance_counts(truth, band, 1, 2))
    assert s["recall"] == pytest.approx(1.0)
    assert s["precision"] == pytest.approx(5 / 13)  # rows 18..22 lie within 2 px
    assert s["f1"] == pytest.approx(2 * (5 / 13) / (1 + 5 / 13))


def test_nothing_annotated_and_nothing_predicted_is_undefined_and_a_false_alarm_scores_zero():
    empty = np.zeros((10, 10), dtype=np.int64)
    assert math.isnan(tolerant_f1(empty, empty, 1, 2))
    assert tolerant_f1(empty, _line((10, 10), 5, 1, slice(0, 10)), 1, 2) == 0.0


def test_ignore_pixels_are_neither_predicted_nor_annotated():
    truth, pred = _line(), _line()
    truth[:, :30] = IGNORE  # the left half is not scored; the prediction there does not count
    hit_p, n_p, hit_t, n_t = tolerance_counts(truth, pred, 1, 2)
    assert n_p == n_t == 25 and hit_p == hit_t == 25


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shape"):
        tolerance_counts(np.zeros((3, 3)), np.zeros((3, 4)), 1, 2)
    with pytest.raises(ValueError, match="tolerance"):
        tolerance_counts(np.zeros((3, 3)), np.zeros((3, 3)), 1, -1)


def test_the_accumulator_sums_counts_over_images_and_keeps_its_iou_fields():
    truth = _line()
    acc = IoUAccumulator(2, tolerance=2)
    acc.add(truth, _line(row=21))  # perfect within 2 px, 50 predicted pixels
    acc.add(truth, np.zeros_like(truth))  # missed: 50 annotated pixels without a hit
    d = acc.as_dict(["background", "crack"])
    assert d["fg_precision_tol"] == pytest.approx(1.0)
    assert d["fg_recall_tol"] == pytest.approx(0.5)
    assert d["fg_f1_tol"] == pytest.approx(2 / 3)
    assert d["tolerance_px"] == 2.0
    plain = IoUAccumulator(2)
    plain.add(truth, _line(row=21))
    plain.add(truth, np.zeros_like(truth))
    assert plain.as_dict(["background", "crack"]) == {k: v for k, v in d.items() if "tol" not in k}


def _evaluate(synth, tolerance):
    from eval_helpers import ConstantMethod, OracleMethod
    from pointseg.evaluation.runner import EvalConfig, evaluate

    cfg = EvalConfig(protocols=("corrective",), seeds=(0, 1), train_images=2, test=2, budget=5,
                     transfer_at=(3, 5), report_at=(3, 5), tolerance=tolerance)
    return evaluate(synth, [OracleMethod(synth), ConstantMethod()], cfg)


def test_the_corrective_protocol_reports_the_tolerant_f1_beside_the_iou(synth, tmp_path):
    import csv

    from rich.console import Console

    from pointseg.evaluation.report import markdown_tables, print_tables, write_csv

    res = _evaluate(synth, 2.0)
    curve = res["summary"]["corrective"]
    assert curve["oracle"]["curve"]["transfer"]["5"]["fg_f1_tol"]["mean"] == pytest.approx(1.0)
    assert curve["constant"]["curve"]["interactive"]["5"]["fg_f1_tol"]["mean"] == 0.0
    assert curve["oracle"]["curve"]["interactive"]["5"]["tolerance_px"] == 2.0
    md = markdown_tables(res)
    assert "F1 within 2 px" in md and "| oracle | transfer | 1.000 | 1.000 |" in md
    rows = list(csv.DictReader(open(write_csv(res, tmp_path / "r.csv"))))
    assert {r["value"] for r in rows if r["metric"] == "fg_f1_tol" and r["method"] == "constant"} == {"0"}
    console = Console(record=True, width=160)
    print_tables(res, console)
    assert "F1 within 2 px" in console.export_text()


def test_without_a_tolerance_the_results_are_the_iou_alone(synth):
    from pointseg.evaluation.report import markdown_tables

    with_tol, without = _evaluate(synth, 2.0), _evaluate(synth, None)
    entry = without["runs"][0]["curve"][-1]["interactive"]
    assert not any("tol" in k for k in entry)
    assert {k: v for k, v in with_tol["runs"][0]["curve"][-1]["interactive"].items() if "tol" not in k} == entry
    assert "F1 within" not in markdown_tables(without)

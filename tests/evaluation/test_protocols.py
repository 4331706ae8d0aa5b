import numpy as np

from pointseg.evaluation.datasets import IGNORE
from pointseg.evaluation.protocols import (corrective_click, deepest_point, eligible_pixels, initial_clicks,
                                           random_clicks)


def _window(mask, x, y, r=2):
    return mask[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]


def test_random_clicks_keep_two_px_from_boundaries_and_ignore(synth):
    mask = synth.load_mask("im00")                       # rectangle of class 1 with ignore pixels around it
    sets = random_clicks(mask, 2, (2, 5, 20), seed=0, key="im00", margin=2)
    pts = sets[20]
    assert len(pts) == 40 and set(pts[:, 2]) == {0, 1}
    for x, y, c in pts:
        assert mask[y, x] == c != IGNORE
        assert (_window(mask, x, y) == c).all()          # whole 5x5 neighbourhood inside the class


def test_margin_is_exactly_two_pixels():
    mask = np.zeros((30, 30), np.uint8)
    mask[10:20, 10:20] = 1                               # 10x10 square -> eroded by 2 = 6x6
    ok = eligible_pixels(mask, 1, margin=2)
    assert ok.sum() == 36 and ok[12:18, 12:18].all()


def test_thin_class_falls_back_to_the_unshrunk_mask():
    mask = np.zeros((20, 20), np.uint8)
    mask[10, 2:18] = 1                                    # 1-px line: erosion leaves nothing
    pts = random_clicks(mask, 2, (5,), seed=1, key="x")[5]
    line = pts[pts[:, 2] == 1]
    assert len(line) == 5 and (line[:, 1] == 10).all()


def test_random_clicks_are_nested_and_deterministic(synth):
    mask = synth.load_mask("im02")
    a = random_clicks(mask, 2, (2, 5, 10), seed=4, key="im02")
    b = random_clicks(mask, 2, (2, 5, 10), seed=4, key="im02")
    c = random_clicks(mask, 2, (2, 5, 10), seed=5, key="im02")
    for n in (2, 5, 10):
        assert np.array_equal(a[n], b[n])
    assert not np.array_equal(a[10], c[10])
    for cls in (0, 1):
        small, big = a[2][a[2][:, 2] == cls], a[10][a[10][:, 2] == cls]
        assert np.array_equal(small, big[:2])            # the 2-click set is a prefix of the 10-click set


def test_deepest_point_of_a_rectangle_is_its_centre():
    region = np.zeros((21, 31), bool)
    region[5:16, 4:27] = True                            # rows 5..15, cols 4..26
    assert deepest_point(region) == (10, 15)


def test_initial_clicks_one_per_class_present_deep_inside(synth):
    mask = synth.load_mask("im01")                       # rectangle rows 8..21, cols 11..26
    clicks = initial_clicks(mask, 2)
    assert sorted(clicks[:, 2]) == [0, 1]
    x, y, _ = clicks[clicks[:, 2] == 1][0]
    assert 13 <= y <= 16 and 17 <= x <= 20
    assert len(initial_clicks(synth.load_mask("im05"), 2)) == 1


def test_corrective_click_goes_to_deepest_point_of_largest_error_region():
    gt = np.zeros((40, 40), np.uint8)
    gt[5:8, 5:8] = 1                                      # small missed defect (3x3)
    gt[20:31, 20:31] = 1                                  # big missed defect (11x11), centre (25, 25)
    pred = np.zeros_like(gt)
    pred[0:2, 30:40] = 1                                  # a false-positive strip (20 px)
    click = corrective_click(pred, gt)
    assert click.tolist() == [25, 25, 1]                  # [x, y, true class]
    pred2 = gt.copy()
    pred2[30:40, 0:12] = 1                                # now the largest error is a false positive
    x, y, c = corrective_click(pred2, gt)
    assert c == 0 and 30 <= y <= 39 and 0 <= x <= 11 and (y, x) == deepest_point(pred2 != gt)


def test_corrective_click_ignores_ignore_pixels_and_stops_when_correct():
    gt = np.zeros((10, 10), np.uint8)
    gt[:, 5:] = IGNORE
    pred = np.zeros_like(gt)
    pred[:, 5:] = 1                                       # wrong only where nothing counts
    assert corrective_click(pred, gt) is None


def test_corrective_click_never_repeats_a_clicked_pixel():
    gt = np.ones((9, 9), np.uint8)
    pred = np.zeros_like(gt)
    first = corrective_click(pred, gt)
    second = corrective_click(pred, gt, clicked=first[None])
    assert first.tolist() == [4, 4, 1] and second.tolist() != first.tolist()

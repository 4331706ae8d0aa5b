"""The numpy region finder the summary, the OK/NG decision and the torch-free runner share equals scipy's."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from pointseg.regions import connected_regions

EIGHT = np.ones((3, 3), dtype=bool)


@pytest.mark.parametrize("seed", range(4))
def test_regions_equal_scipy_label_and_find_objects(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = rng.integers(1, 50, 2)
        mask = rng.random((h, w)) < rng.random()
        got = connected_regions(mask)
        labels, n = ndi.label(mask, structure=EIGHT)
        assert got.count == n
        if n:
            assert got.area.tolist() == np.bincount(labels.ravel())[1:].tolist()
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndi.find_objects(labels)]
            assert got.boxes.tolist() == boxes


def test_diagonal_and_snake_regions_are_one_each():
    assert connected_regions(np.eye(7, dtype=bool)).count == 1
    snake = np.zeros((41, 41), bool)
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    assert connected_regions(snake).count == 1
    assert connected_regions(np.zeros((5, 0), bool)).count == 0

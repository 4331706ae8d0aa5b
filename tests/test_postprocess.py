import numpy as np
import pytest
from scipy import ndimage

from pointseg import PointsegError, Segmenter
from pointseg.postprocess import remove_small_regions

from synthetic import points_from_truth, two_texture_image


def test_specks_take_the_class_around_them_and_large_regions_stay():
    labels = np.zeros((40, 60), np.int64)
    labels[:, 30:] = 1                       # two large regions
    labels[5, 5] = 1                         # a one-pixel speck of class 1 inside class 0
    labels[10:12, 40:42] = 2                 # a 4-pixel island of class 2 inside class 1
    labels[30:38, 8:16] = 2                  # a 64-pixel region of class 2: kept
    out = remove_small_regions(labels, 10)
    assert out[5, 5] == 0 and (out[10:12, 40:42] == 1).all()
    assert (out[30:38, 8:16] == 2).all()
    changed = out != labels
    assert changed.sum() == 5                # only the specks changed
    assert labels[5, 5] == 1                 # the input is left alone


def test_off_and_degenerate_cases():
    labels = np.random.default_rng(0).integers(0, 3, (20, 20))
    assert remove_small_regions(labels, 0) is labels
    assert remove_small_regions(labels, 1) is labels
    everything_small = remove_small_regions(labels, 10_000)     # nothing to take a label from
    np.testing.assert_array_equal(everything_small, labels)


def test_segmenter_min_region_removes_specks_and_survives_save_load(tmp_path):
    image, truth = two_texture_image()
    rng = np.random.default_rng(3)
    noisy = np.clip(image.astype(int) + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    pts = points_from_truth(truth, 6)
    plain = Segmenter("efficientnet_lite0", ["a", "b", "c"], smoothing=0).fit([noisy], [pts])
    cleaned = Segmenter("efficientnet_lite0", ["a", "b", "c"], smoothing=0, min_region=50).fit([noisy], [pts])

    def region_sizes(labels):
        sizes = []
        for k in range(3):
            lab, n = ndimage.label(labels == k, structure=np.ones((3, 3)))
            sizes += list(np.bincount(lab.ravel())[1:])
        return np.array(sizes)

    before, after = plain.predict(noisy), cleaned.predict(noisy)
    assert (region_sizes(before) < 50).any()            # the test only means something with specks present
    assert region_sizes(after).min() >= 50
    full = cleaned.predict_full(noisy)                   # the probability path cleans the labels the same way
    np.testing.assert_array_equal(full.labels, after)
    cleaned.save(tmp_path / "m.pointseg")
    assert Segmenter.load(tmp_path / "m.pointseg").min_region == 50
    cleaned.min_region = -3
    with pytest.raises(PointsegError, match="min_region"):
        cleaned.predict(noisy)

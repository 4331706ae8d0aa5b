import numpy as np
import pytest

import pointseg.segmenter as segmenter_module
from pointseg import Segmenter
from pointseg.filters import CHANNELS, HALO, channel_names, low_level_band, low_level_features


def thin_lines_image(h=192, w=256, seed=0):
    """Textured background crossed by dark lines 1-2 px wide: the case stride-4 features blur away."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    img = 140 + 25 * gaussian_filter(rng.normal(size=(h, w)), 3) / 0.1
    truth = np.zeros((h, w), dtype=np.int64)
    for x in range(20, w - 10, 37):
        truth[:, x: x + 1 + (x // 37) % 2] = 1
    for y in (50, 131):
        truth[y: y + 2, :] = 1
    img[truth == 1] -= 60
    img = np.clip(img + rng.normal(0, 3, (h, w)), 0, 255).astype(np.uint8)
    return np.dstack([img] * 3), truth


def test_channels_and_names():
    f = low_level_features(np.zeros((20, 30, 3), np.uint8))
    assert f.shape == (CHANNELS, 20, 30) and len(channel_names()) == CHANNELS


def test_bands_equal_the_whole_image():
    image, _ = thin_lines_image()
    whole = low_level_features(image)
    for r0, r1 in [(0, 40), (40, 150), (150, 192), (HALO - 1, HALO + 3)]:
        np.testing.assert_array_equal(low_level_band(image, r0, r1), whole[:, r0:r1])


def test_model_of_another_filter_bank_is_refused(tmp_path, monkeypatch):
    import pointseg.filters
    from pointseg.errors import ModelFileError

    image, _ = thin_lines_image()
    pts = np.array([[20, 10, 1], [100, 51, 1], [60, 100, 0], [200, 20, 0]], float)
    Segmenter("efficientnet_lite0", ["bg", "line"], features="hybrid").fit([image], [pts]).save(tmp_path / "h.pointseg")
    monkeypatch.setattr(pointseg.filters, "VERSION", pointseg.filters.VERSION + 1)
    with pytest.raises(ModelFileError, match="version .* of the low-level filter bank.*retrain"):
        Segmenter.load(tmp_path / "h.pointseg")


def test_responses_peak_on_a_thin_dark_line():
    image = np.full((64, 64, 3), 200, np.uint8)
    image[:, 31] = 50
    f = low_level_features(image)
    names = channel_names()
    hessian = f[names.index("hessian_max_s1")]
    assert hessian[:, 31].mean() > 5 * np.abs(hessian[:, 20]).mean()  # a dark ridge: large positive curvature


def _line_iou(seg, image, truth):
    pred = seg.predict(image)
    return ((pred == 1) & (truth == 1)).sum() / ((pred == 1) | (truth == 1)).sum()


def test_hybrid_features_segment_thin_structures_better_than_deep_alone():
    image, truth = thin_lines_image()
    rng = np.random.default_rng(0)
    pts = []
    for c in (0, 1):
        ys, xs = np.nonzero(truth == c)
        idx = rng.choice(len(xs), 15, replace=False)
        pts += [[xs[i], ys[i], c] for i in idx]
    pts = np.array(pts, float)
    # smoothing off: this measures the features (a σ = 1.5 px prior blurs 1-px lines, see the README)
    deep = Segmenter("efficientnet_lite0", ["bg", "line"], precision="fp32", features="deep").fit([image], [pts])
    hybrid = Segmenter("efficientnet_lite0", ["bg", "line"], precision="fp32", features="hybrid",
                       smoothing=0).fit([image], [pts])
    assert hybrid.n_features_in_ == deep.n_features_in_ + CHANNELS
    iou_deep, iou_hybrid = _line_iou(deep, image, truth), _line_iou(hybrid, image, truth)
    assert iou_hybrid > iou_deep + 0.1
    assert iou_hybrid > 0.5


def test_hybrid_save_load_and_streamed_prediction_match(tmp_path, monkeypatch):
    image, truth = thin_lines_image()
    pts = np.array([[20, 10, 1], [100, 51, 1], [60, 100, 0], [200, 20, 0], [150, 170, 0]], float)
    seg = Segmenter("efficientnet_lite0", ["bg", "line"], precision="fp32", features="hybrid").fit([image], [pts])
    seg.save(tmp_path / "h.pointseg")
    loaded = Segmenter.load(tmp_path / "h.pointseg")
    assert loaded.features == "hybrid"
    cached = seg.predict_full(image)
    np.testing.assert_array_equal(loaded.predict_proba(image), cached.probabilities)
    monkeypatch.setattr(segmenter_module, "STREAM_ABOVE_PIXELS", 10)
    monkeypatch.setattr(segmenter_module, "BAND_ROWS", 64)
    other = np.ascontiguousarray(image[::-1])
    streamed = seg.predict_full(other, probabilities=False)
    reference = seg.predict_full(seg.extract_features(other))
    assert (streamed.labels == reference.labels).mean() > 0.999
    np.testing.assert_allclose(streamed.uncertainty, reference.uncertainty, atol=1e-3)


def test_random_forest_refuses_hybrid():
    image, truth = thin_lines_image()
    seg = Segmenter("efficientnet_lite0", ["bg", "line"], classifier="random_forest", features="hybrid")
    with pytest.raises(Exception, match="features='deep' only"):
        seg.fit([image], [np.array([[1, 1, 0], [20, 5, 1]], float)])


def test_smoothing_removes_speckle_and_bands_match_the_whole_image(monkeypatch):
    image, truth = thin_lines_image()
    rng = np.random.default_rng(1)
    noisy = np.clip(image.astype(int) + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    pts = np.array([[20, 10, 1], [100, 51, 1], [60, 100, 0], [200, 20, 0], [150, 170, 0], [90, 90, 0]], float)
    from scipy import ndimage

    regions = {}
    for sigma in (0.0, 2.0):
        seg = Segmenter("efficientnet_lite0", ["bg", "line"], precision="fp32", features="hybrid", smoothing=sigma)
        seg.fit([noisy], [pts])
        whole = seg.predict_full(noisy)
        monkeypatch.setattr(segmenter_module, "BAND_ROWS", 32)
        banded = seg.predict_full(noisy, probabilities=False)
        monkeypatch.undo()
        np.testing.assert_array_equal(banded.labels, whole.labels)
        np.testing.assert_allclose(banded.uncertainty, whole.uncertainty, atol=1e-5)
        regions[sigma] = ndimage.label(whole.labels == 1)[1] + ndimage.label(whole.labels == 0)[1]
    assert regions[2.0] < regions[0.0]

"""The context stage on an enlarged copy (``context_upscale``): what changes, what stays, and the "cv" rule."""
import numpy as np
import pytest

from pointseg import Segmenter
from pointseg.errors import PointsegError
from pointseg.features import CONTEXT_UPSCALE_MAX_PIXELS, FeatureExtractor, upscale_image

from synthetic import points_from_truth, two_texture_image

CLASSES = ["left", "right", "disc"]


@pytest.fixture(scope="module")
def small():
    image, truth = two_texture_image(h=150, w=190)
    return image, truth


@pytest.fixture(scope="module")
def native():
    return FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch", features="hybrid")


def test_only_the_context_channels_change_and_the_cache_key_names_the_factor(small, native):
    image, _ = small
    enlarged = native.with_context_upscale(2)
    assert enlarged is native.with_context_upscale(2) and native.with_context_upscale(1) is native
    assert enlarged.id == native.id + "-cu2" and enlarged.cache is native.cache
    data1, ctx1 = native.compute_parts(image)
    data2, ctx2 = enlarged.compute_parts(image)
    np.testing.assert_array_equal(data1, data2)  # the stride-4/8/16 maps stay native
    assert ctx1.shape == ctx2.shape == (192, 160 // 32, 192 // 32)
    assert np.abs(ctx1 - ctx2).max() > 0.1
    # the enlarged map is the pooled context of the enlarged image, seen by the same network
    padded = np.pad(image, ((0, 10), (0, 2), (0, 0)), mode="reflect")
    _, ctx_big = native.compute_parts(upscale_image(padded, 2))
    pooled = ctx_big.reshape(192, 5, 2, 6, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(ctx2, pooled, atol=1e-5)
    assert native.extract(image).key != enlarged.extract(image).key


def test_tiled_and_streamed_equal_whole_with_an_enlarged_context(small):
    image = np.ascontiguousarray(np.tile(small[0], (2, 2, 1))[:290, :370])
    whole = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch", tile_size=4096,
                             context_upscale=2)
    tiled = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch", tile_size=256,
                             context_upscale=2)
    assert tiled.n_tiles((640, 768)) == 9  # the enlarged copy's pass is really tiled
    data_w, ctx_w = whole.compute_parts(image)
    data_t, ctx_t = tiled.compute_parts(image)
    np.testing.assert_allclose(data_t, data_w, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(ctx_t, ctx_w, atol=2e-4, rtol=1e-4)
    # the streamed path (iter_tiles) carries the same upsampled context as the cached map
    fmap = whole.extract(image)
    streamed = np.zeros_like(fmap.full_deep())
    for (y0, y1, x0, x1), tile in tiled.iter_tiles(image):
        streamed[:, y0 // 4: y1 // 4, x0 // 4: x1 // 4] = tile
    np.testing.assert_allclose(streamed, fmap.full_deep(), atol=2e-4, rtol=1e-4)


def test_factors_are_checked(small):
    with pytest.raises(PointsegError, match="context_upscale must be one of 1, 2, 4"):
        FeatureExtractor("efficientnet_lite0_s32", context_upscale=3)
    image, truth = small
    for bad in (3, "big", True):
        with pytest.raises(PointsegError, match="context_upscale must be one of"):
            Segmenter(classes=CLASSES, context_upscale=bad, precision="fp32").fit([image], [points_from_truth(truth, 4)])


def test_a_trunk_without_context_ignores_the_factor(small):
    ext = FeatureExtractor("efficientnet_lite0", precision="fp32", engine="torch", context_upscale=4)
    assert ext.context_upscale == 1 and "-cu" not in ext.id
    assert ext.affordable_context_upscales([(100, 100)]) == (1,)


def test_only_small_images_can_afford_an_enlarged_context(native):
    assert native.affordable_context_upscales([(200, 200)] * 3) == (1, 2, 4)
    assert native.affordable_context_upscales([(320, 480), (320, 480), (200, 200)]) == (1, 2)
    assert native.affordable_context_upscales([(1000, 1000)]) == (1,)
    assert native.affordable_context_upscales([(500, 1250)]) == (1,)
    side = int(np.sqrt(CONTEXT_UPSCALE_MAX_PIXELS / 4))
    assert native.affordable_context_upscales([(side, side)]) == (1, 2)
    assert native.affordable_context_upscales([(side + 1, side + 1)]) == (1,)


def _three_images():
    images, points = [], []
    for seed in range(3):
        image, truth = two_texture_image(h=150, w=190, seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 8, seed=seed))
    return images, points


def test_cv_rule_picks_the_factor_whose_held_out_clicks_are_best():
    from pointseg import FeatureCache

    images, points = _three_images()
    cache = FeatureCache()  # each image's features per factor computed once for all the models below
    accuracy = {}
    for factor in (1, 2, 4):
        seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale=factor, cache=cache).fit(images, points)
        assert seg.context_upscale_ == factor and seg.training_report_.cv_method == "leave-one-image-out"
        accuracy[factor] = seg.training_report_.cv_accuracy
    best = max((1, 2, 4), key=lambda f: (accuracy[f], -f))  # ties: the smaller factor
    seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale="cv", cache=cache).fit(images, points)
    assert seg.context_upscale_ == best
    assert seg.extractor.context_upscale == best
    fixed = Segmenter(classes=CLASSES, precision="fp32", context_upscale=best, cache=cache).fit(images, points)
    np.testing.assert_array_equal(seg.predict(images[0]), fixed.predict(images[0]))


def test_cv_rule_leaves_large_images_native(monkeypatch):
    import pointseg.features as features_module

    images, points = _three_images()
    monkeypatch.setattr(features_module, "CONTEXT_UPSCALE_MAX_PIXELS", 150 * 190 * 4 - 1)  # ×2 too dear
    calls = []
    original = FeatureExtractor.with_context_upscale
    monkeypatch.setattr(FeatureExtractor, "with_context_upscale",
                        lambda self, f: calls.append(f) or original(self, f))
    seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale="cv").fit(images, points)
    assert seg.context_upscale_ == 1 and set(calls) == {1}  # no enlarged copy was ever made


def test_model_file_keeps_the_fitted_factor(tmp_path, small):
    from modelkit import read_raw

    image, truth = small
    for factor, version in ((2, 2), (1, 1)):
        seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale=factor)
        seg.fit([image], [points_from_truth(truth, 6)])
        path = tmp_path / f"m{factor}.pointseg"
        seg.save(path)
        meta, _ = read_raw(path)
        assert meta["params"]["context_upscale"] == factor
        assert meta["preprocessing"]["preprocessing_version"] == version  # older readers refuse only x2/x4
        loaded = Segmenter.load(path, precision="fp32")
        assert loaded.context_upscale_ == factor and loaded.extractor.context_upscale == factor
        np.testing.assert_array_equal(loaded.predict(image), seg.predict(image))


def test_cli_train_records_the_context_factor_and_refuses_a_bad_one(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    from modelkit import read_raw

    image, truth = two_texture_image(h=150, w=190)
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps({
        "classes": [{"name": n, "color": c} for n, c in zip(CLASSES, ("#00ff00", "#0000ff", "#ff0000"))],
        "images": [{"path": "a.png", "points": [[float(x), float(y), CLASSES[int(k)]]
                                                 for x, y, k in points_from_truth(truth, 5)]}]}))

    def train(value):
        return subprocess.run([sys.executable, "-m", "pointseg.cli", "train", str(tmp_path / "ann.json"), "-o",
                               str(tmp_path / "m.pointseg"), "--context-upscale", value],
                              capture_output=True, text=True, timeout=300)

    result = train("2")
    assert result.returncode == 0, result.stderr
    assert read_raw(tmp_path / "m.pointseg")[0]["params"]["context_upscale"] == 2
    result = train("3")
    assert result.returncode == 2 and "context_upscale must be one of 1, 2, 4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cv_rule_accepts_the_native_feature_maps_the_app_passes():
    from pointseg import FeatureCache

    images, points = _three_images()
    cache = FeatureCache()
    native = Segmenter(classes=CLASSES, precision="fp32", cache=cache)
    fmaps = [native.extract_features(image) for image in images]
    from_maps = Segmenter(classes=CLASSES, precision="fp32", context_upscale="cv", cache=cache).fit(fmaps, points)
    from_images = Segmenter(classes=CLASSES, precision="fp32", context_upscale="cv", cache=cache).fit(images, points)
    assert from_maps.context_upscale_ == from_images.context_upscale_
    np.testing.assert_array_equal(from_maps.head_.coef, from_images.head_.coef)

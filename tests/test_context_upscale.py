"""The context stage on an enlarged copy (``context_upscale``): what changes, what stays, and the "size" rule."""
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
    assert ext.context_upscale_for([(100, 100)]) == 1


def test_size_rule_enlarges_only_images_below_the_context_reach(native):
    assert native.spec.context_reach == 258 and native.spec.base_reach == 104
    assert native.context_upscale_for([(200, 200)] * 3) == 4  # NEU-Seg
    assert native.context_upscale_for([(250, 300), (222, 400), (300, 380)]) == 4  # the median decides
    assert native.context_upscale_for([(112, 300), (300, 300), (400, 300)]) == 1
    assert native.context_upscale_for([(320, 480)] * 3) == 1  # CrackForest
    assert native.context_upscale_for([(500, 1250)]) == 1  # KolektorSDD
    assert native.context_upscale_for([(257, 2000)]) == 2  # x4 would exceed CONTEXT_UPSCALE_MAX_PIXELS
    assert native.context_upscale_for([(250, 20000)]) == 1
    assert 16 * 250 * 1000 <= CONTEXT_UPSCALE_MAX_PIXELS < 16 * 257 * 2000


def test_the_reaches_are_the_measured_receptive_fields(native):
    """The spec's reaches are what the trunk's gradients say (a changed architecture fails here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "context_diagnosis.py"
    spec = importlib.util.spec_from_file_location("context_diagnosis", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    measured = module.receptive_field(size=768, trials=1)
    assert abs(measured["context"]["80%"] - native.spec.context_reach) <= 0.1 * native.spec.context_reach
    assert abs(measured["stride16"]["80%"] - native.spec.base_reach) <= 0.1 * native.spec.base_reach


def _three_images(h=150, w=190):
    images, points = [], []
    for seed in range(3):
        image, truth = two_texture_image(h=h, w=w, seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 8, seed=seed))
    return images, points


def test_size_rule_fits_the_factor_and_every_predictor_uses_it():
    from pointseg import FeatureCache

    images, points = _three_images()
    cache = FeatureCache()
    seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale="size", cache=cache).fit(images, points)
    assert seg.context_upscale_ == 4 and seg.extractor.context_upscale == 4
    fixed = Segmenter(classes=CLASSES, precision="fp32", context_upscale=4, cache=cache).fit(images, points)
    np.testing.assert_array_equal(seg.head_.coef, fixed.head_.coef)
    np.testing.assert_array_equal(seg.predict(images[0]), fixed.predict(images[0]))
    # the streamed path (what images above stream_above take) gives the cached map's scores
    other = np.ascontiguousarray(images[1][:, ::-1])
    streamed = seg.extractor.image_scores(other, *seg.head_.folded(), stream_above=0)
    np.testing.assert_allclose(streamed.grid(), seg.decision_grid(other).grid(), atol=1e-3)


def test_size_rule_leaves_images_at_least_the_reach_native(monkeypatch):
    images, points = _three_images(h=260, w=300)
    calls = []
    original = FeatureExtractor.with_context_upscale
    monkeypatch.setattr(FeatureExtractor, "with_context_upscale",
                        lambda self, f: calls.append(f) or original(self, f))
    seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale="size").fit(images, points)
    assert seg.context_upscale_ == 1 and set(calls) == {1}  # no enlarged copy was ever made
    assert "-cu" not in seg.extractor.id


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


def _cli_train(tmp_path, *extra):
    """``pointseg train`` on one small image (150 x 190 px, 5 clicks per class) with ``extra`` options."""
    import json
    import subprocess
    import sys

    from PIL import Image

    image, truth = two_texture_image(h=150, w=190)
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps({
        "classes": [{"name": n, "color": c} for n, c in zip(CLASSES, ("#00ff00", "#0000ff", "#ff0000"))],
        "images": [{"path": "a.png", "points": [[float(x), float(y), CLASSES[int(k)]]
                                                 for x, y, k in points_from_truth(truth, 5)]}]}))
    return subprocess.run([sys.executable, "-m", "pointseg.cli", "train", str(tmp_path / "ann.json"), "-o",
                           str(tmp_path / "m.pointseg"), *extra], capture_output=True, text=True, timeout=300)


def test_cli_train_records_the_context_factor_and_refuses_a_bad_one(tmp_path):
    from modelkit import read_raw


    def train(value):
        return _cli_train(tmp_path, "--context-upscale", value)

    result = train("2")
    assert result.returncode == 0, result.stderr
    assert read_raw(tmp_path / "m.pointseg")[0]["params"]["context_upscale"] == 2
    result = train("3")
    assert result.returncode == 2 and "context_upscale must be one of 1, 2, 4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_size_rule_accepts_the_native_feature_maps_the_app_passes():
    from pointseg import FeatureCache

    images, points = _three_images()
    cache = FeatureCache()
    native = Segmenter(classes=CLASSES, precision="fp32", cache=cache, context_upscale=1)
    fmaps = [native.extract_features(image) for image in images]
    assert all("-cu" not in fmap.extractor_id for fmap in fmaps)
    from_maps = Segmenter(classes=CLASSES, precision="fp32", context_upscale="size", cache=cache).fit(fmaps, points)
    from_images = Segmenter(classes=CLASSES, precision="fp32", context_upscale="size", cache=cache).fit(images, points)
    assert from_maps.context_upscale_ == from_images.context_upscale_ == 4
    np.testing.assert_array_equal(from_maps.head_.coef, from_images.head_.coef)


def test_a_warm_started_clone_keeps_the_factor_its_head_was_trained_with(small):
    image, truth = small
    seg = Segmenter(classes=CLASSES, precision="fp32", context_upscale="size", warm_start=True)
    seg.fit([image], [points_from_truth(truth, 4)])
    assert seg.context_upscale_ == 4
    clone = seg.clone()
    assert clone.context_upscale_ == 4 and clone.extractor.context_upscale == 4
    np.testing.assert_array_equal(clone.predict(image), seg.predict(image))


# ---------------------------------------------------------------- "size" is the default


def test_the_default_enlarges_the_context_of_small_images_only():
    small = _three_images()
    seg = Segmenter(classes=CLASSES, precision="fp32").fit(*small)
    assert seg.get_params()["context_upscale"] == "size"
    assert seg.context_upscale_ == 4 and seg.extractor.id.endswith("-cu4")
    large = _three_images(h=260, w=300)  # the short side at least the context stage's reach (258 px)
    seg = Segmenter(classes=CLASSES, precision="fp32").fit(*large)
    assert seg.context_upscale_ == 1 and "-cu" not in seg.extractor.id
    for name in ("default", "thin"):
        assert Segmenter.preset(name).get_params()["context_upscale"] == "size"


def test_the_default_extracts_each_training_image_once(monkeypatch):
    """The rule is decided from the images' sizes before extraction, and features prepared before a fit
    are made at the factor the rule gives the image: no native pass is made and thrown away."""
    from pointseg import FeatureCache

    calls = []
    original = FeatureExtractor.compute_parts
    monkeypatch.setattr(FeatureExtractor, "compute_parts",
                        lambda self, rgb, **kw: calls.append(self.context_upscale) or original(self, rgb, **kw))
    images, points = _three_images(h=140, w=170)
    cache = FeatureCache()
    Segmenter(classes=CLASSES, precision="fp32", cache=cache).fit(images, points)
    assert calls == [4, 4, 4]
    seg = Segmenter(classes=CLASSES, precision="fp32", cache=cache)
    image, truth = two_texture_image(h=140, w=170, seed=5)
    prepared = seg.extract_features(image)  # what the evaluation harness's prepare does
    assert calls[-1] == 4 and prepared.extractor_id.endswith("-cu4")
    seg.fit([prepared, *images[1:]], [points_from_truth(truth, 8), *points[1:]])
    assert len(calls) == 4  # the prepared map and the cached maps were used as they are


def test_a_default_model_file_records_the_fitted_factor_and_stays_readable_when_native(tmp_path):
    from modelkit import read_raw

    for (h, w), factor, version in (((150, 190), 4, 2), ((260, 300), 1, 1)):
        images, points = _three_images(h=h, w=w)
        seg = Segmenter(classes=CLASSES, precision="fp32").fit(images, points)
        path = tmp_path / f"m{factor}.pointseg"
        seg.save(path)
        meta, _ = read_raw(path)
        assert meta["params"]["context_upscale"] == factor
        # a native model writes what pointseg before context_upscale wrote: older readers load it
        assert meta["preprocessing"]["preprocessing_version"] == version
        loaded = Segmenter.load(path, precision="fp32")
        assert loaded.context_upscale_ == factor and loaded.get_params()["context_upscale"] == factor
        np.testing.assert_array_equal(loaded.predict(images[0]), seg.predict(images[0]))


def test_the_seed_preset_keeps_the_native_context(shared_weights):
    from pointseg.presets import preset_params

    params = preset_params("seed")
    assert params == {"backbone": "resnet18", "classifier": "logistic", "C": 0.1, "class_weight": "balanced",
                      "features": "deep", "smoothing": 0.0, "context_upscale": 1}
    images, points = _three_images()
    seed = Segmenter.preset("seed", classes=CLASSES, weights=shared_weights, precision="fp32").fit(images, points)
    assert seed.context_upscale_ == 1 and "-cu" not in seed.extractor.id
    # resnet18 has no context stage: the rule itself gives 1 too, with the same features
    ruled = Segmenter.preset("seed", classes=CLASSES, weights=shared_weights, precision="fp32",
                             context_upscale="size", cache=seed.cache).fit(images, points)
    assert ruled.context_upscale_ == 1 and ruled.extractor.id == seed.extractor.id
    np.testing.assert_array_equal(ruled.head_.coef, seed.head_.coef)


def test_cli_train_records_the_rule_by_default_and_1_turns_it_off(tmp_path):
    from modelkit import read_raw


    def train(*extra):
        result = _cli_train(tmp_path, *extra)
        assert result.returncode == 0, result.stderr
        return read_raw(tmp_path / "m.pointseg")[0]

    meta = train()
    assert meta["params"]["context_upscale"] == 4 and meta["preprocessing"]["preprocessing_version"] == 2
    meta = train("--context-upscale", "1")
    assert meta["params"]["context_upscale"] == 1 and meta["preprocessing"]["preprocessing_version"] == 1


@pytest.mark.parametrize("tile_size", [1024, 256])
def test_the_enlarged_copy_skips_the_fusion_and_gives_the_same_context(small, tile_size):
    """The enlarged copy runs the trunk to its stride-16 map only (its fused map was always dropped): the
    context is bit for bit the one the full base pass gives."""
    from pointseg.features import DROP_FUSED

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch", tile_size=tile_size)
    up = upscale_image(np.pad(small[0], ((0, 10), (0, 2), (0, 0)), mode="reflect"), 4)
    sunk = []
    _, fast = ext._context_passes(up, sink=DROP_FUSED, upscaled=False)
    _, full = ext._context_passes(up, sink=lambda box, fused: sunk.append(fused.shape), upscaled=False)
    assert len(sunk) == ext.n_tiles(up.shape[:2]) and all(len(s) == 3 for s in sunk)  # the full pass fused
    assert torch_equal(fast, full)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())

import numpy as np
import pytest

import pointseg.segmenter as segmenter_module
from pointseg import PointsegError, Segmenter
from pointseg.errors import ModelFileError

from synthetic import points_from_truth, two_texture_image

CLASSES = ["left", "right", "disc"]


@pytest.fixture(scope="module", params=["efficientnet_lite0", "efficientnet_lite0_s32"])
def fitted(request):
    image, truth = two_texture_image()
    # no smoothing here, so that the exact identities below (point accuracy = map at the points) hold; the
    # stride-32 backbone keeps its context map coarse (scored before upsampling), which they must survive too
    seg = Segmenter(request.param, CLASSES, precision="fp32", smoothing=0)
    seg.fit([image], [points_from_truth(truth, 8)])
    return seg, image, truth


def test_defaults_are_the_default_preset():
    from pointseg.presets import preset_params

    seg = Segmenter(classes=CLASSES)
    params = preset_params("default")
    assert seg.backbone == params["backbone"] and seg.features_ == params["features"]
    assert seg.smoothing_ == params["smoothing"]
    assert Segmenter(classifier="random_forest").features_ == "deep"
    assert Segmenter(classifier="random_forest").smoothing_ == 0.0


def test_fit_predict_recovers_the_known_regions(fitted):
    seg, image, truth = fitted
    labels = seg.predict(image)
    assert labels.shape == truth.shape and labels.dtype == np.int64
    assert (labels == truth).mean() > 0.9
    for k in range(3):
        assert ((labels == k) & (truth == k)).sum() / ((labels == k) | (truth == k)).sum() > 0.6


def test_training_report(fitted):
    seg, _, _ = fitted
    r = seg.training_report_
    assert r.points_per_class == {"left": 8, "right": 8, "disc": 8}
    assert r.n_points == 24 and r.n_images == 1
    assert r.point_accuracy == 1.0
    assert r.cv_method == "5-fold" and 0.5 <= r.cv_accuracy <= 1.0
    assert "accuracy on the marked points" in r.summary()


def test_point_accuracy_is_the_accuracy_of_the_predicted_map_at_the_points(fitted):
    seg, image, truth = fitted
    pts = points_from_truth(truth, 8)
    labels = seg.predict(image)
    at_points = labels[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    assert (at_points == pts[:, 2]).mean() == seg.training_report_.point_accuracy


def test_probabilities_sum_to_one_and_agree_with_labels(fitted):
    seg, image, _ = fitted
    proba = seg.predict_proba(image)
    assert proba.shape == (3, *image.shape[:2]) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    full = seg.predict_full(image)
    np.testing.assert_array_equal(full.labels, proba.argmax(0))
    np.testing.assert_allclose(full.uncertainty, 1 - proba.max(0), atol=1e-6)


def test_banded_and_streamed_prediction_equal_whole_prediction(fitted, monkeypatch):
    seg, image, _ = fitted
    whole = seg.predict_full(image, probabilities=True)
    monkeypatch.setattr(segmenter_module, "BAND_ROWS", 8)
    banded = seg.predict_full(image, probabilities=False)
    np.testing.assert_array_equal(banded.labels, whole.labels)
    np.testing.assert_allclose(banded.uncertainty, whole.uncertainty, atol=1e-6)
    # an uncached image above the streaming threshold goes tile by tile through the backbone
    monkeypatch.setattr(segmenter_module, "STREAM_ABOVE_PIXELS", 10)
    other = np.ascontiguousarray(image[::-1])
    streamed = seg.predict(other)
    assert seg.extractor.key_for(other) not in seg.extractor.cache
    assert (streamed == seg.predict(seg.extract_features(other))).mean() > 0.999


def test_feature_maps_can_stand_in_for_images(fitted):
    seg, image, truth = fitted
    fmap = seg.extract_features(image)
    twin = Segmenter(seg.backbone, CLASSES, precision="fp32", cache=seg.cache, smoothing=0)
    twin.fit([fmap], [points_from_truth(truth, 8)])
    np.testing.assert_array_equal(twin.predict(fmap), seg.predict(image))


def test_class_without_points_gets_no_probability():
    image, truth = two_texture_image()
    pts = points_from_truth(truth, 6)
    pts = pts[pts[:, 2] != 2]
    seg = Segmenter("efficientnet_lite0", CLASSES, precision="fp32").fit([image], [pts])
    proba = seg.predict_proba(image)
    assert proba[2].max() == 0.0
    assert seg.training_report_.points_per_class["disc"] == 0


def test_scribbles_train_like_points():
    image, truth = two_texture_image()
    scribbles = [[{"class": 0, "width": 6, "points": [[10, 120], [90, 150]]},
                  {"class": 1, "width": 6, "points": [[130, 20], [210, 140]]}]]
    seg = Segmenter("efficientnet_lite0", ["left", "right"], precision="fp32")
    seg.fit([image], [np.zeros((0, 3))], scribbles=scribbles)
    assert seg.training_report_.n_points > 20
    labels = seg.predict(image)
    assert (labels[truth == 1] == 1).mean() > 0.9 and (labels[truth == 0] == 0).mean() > 0.8


def test_leave_one_image_out_with_several_images():
    images, points = [], []
    for seed in (0, 1):
        image, truth = two_texture_image(seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 4, seed=seed))
    seg = Segmenter("efficientnet_lite0", CLASSES, precision="fp32").fit(images, points)
    assert seg.training_report_.cv_method == "leave-one-image-out"
    assert seg.training_report_.n_images == 2


@pytest.mark.parametrize("points, message", [
    ([np.array([[5, 5, 0], [6, 6, 0]])], "at least two classes"),
    ([np.array([[500, 5, 0], [6, 6, 1]])], "outside"),
    ([np.array([[5, 5, 0], [6, 6, 7]])], "out of range"),
    ([np.zeros((0, 3))], "no points"),
])
def test_bad_points_are_clear_errors(points, message):
    image, _ = two_texture_image()
    with pytest.raises(PointsegError, match=message):
        Segmenter("efficientnet_lite0", CLASSES, precision="fp32").fit([image], points)


def test_predict_before_fit_and_mismatched_inputs():
    image, _ = two_texture_image()
    seg = Segmenter("efficientnet_lite0", CLASSES, precision="fp32")
    with pytest.raises(PointsegError, match="not trained"):
        seg.predict(image)
    with pytest.raises(PointsegError, match="2 images but 1"):
        seg.fit([image, image], [np.zeros((0, 3))])


def test_random_forest_variant(fitted):
    _, image, truth = fitted
    seg = Segmenter("efficientnet_lite0", CLASSES, precision="fp32", classifier="random_forest")
    seg.fit([image], [points_from_truth(truth, 8)])
    assert (seg.predict(image) == truth).mean() > 0.85
    np.testing.assert_allclose(seg.predict_proba(image).sum(0), 1, atol=1e-4)


def test_seed_preset_is_the_reference_configuration(shared_weights):
    seg = Segmenter.preset("seed", classes=CLASSES, weights=shared_weights)
    assert seg.backbone == "resnet18" and seg.classifier == "logistic"
    assert seg.extractor.channels == 448
    with pytest.raises(PointsegError, match="unknown preset"):
        Segmenter.preset("fastest")


def test_save_load_reproduces_predictions_exactly(fitted, tmp_path):
    seg, image, _ = fitted
    path = tmp_path / "m.pointseg"
    seg.save(path)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    loaded = Segmenter.load(path)
    assert loaded.classes_ == seg.classes_ and loaded.colors_ == seg.colors_
    np.testing.assert_array_equal(loaded.predict_proba(image), seg.predict_proba(image))
    assert loaded.training_report_.point_accuracy == seg.training_report_.point_accuracy


def test_model_for_other_weights_is_refused(fitted, tmp_path):
    import torch

    from pointseg.backbones import get_spec

    seg, _, _ = fitted
    path = tmp_path / "m.pointseg"
    seg.save(path)
    state = torch.load(get_spec(seg.backbone).package_file(), weights_only=True)
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 1.01
    torch.save(state, tmp_path / "tweaked.pth")
    with pytest.raises(ModelFileError, match=f"trained with other {seg.backbone} weights"):
        Segmenter.load(path, weights=tmp_path / "tweaked.pth")


def test_damaged_or_foreign_model_files(tmp_path):
    (tmp_path / "junk.pointseg").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a pointseg model file"):
        Segmenter.load(tmp_path / "junk.pointseg")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="not a pointseg model"):
        Segmenter.load(tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="not found"):
        Segmenter.load(tmp_path / "missing.pointseg")


@pytest.fixture(scope="module")
def smoothed():
    """The default set-up (hybrid features, σ = 1.5 smoothing, stride-32 context) on the synthetic image."""
    image, truth = two_texture_image()
    seg = Segmenter("efficientnet_lite0_s32", CLASSES, precision="fp32")
    assert seg.features_ == "hybrid" and seg.smoothing_ > 0
    seg.fit([image], [points_from_truth(truth, 8)])
    return seg, image, truth


@pytest.mark.parametrize("box", [
    (0, 160, 0, 224),      # the whole image
    (0, 23, 0, 31),        # top-left corner
    (131, 160, 190, 224),  # bottom-right corner
    (0, 160, 101, 102),    # one column, top to bottom
    (159, 160, 223, 224),  # the last pixel
    (37, 93, 45, 170),     # inside, off the grid and the fine tiles
])
def test_region_prediction_equals_the_crop_of_the_whole_prediction(smoothed, box, monkeypatch):
    import pointseg.features as features_module

    seg, image, _ = smoothed
    whole = seg.predict_full(image)
    monkeypatch.setattr(features_module, "FINE_TILE", 48)  # boxes straddle fine tiles
    fmap = seg.extract_features(image)
    y0, y1, x0, x1 = box
    region = seg.predict_region(fmap, box)
    assert region.labels.shape == (y1 - y0, x1 - x0)
    np.testing.assert_array_equal(region.labels, whole.labels[y0:y1, x0:x1])
    np.testing.assert_allclose(region.probabilities, whole.probabilities[:, y0:y1, x0:x1], atol=1e-5)
    np.testing.assert_allclose(region.uncertainty, whole.uncertainty[y0:y1, x0:x1], atol=1e-5)


def test_region_needs_its_halo_for_smoothing(smoothed):
    """Guards the test above: a box predicted without the margin around it would differ at its edges."""
    seg, image, _ = smoothed
    fmap = seg.extract_features(image)
    scores = seg.decision_grid(fmap)
    box = (37, 93, 45, 170)
    with_halo = seg._smoothed_box(scores, *box)
    without = seg._smooth_scores(scores.logits(*box))
    assert not np.allclose(with_halo.numpy(), without.numpy(), atol=1e-4)
    assert np.allclose(with_halo.numpy()[:, 8:-8, 8:-8], without.numpy()[:, 8:-8, 8:-8], atol=1e-4)


def test_region_preview_at_screen_resolution(smoothed):
    seg, image, truth = smoothed
    fmap = seg.extract_features(image)
    preview = seg.predict_region(fmap, (0, 160, 0, 224), scale=0.25)
    assert preview.labels.shape == (40, 56) and preview.probabilities.shape == (3, 40, 56)
    np.testing.assert_allclose(preview.probabilities.sum(0), 1, atol=1e-5)
    centres = truth[2::4, 2::4]
    assert (preview.labels == centres).mean() > 0.85
    odd = seg.predict_region(fmap, (10, 47, 20, 63), scale=0.3, probabilities=False)
    assert odd.labels.shape == (12, 13) and odd.probabilities is None
    for box, scale, message in [((0, 161, 0, 10), 1, "inside"), ((5, 5, 0, 10), 1, "non-empty"),
                                ((0, 10, 0, 10), 1.5, "scale"), ((0, 10), 1, "box must be")]:
        with pytest.raises(PointsegError, match=message):
            seg.predict_region(fmap, box, scale=scale)


def test_zoomed_out_preview_of_a_large_map_reads_a_pooled_level(smoothed, monkeypatch, tmp_path):
    """A paged (large) map previewed far zoomed out reads the pooled level whose cells are at most two
    screen pixels wide: the same picture as scoring every stride-4 cell, for a fraction of the cells."""
    import copy
    import tempfile

    from pointseg.features import FeatureCache
    from pointseg.segmenter import preview_level

    assert [preview_level(s, 4, 2) for s in (1, 0.4, 0.25, 0.196, 0.125, 0.01)] == [0, 0, 1, 1, 2, 2]
    assert preview_level(0.01, 4, 0) == 0 and preview_level(0.01, 4, 1) == 1
    seg, image, truth = smoothed
    # the big image is the training image x4: the default's x4 context (fitted on the small image) would see it
    # x16 (one factor per model), which costs the view its last percent; this test is about pooled levels
    seg = seg.clone(context_upscale=1).fit([image], [points_from_truth(truth, 8)])
    big, big_truth = np.kron(image, np.ones((4, 4, 1), np.uint8)), np.kron(truth, np.ones((4, 4), truth.dtype))
    monkeypatch.setenv("POINTSEG_PAGED_DEEP_ABOVE_PIXELS", "1000")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    extractor = copy.copy(seg.extractor)
    extractor.cache = FeatureCache()
    scores = seg.decision_grid(extractor.extract(big))
    assert scores.levels == 2
    read, window = [], scores._grid_window
    scores._grid_window = lambda rows, cols, level=0: read.append(level) or window(rows, cols, level)
    h, w = big.shape[:2]
    for scale, level in [(0.4, 0), (0.2, 1), (0.1, 2)]:
        read.clear()
        preview = seg.predict_region(scores, (0, h, 0, w), scale=scale)
        assert read == [level]
        oh, ow = int(np.ceil(h * scale)), int(np.ceil(w * scale))
        assert preview.labels.shape == (oh, ow)
        np.testing.assert_allclose(preview.probabilities.sum(0), 1, atol=1e-5)
        ys = np.minimum(h - 1, np.floor((np.arange(oh) + 0.5) / scale)).astype(int)
        xs = np.minimum(w - 1, np.floor((np.arange(ow) + 0.5) / scale)).astype(int)
        assert (preview.labels == big_truth[np.ix_(ys, xs)]).mean() > 0.85, scale
        levels, scores.levels = scores.levels, 0  # the same view scored cell by cell
        cellwise = seg.predict_region(scores, (0, h, 0, w), scale=scale)
        scores.levels = levels
        assert (preview.labels == cellwise.labels).mean() > 0.95, scale


def test_progressive_first_view_ends_with_the_ordinary_prediction(smoothed, monkeypatch):
    seg, image, truth = smoothed
    monkeypatch.setattr(segmenter_module, "BAND_ROWS", 48)
    other = np.ascontiguousarray(image[:, ::-1])  # not in the cache yet: its features are extracted here
    steps = list(seg.predict_progressive(other, max_side=64))
    coarse, last = steps[0], steps[-1]
    assert coarse.stage == "coarse" and coarse.prediction.labels.shape == (46, 64)
    assert coarse.scale == pytest.approx(64 / 224)
    assert (coarse.prediction.labels == truth[:, ::-1][::160 // 46, ::224 // 64][:46, :64]).mean() > 0.6
    stages = [s.stage for s in steps]
    assert stages.count("features") >= 1 and stages.count("band") == 4 and stages[-1] == "done"
    done = [s.done for s in steps]
    assert done == sorted(done) and done[-1] == last.total
    bands = [s for s in steps if s.stage == "band"]
    assert [s.box for s in bands] == [(0, 48, 0, 224), (48, 96, 0, 224), (96, 144, 0, 224), (144, 160, 0, 224)]
    reference = seg.predict_full(other, probabilities=False)
    np.testing.assert_array_equal(last.prediction.labels, reference.labels)
    np.testing.assert_allclose(last.prediction.uncertainty, reference.uncertainty, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([s.prediction.labels for s in bands]), reference.labels)


def test_coarse_first_view_of_a_large_image(smoothed):
    seg, image, truth = smoothed
    big = np.kron(image, np.ones((4, 4, 1), np.uint8))  # 640 x 896
    coarse = seg.predict_coarse(big, max_side=224)
    assert coarse.labels.shape == (160, 224)
    assert (coarse.labels == truth).mean() > 0.8
    assert seg.extractor.key_for(big) not in seg.extractor.cache  # the first view computes no full features
    # from a preview made beforehand (the app's cached one): the same view, smoothing scaled to the original
    from pointseg.imageio import downscale

    preview = downscale(big, 224)
    again = seg.predict_coarse(preview, max_side=224, probabilities=True, image_size=big.shape[:2])
    np.testing.assert_array_equal(again.labels, coarse.labels)
    if seg.smoothing_:
        unscaled = seg.predict_coarse(preview, max_side=224, probabilities=True)   # as if it were the image
        assert not np.allclose(unscaled.probabilities, again.probabilities)


def test_loaded_model_is_built_through_the_constructor_path(fitted, tmp_path):
    seg, image, _ = fitted
    seg.save(tmp_path / "m.pointseg")
    loaded = Segmenter.load(tmp_path / "m.pointseg")
    assert loaded.n_features_in_ == seg.n_features_in_ and loaded.model_metadata_["classes"] == CLASSES
    # the head was trained at the factor the default's rule chose (x4 for this small image, with a context
    # stage): a Segmenter built from the head alone is told it, and refuses to guess it from the rule
    twin = Segmenter.from_fitted(seg.head_, seg.classes_, seg.colors_, backbone=seg.backbone, precision="fp32",
                                 smoothing=0, cache=seg.cache, context_upscale=seg.context_upscale_)
    np.testing.assert_array_equal(twin.predict(image), seg.predict(image))
    if seg.extractor.spec.context_reach is not None:
        with pytest.raises(PointsegError, match="from_fitted needs the context factor"):
            Segmenter.from_fitted(seg.head_, seg.classes_, seg.colors_, backbone=seg.backbone)


def test_paged_deep_map_predicts_as_the_same_map_held_in_memory(smoothed, monkeypatch, tmp_path):
    """A large image's deep map paged from a file (here: any image above 1,000 pixels) gives the predictions
    of the same float16 map held in memory, whole and per region."""
    import copy
    import tempfile

    from pointseg.features import FeatureCache, FeatureMap

    seg, image, _ = smoothed
    held = seg.extract_features(image)
    monkeypatch.setenv("POINTSEG_PAGED_DEEP_ABOVE_PIXELS", "1000")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    extractor = copy.copy(seg.extractor)
    extractor.cache = FeatureCache()
    paged, paged_seg = extractor.extract(image), seg
    assert paged.paged and not held.paged
    reference = FeatureMap(held.data.astype(np.float16), held.image_size, held.extent, "f16", held.extractor_id,
                           context=held.context, rgb=held.rgb)
    whole, expected = paged_seg.predict_full(paged), seg.predict_full(reference)
    np.testing.assert_array_equal(whole.labels, expected.labels)
    np.testing.assert_allclose(whole.probabilities, expected.probabilities, atol=1e-6)
    box = (37, 93, 45, 170)
    region = paged_seg.predict_region(paged, box)
    np.testing.assert_array_equal(region.labels, whole.labels[37:93, 45:170])
    np.testing.assert_allclose(region.probabilities, whole.probabilities[:, 37:93, 45:170], atol=1e-5)
    refit = seg.clone()
    refit.fit([paged], [points_from_truth(two_texture_image()[1], 8)])
    np.testing.assert_allclose(refit.head_.coef, seg.head_.coef, rtol=1e-2, atol=1e-2)

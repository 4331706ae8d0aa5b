"""The auto-context head (pointseg.autocontext): exact boxes, out-of-fold training, the Segmenter parameter,
the model file, and a thin-line case with a known answer where stage 2 must beat stage 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import pointseg.autocontext as AC
from pointseg import Segmenter
from pointseg.autocontext import (
    RADIUS,
    AutoContextHead,
    AutoContextScores,
    context_at,
    context_names,
    n_context_channels,
)
from pointseg.errors import PointsegError

CLASSES = ["ground", "line"]


def thin_lines_image(h: int = 160, w: int = 224, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lines 2 px wide, each in the middle of a dark band 7 px wide of the same grey, on a noisy ground:
    (image, truth = the lines). A pixel's own neighbourhood cannot tell the line from the rest of its band;
    where it sits across the band can."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    truth = np.zeros((h, w), np.int64)
    for k, x0 in enumerate((40, 100, 170)):
        truth[np.abs(xx - (x0 + 6 * np.sin(yy / (9.0 + k)))) < 1.0] = 1
    truth[np.abs(yy - (80 + 5 * np.sin(xx / 11.0))) < 1.0] = 1
    dist = ndi.distance_transform_edt(truth == 0)
    grey = 150 - 50 * (dist <= 3) + rng.normal(0, 8, (h, w))
    return np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2).astype(np.uint8), truth


def line_points(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """40 points on the lines, 40 in the bands beside them, 40 further away."""
    rng = np.random.default_rng(seed)
    dist = ndi.distance_transform_edt(truth == 0)
    pts = []
    for where, c in ((truth == 1, 1), ((truth == 0) & (dist <= 4), 0), ((truth == 0) & (dist > 4), 0)):
        ys, xs = np.nonzero(where)
        pick = rng.choice(len(xs), 40, replace=False)
        pts += [[xs[j], ys[j], c] for j in pick]
    return np.array(pts, dtype=np.float64)


def line_iou(seg: Segmenter, image: np.ndarray, truth: np.ndarray) -> float:
    pred = seg.predict(image) == 1
    return float((pred & (truth == 1)).sum() / (pred | (truth == 1)).sum())


@pytest.fixture(scope="module")
def fitted(cache):
    image, truth = thin_lines_image()
    points = line_points(truth)
    make = dict(backbone="efficientnet_lite0", classes=CLASSES, precision="fp32", cross_validate=False, cache=cache)
    linear = Segmenter(**make).fit([image], [points])
    with pytest.MonkeyPatch.context() as mp:  # stage 2 itself: 120 points on one image would fade it
        mp.setattr(AC, "STAGE2_FULL_CLICKS", None)  # (test_many_clicks_per_image_fade_stage2_into_stage1)
        auto = Segmenter(**make, autocontext=True).fit([image], [points])
    return image, truth, points, linear, auto


def _make(cache):
    return dict(backbone="efficientnet_lite0", classes=CLASSES, precision="fp32", cross_validate=False, cache=cache)


def test_stage2_weight_is_full_up_to_the_clicks_per_image_then_falls_as_their_inverse():
    assert AC.STAGE2_FULL_CLICKS == 20
    assert AC.stage2_weight(60, 3) == 1.0 and AC.stage2_weight(20, 1) == 1.0
    assert AC.stage2_weight(120, 3) == pytest.approx(0.5) and AC.stage2_weight(120, 1) == pytest.approx(1 / 6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AC, "STAGE2_FULL_CLICKS", None)
        assert AC.stage2_weight(1000, 1) == 1.0


def test_many_clicks_per_image_fade_stage2_into_stage1(fitted, cache):
    """Beyond 20 clicks per image the thin preset's logits are blended toward the linear head's (under
    corrective clicks stage 2 helps at 20 per image and hurts at 40: BENCHMARKS, "The thin preset under more
    clicks"): 120 points on one image give stage 2 a sixth of the logits, exactly, on every box."""
    image, _, points, linear, full = fitted
    faded = Segmenter(**_make(cache), autocontext=True).fit([image], [points])
    a = 20 / 120
    c = linear.head_.coef.shape[1]
    expected = a * full.head_.stage2.coef.astype(np.float64)
    expected[:, :c] += (1 - a) * linear.head_.coef
    np.testing.assert_allclose(faded.head_.stage2.coef, expected, atol=1e-4)
    np.testing.assert_allclose(faded.head_.stage1.coef, linear.head_.coef, atol=1e-6)
    box = (40, 100, 60, 140)
    got = faded.decision_grid(image).logits(*box).numpy()
    want = a * full.decision_grid(image).logits(*box).numpy() + (1 - a) * linear.decision_grid(image).logits(*box).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert np.abs(got - full.decision_grid(image).logits(*box).numpy()).max() > 0.1  # not stage 2 unchanged


def test_few_clicks_per_image_keep_the_full_stage2(fitted, cache):
    image, _, points, _, _ = fitted
    few = points[::6]  # 20 points: stage 2 in full
    default = Segmenter(**_make(cache), autocontext=True).fit([image], [few])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AC, "STAGE2_FULL_CLICKS", None)
        unfaded = Segmenter(**_make(cache), autocontext=True).fit([image], [few])
    np.testing.assert_allclose(default.head_.stage2.coef, unfaded.head_.stage2.coef, atol=1e-6)


def test_stage2_beats_stage1_on_thin_lines(fitted):
    """The known answer: the linear head marks much of each band, the second stage, seeing where a pixel
    sits in stage 1's probability ridge, keeps closer to the line: better IoU on an unseen image."""
    _, _, _, linear, auto = fitted
    other, other_truth = thin_lines_image(seed=1)
    assert isinstance(auto.head_, AutoContextHead) and not isinstance(linear.head_, AutoContextHead)
    assert line_iou(auto, other, other_truth) > line_iou(linear, other, other_truth) + 0.03


def test_stage1_of_autocontext_is_the_linear_head(fitted):
    """Stage 1 is the ordinary head (the same fit), so turning auto-context on changes only what is added."""
    _, _, _, linear, auto = fitted
    np.testing.assert_allclose(auto.head_.stage1.coef, linear.head_.coef, atol=1e-6)
    assert auto.head_.stage2.coef.shape == (2, linear.head_.coef.shape[1] + n_context_channels(2))
    assert len(context_names(CLASSES)) == n_context_channels(2) == 13


def test_a_box_equals_the_crop_of_the_whole_image(fitted):
    """Viewports stay exact: the context of a box is computed from a margin of stage-1 logits (image edges
    extended as the whole-image filters extend them), at the border as in the middle."""
    image, *_, auto = fitted
    scores = auto.decision_grid(image)
    assert isinstance(scores, AutoContextScores)
    h, w = scores.image_size
    whole = scores.logits(0, h, 0, w)
    for box in ((0, 17, 0, 23), (60, 101, 90, 150), (h - 9, h, w - 30, w), (5, 6, w - 1, w)):
        y0, y1, x0, x1 = box
        np.testing.assert_allclose(scores.logits(*box).numpy(), whole[:, y0:y1, x0:x1].numpy(), atol=1e-4)
    np.testing.assert_allclose(auto.predict_region(image, (0, 40, 0, 64)).labels, auto.predict(image)[:40, :64])
    # the server hands the Scores of decision_grid to predict_region (many boxes, one model)
    np.testing.assert_array_equal(auto.predict_region(scores, (30, 90, 50, 130)).labels,
                                  auto.predict(image)[30:90, 50:130])


def test_context_at_points_equals_the_dense_context(fitted):
    """Training rows see the same context channels prediction computes (a patch per point = the map)."""
    image, *_, auto = fitted
    from pointseg.autocontext import _filtered, _probabilities

    stage1 = auto.extract_features(image).score(*auto.head_.stage1.folded())
    h, w = stage1.image_size
    prob = _probabilities(stage1.logits(0, h, 0, w), 2)
    dense = _filtered(np.pad(prob, ((0, 0), (RADIUS, RADIUS), (RADIUS, RADIUS)), mode="edge")[None])[0]
    dense = dense[:, RADIUS:-RADIUS, RADIUS:-RADIUS]
    xy = np.array([[0, 0], [w - 1, h - 1], [100.7, 80.2], [3, h - 2]], dtype=np.float64)
    at = context_at(stage1, xy, 2)
    expected = dense[:, np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)].T
    np.testing.assert_allclose(at, expected, atol=1e-4)


def test_out_of_fold_context_is_less_sure_than_in_sample(fitted):
    """Stage 2 trains on context from stage-1 heads that did not see the row (else it learns that stage 1 is
    always right on its points): on one image, k-fold over the points; held out, stage 1 is less sure of
    the points than the full head that fitted them."""
    from pointseg.autocontext import out_of_fold_context
    from pointseg.classifier import PointClassifier, Standardizer

    image, _, points, _, auto = fitted
    fmap = auto.extract_features(image)
    X, y = fmap.sample(points[:, :2]), points[:, 2].astype(np.int64)
    stage1 = auto.head_.stage1
    oof = out_of_fold_context(PointClassifier(), stage1, [fmap], X, points[:, :2], y, np.zeros(len(y), int), 2,
                              Standardizer.from_moments([fmap.moments()]))
    full = context_at(fmap.score(*stage1.folded()), points[:, :2], 2)
    sure = lambda ctx: np.where(y == 1, ctx[:, 0], 1 - ctx[:, 0]).mean()  # probability of the right class
    assert sure(oof) < sure(full) - 0.01
    assert oof.shape == full.shape == (len(y), 13)


def test_parameter_get_set_clone(fitted):
    _, _, _, linear, auto = fitted
    assert auto.get_params()["autocontext"] is True and linear.get_params()["autocontext"] is False
    twin = auto.clone()
    assert twin.autocontext is True and not hasattr(twin, "head_")
    assert linear.clone().set_params(autocontext=True).autocontext is True
    assert Segmenter.preset("default").autocontext is False
    thin = Segmenter.preset("thin")
    assert thin.autocontext is True and thin.get_params() == {**Segmenter.preset("default").get_params(),
                                                              "autocontext": True}


def test_warm_refit_keeps_the_head_kind(fitted):
    image, truth, points, _, auto = fitted
    seg = auto.clone(warm_start=True)
    seg.head_ = auto.head_
    seg.fit([image], [points[:-3]])
    assert isinstance(seg.head_, AutoContextHead)
    assert line_iou(seg, image, truth) > 0.3


def test_random_forest_refuses_autocontext(cache):
    image, truth = thin_lines_image(h=64, w=64)
    seg = Segmenter("efficientnet_lite0", CLASSES, classifier="random_forest", precision="fp32",
                    cross_validate=False, cache=cache, autocontext=True)
    with pytest.raises(PointsegError, match="autocontext"):
        seg.fit([image], [line_points(truth)])


def test_model_file_round_trip(fitted, tmp_path):
    image, _, _, _, auto = fitted
    path = tmp_path / "lines.pointseg"
    auto.save(path)
    loaded = Segmenter.load(path, cache=auto.cache)
    assert loaded.autocontext is True and isinstance(loaded.head_, AutoContextHead)
    assert loaded.model_metadata_["format_version"] == 3 and loaded.model_metadata_["head"] == "autocontext"
    np.testing.assert_array_equal(loaded.predict(image), auto.predict(image))
    np.testing.assert_allclose(loaded.predict_proba(image), auto.predict_proba(image), atol=1e-6)


def test_linear_model_files_stay_format_2(fitted, tmp_path):
    """Only a model that needs the new reader says so: a linear model is still readable by older pointseg."""
    _, _, _, linear, _ = fitted
    linear.save(tmp_path / "m.pointseg")
    loaded = Segmenter.load(tmp_path / "m.pointseg", cache=linear.cache)
    assert loaded.model_metadata_["format_version"] == 2 and loaded.model_metadata_["head"] == "linear"
    assert loaded.autocontext is False and not isinstance(loaded.head_, AutoContextHead)


def test_damaged_stage2_is_refused(fitted, tmp_path):
    from modelkit import read_raw, write_raw

    from pointseg.errors import ModelFileError

    _, _, _, _, auto = fitted
    auto.save(tmp_path / "a.pointseg")
    meta, tensors = read_raw(tmp_path / "a.pointseg")
    short = dict(tensors, stage2_coef=tensors["stage2_coef"][:, :-1])
    with pytest.raises(ModelFileError, match="stage2_coef has shape"):
        Segmenter.load(write_raw(tmp_path / "b.pointseg", meta, short))
    missing = {k: v for k, v in tensors.items() if k != "stage2_scale"}
    with pytest.raises(ModelFileError, match="lacks the tensors stage2_scale"):
        Segmenter.load(write_raw(tmp_path / "c.pointseg", meta, missing))
    with pytest.raises(ModelFileError, match="format 2 file"):
        Segmenter.load(write_raw(tmp_path / "d.pointseg", {**meta, "format_version": 2}, tensors))
    with pytest.raises(ModelFileError, match="auto-context version"):
        Segmenter.load(write_raw(tmp_path / "e.pointseg", {**meta, "autocontext_version": 99}, tensors))


def test_preview_uses_stage1_grid(fitted):
    """Zoomed-out previews (scale < 1) read the deep grid and the fine mean: stage 1's."""
    image, *_, auto = fitted
    scores = auto.decision_grid(image)
    stage1 = auto.extract_features(image).score(*auto.head_.stage1.folded())
    assert torch.allclose(scores.grid(), stage1.grid(), atol=1e-5)
    assert auto.predict_region(image, (0, 160, 0, 224), scale=0.25).labels.shape == (40, 56)


def test_batch_predicts_with_stage2_whole_and_in_tiles(fitted, tmp_path):
    """`pointseg predict`'s engine applies stage 2 (the label PNG is the Segmenter's labels), and so do the
    tile tasks of an image big enough to be cut into them (each label tile runs stage 2 around its box)."""
    from pointseg.batch.tiled import read_labels
    import zarr
    from PIL import Image

    from pointseg import lazyio
    from pointseg.batch import BatchOptions, predict_many

    image, _, _, _, auto = fitted
    auto.save(tmp_path / "m.pointseg")
    Image.fromarray(image).save(tmp_path / "lines.png")
    (result,) = predict_many(str(tmp_path / "m.pointseg"), [str(tmp_path / "lines.png")], str(tmp_path / "out"))
    assert result.ok, result.error
    written = np.asarray(Image.open(tmp_path / "out" / "lines.png"))
    np.testing.assert_array_equal(written, auto.predict(image))
    store = lazyio.zarr_store(str(tmp_path / "big.zarr"), read_only=False)
    zarr.open_array(store=store, mode="w", shape=image.shape, chunks=(64, 64, 3), dtype="u1")[:] = image
    (tiled,) = predict_many(str(tmp_path / "m.pointseg"), [str(tmp_path / "big.zarr")], str(tmp_path / "out2"),
                            options=BatchOptions(tile_above_pixels=10_000))
    assert tiled.ok, tiled.error
    np.testing.assert_array_equal(read_labels(str(tmp_path / "out2" / "big.ome.zarr")), auto.predict(image))


def test_export_refuses_autocontext(fitted):
    from pointseg.deploy.export import model_parts

    with pytest.raises(PointsegError, match="auto-context models .* cannot be exported"):
        model_parts(fitted[4])


def test_folds_leave_images_out_unless_an_image_holds_a_class_alone():
    """Leave-one-image-out when every image's classes are also elsewhere; k-fold over the points when one
    image holds the only points of a class (its held-out stage 1 could not know the class)."""
    from pointseg.autocontext import _folds

    groups = np.repeat([0, 1, 2], 6)
    shared = np.tile([0, 0, 0, 1, 1, 1], 3)
    folds = _folds(shared, groups)
    assert len(folds) == 3 and all(len(np.unique(groups[test])) == 1 for _, test in folds)
    alone = np.concatenate([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2]])
    folds = _folds(alone, groups)
    assert len(folds) == 3 and all(len(np.unique(groups[test])) > 1 for _, test in folds)
    assert all(np.isin(np.unique(alone[test]), alone[train]).all() for train, test in folds)


def test_cli_trains_the_thin_preset_and_predicts_with_it(tmp_path):
    """`pointseg train --preset thin` writes an auto-context model; `pointseg predict` applies its stage 2."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from modelkit import read_raw

    image, truth = thin_lines_image()
    Image.fromarray(image).save(tmp_path / "lines.png")
    points = [[float(x), float(y), CLASSES[int(c)]] for x, y, c in line_points(truth)]
    (tmp_path / "ann.json").write_text(json.dumps({
        "classes": [{"name": "ground", "color": "#000000"}, {"name": "line", "color": "#ff0000"}],
        "images": [{"path": "lines.png", "points": points}]}))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=600)

    result = run("train", tmp_path / "ann.json", "-o", tmp_path / "m.pointseg", "--preset", "thin",
                 "--backbone", "efficientnet_lite0")
    assert result.returncode == 0, result.stderr
    meta, tensors = read_raw(tmp_path / "m.pointseg")
    assert meta["head"] == "autocontext" and meta["format_version"] == 3 and "stage2_coef" in tensors
    result = run("predict", tmp_path / "m.pointseg", tmp_path / "lines.png", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "out" / "lines.png"))
    np.testing.assert_array_equal(written, Segmenter.load(tmp_path / "m.pointseg").predict(image))


def test_a_scribble_counts_as_one_action_for_the_fade(fitted, cache):
    """The fade counts what the user did: a scribble stroke is one action however many points it is
    rasterised into (placed along the structure, not corrective clicks), so a few clicks and one long stroke
    keep the full stage 2, where counting its rows (40 + 10) would have faded it to 0.4."""
    image, _, points, _, _ = fitted
    few = points[::12]                                            # 10 clicks
    stroke = [{"class": 0, "width": 3, "points": [[5, 10], [215, 10]]}]   # ~50 rasterised points on the ground
    default = Segmenter(**_make(cache), autocontext=True).fit([image], [few], scribbles=[stroke])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AC, "STAGE2_FULL_CLICKS", None)
        unfaded = Segmenter(**_make(cache), autocontext=True).fit([image], [few], scribbles=[stroke])
    np.testing.assert_allclose(default.head_.stage2.coef, unfaded.head_.stage2.coef, atol=1e-6)
    assert AC.stage2_weight(len(few) + 50, 1) < 0.5                # what the rows alone would have given

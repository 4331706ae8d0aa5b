"""The context stage in context tiles (what a slide above ~4,600 px a side gets, so that no task holds the
whole stride-16 map): labels equal to the single process up to float rounding, run in-process with the
tiling thresholds lowered so a small image is cut into a 5 x 5 grid of context tiles."""

from __future__ import annotations

import numpy as np
import zarr
from batchkit import TILE, mosaic

from pointseg import lazyio
from pointseg.batch import BatchOptions, predict_many, tiled
from pointseg.batch.tiled import read_labels
from pointseg.segmenter import Segmenter


def _slide(tmp_path):
    """A mosaic of 2 x 2 tiles and a bit, written as ``slide.zarr`` in ``tmp_path``; returns its pixels."""
    image = mosaic(2 * TILE + 40, 2 * TILE + 90)
    store = lazyio.zarr_store(str(tmp_path / "slide.zarr"), read_only=False)
    zarr.open_array(store=store, mode="w", shape=image.shape, chunks=(128, 128, 3), dtype="u1")[:] = image
    return image


def test_context_tiles_give_the_single_process_labels(model_path, tmp_path, monkeypatch):
    image = _slide(tmp_path)
    expected = Segmenter.load(model_path).predict(image)

    boxes = []
    original = tiled.context_tile
    monkeypatch.setattr(tiled, "CONTEXT_WHOLE_CELLS", 0)
    monkeypatch.setattr(tiled, "CONTEXT_CORE", 4)  # 4 stride-32 cells: 128-px context cores
    monkeypatch.setattr(tiled, "context_tile", lambda key, job, box, base: boxes.append(box) or
                        original(key, job, box, base))
    (result,) = predict_many(model_path, [str(tmp_path / "slide.zarr")], str(tmp_path / "out"),
                             options=BatchOptions(tile_above_pixels=100_000))
    assert result.ok, result.error
    assert len(boxes) == 25  # the 18 x 19 stride-32 grid of the padded image in 4-cell cores
    labels = read_labels(str(tmp_path / "out" / "slide.ome.zarr"))
    assert labels.shape == expected.shape
    assert np.mean(labels != expected) < 1e-4  # the 16-cell margin covers the stage's receptive field


def test_tile_stats_hold_no_view_of_the_tile():
    """A tile's result lives on its worker until the image's last tile is done: it must not keep the
    tile's labels and ids (9 MB at 1024 px) alive through numpy views."""
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10:20, 10:20] = 1
    stats = tiled._tile_stats(labels, 2, 0, 8)
    for side in ("top", "bottom", "left", "right"):
        for strip in stats[side]:
            assert strip.base is None and strip.nbytes <= 64 * 8
    assert stats["preview"].base is None and stats["preview"].shape == (8, 8)
    assert stats["regions"] == [0, 1] and stats["pixels"] == [64 * 64 - 100, 100]


def test_a_model_with_an_enlarged_context_predicts_tiles_as_the_whole_image(tmp_path, monkeypatch):
    """The default fits x4 on small training images (their context stage sees a 4x copy). Tiled, the
    context stage's input is the enlarged image's stride-16 map tile by tile (phase A'), from the native
    pixels each enlarged tile covers: the labels are the whole image's. With the context stage in context
    tiles too (as on a slide above ~1,150 px a side at x4), equal up to float rounding."""
    from synthetic import points_from_truth, two_texture_image

    image, truth = two_texture_image()
    seg = Segmenter(classes=["left", "right", "disc"], tile_size=TILE, cross_validate=False).fit(
        [image], [points_from_truth(truth, 5)])
    assert seg.context_upscale_ == 4
    seg.save(tmp_path / "m.pointseg")
    big = _slide(tmp_path)
    whole = Segmenter.load(tmp_path / "m.pointseg")
    expected = whole.predict(big)
    native = whole.clone(context_upscale=1)
    native.fit([image], [points_from_truth(truth, 5)])
    assert np.mean(native.predict(big) != expected) > 1e-3     # the enlarged context decides some pixels

    enlarged = []
    original = tiled.enlarged_tile
    monkeypatch.setattr(tiled, "enlarged_tile", lambda key, job, box, value_range, ready: enlarged.append(box) or
                        original(key, job, box, value_range, ready))
    (result,) = predict_many(tmp_path / "m.pointseg", [str(tmp_path / "slide.zarr")], str(tmp_path / "one"),
                             options=BatchOptions(tile_above_pixels=100_000))
    assert result.ok, result.error
    assert len(enlarged) == 9 * 10              # the padded 576 x 608 px extent x4 in 256-px cores
    labels = read_labels(str(tmp_path / "one" / "slide.ome.zarr"))
    assert labels.shape == expected.shape and np.array_equal(labels, expected)

    monkeypatch.setattr(tiled, "CONTEXT_WHOLE_CELLS", 0)
    monkeypatch.setattr(tiled, "CONTEXT_CORE", 8)   # 2 native stride-32 cells per context core at x4
    (result,) = predict_many(tmp_path / "m.pointseg", [str(tmp_path / "slide.zarr")], str(tmp_path / "tiles"),
                             options=BatchOptions(tile_above_pixels=100_000))
    assert result.ok, result.error
    labels = read_labels(str(tmp_path / "tiles" / "slide.ome.zarr"))
    assert np.mean(labels != expected) < 1e-4


def test_an_auto_context_model_predicts_tiles_as_the_whole_image(tmp_path):
    """The thin preset's two-stage head in tiles: the tile tasks keep both stages' linear scores (2K rows)
    and each label tile runs stage 2 on stage 1's probabilities around its box, so the labels are the whole
    image's (was refused)."""
    from synthetic import points_from_truth, two_texture_image

    image, truth = two_texture_image()
    other, other_truth = two_texture_image(seed=1)
    seg = Segmenter(classes=["left", "right", "disc"], tile_size=TILE, cross_validate=False, autocontext=True,
                    context_upscale=1).fit([image, other], [points_from_truth(truth, 5),
                                                             points_from_truth(other_truth, 5)])
    seg.save(tmp_path / "m.pointseg")
    big = _slide(tmp_path)
    whole = Segmenter.load(tmp_path / "m.pointseg")
    expected = whole.predict(big)
    stage1 = whole.clone(autocontext=False).fit([image, other], [points_from_truth(truth, 5),
                                                                 points_from_truth(other_truth, 5)])
    assert np.mean(stage1.predict(big) != expected) > 1e-3     # stage 2 changes some labels
    (result,) = predict_many(tmp_path / "m.pointseg", [str(tmp_path / "slide.zarr")], str(tmp_path / "out"),
                             options=BatchOptions(tile_above_pixels=100_000))
    assert result.ok, result.error
    labels = read_labels(str(tmp_path / "out" / "slide.ome.zarr"))
    assert np.array_equal(labels, expected)

import numpy as np
import pytest

from pointseg.features import FeatureCache, FeatureExtractor, FeatureMap, cpu_has_native_bf16
from pointseg.errors import PointsegError


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (47, 61, 3)).astype(np.float32)
    from scipy.ndimage import zoom

    return np.clip(zoom(base, (7, 7, 1), order=1)[:329, :427], 0, 255).astype(np.uint8)  # 329 x 427, odd sizes


@pytest.fixture(scope="module")
def large_image(image):
    return np.tile(image, (3, 2, 1))[:700, :740]  # padded to 704 x 768: beyond one EfficientNet tile


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite0_s32", "efficientnet_lite2"])
def test_tiled_features_equal_whole_image_features(large_image, backbone):
    whole = FeatureExtractor(backbone, precision="fp32", tile_size=4096).compute(large_image)
    tiled_ext = FeatureExtractor(backbone, precision="fp32", tile_size=192)
    assert len([None for _ in tiled_ext.iter_tiles(large_image[:40, :40])]) == 1
    tiled = tiled_ext.compute(large_image)
    assert tiled.shape == whole.shape == (tiled_ext.channels, 704 // 4, 768 // 4)
    assert len(list(tiled_ext.iter_tiles(large_image))) == 16  # really tiled
    np.testing.assert_allclose(tiled, whole, atol=2e-4, rtol=1e-4)


def test_resnet_tiled_equals_whole(image, shared_weights):
    whole = FeatureExtractor("resnet18", shared_weights, precision="fp32", tile_size=4096).compute(image)
    tiled_ext = FeatureExtractor("resnet18", shared_weights, precision="fp32", tile_size=64)
    assert len(list(tiled_ext.iter_tiles(image))) == 42
    tiled = tiled_ext.compute(image)
    np.testing.assert_allclose(tiled, whole, atol=2e-4, rtol=1e-4)


def test_cache_serves_repeat_requests_without_recomputing(image, monkeypatch):
    ext = FeatureExtractor("efficientnet_lite0", precision="fp32", cache=FeatureCache())
    first = ext.extract(image)
    monkeypatch.setattr(ext, "compute_parts", lambda rgb, progress=None: pytest.fail("features recomputed"))
    again = ext.extract(image.copy())
    assert again is first and ext.cache.hits == 1


def test_cache_is_bounded_and_evicts_least_recent():
    cache = FeatureCache(max_bytes=3 * 4 * 100)
    maps = [FeatureMap(np.zeros((1, 10, 10), np.float32), (40, 40), (40, 40), f"k{i}", "x") for i in range(4)]
    for m in maps[:3]:
        cache.put(m)
    cache.get("k0")  # k0 is now the most recent
    cache.put(maps[3])
    assert cache.get("k1") is None and cache.get("k0") is maps[0] and cache.get("k3") is maps[3]


def test_disk_cache_survives_a_new_process_and_ignores_torn_files(image, tmp_path):
    ext = FeatureExtractor("efficientnet_lite0", precision="fp32", cache=FeatureCache(disk_dir=tmp_path))
    fmap = ext.extract(image)
    fresh = FeatureExtractor("efficientnet_lite0", precision="fp32", cache=FeatureCache(disk_dir=tmp_path))
    loaded = fresh.cache.get(fmap.key)
    assert loaded is not None and loaded.image_size == fmap.image_size
    np.testing.assert_allclose(loaded.data, fmap.data, rtol=2e-3, atol=2e-3)  # stored as float16
    (tmp_path / f"{fmap.key}.npz").write_bytes(b"torn")
    assert FeatureCache(disk_dir=tmp_path).get(fmap.key) is None


def test_cache_key_depends_on_content_backbone_and_precision(image):
    a = FeatureExtractor("efficientnet_lite0", precision="fp32")
    b = FeatureExtractor("efficientnet_lite0", precision="bf16")
    c = FeatureExtractor("efficientnet_lite2", precision="fp32")
    other = image.copy()
    other[0, 0, 0] ^= 1
    keys = {a.key_for(image), b.key_for(image), c.key_for(image), a.key_for(other)}
    assert len(keys) == 4


def test_feature_map_from_another_extractor_is_refused(image):
    fmap = FeatureExtractor("efficientnet_lite0", precision="fp32").extract(image)
    with pytest.raises(PointsegError, match="computed by"):
        FeatureExtractor("efficientnet_lite2", precision="fp32").extract(fmap)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU has no native bf16")
def test_bf16_channels_last_stays_close_to_fp32(image):
    fp32 = FeatureExtractor("efficientnet_lite2", precision="fp32").compute(image)
    bf16 = FeatureExtractor("efficientnet_lite2", precision="bf16").compute(image)
    # stated tolerance: per-channel correlation > 0.99 and relative RMS error < 5 %
    rel = np.sqrt(np.mean((bf16 - fp32) ** 2)) / np.sqrt(np.mean(fp32**2))
    assert rel < 0.05
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(fp32, bf16) if a.std() > 1e-3]
    assert np.median(corr) > 0.99


def test_precision_auto_follows_the_cpu():
    ext = FeatureExtractor("efficientnet_lite0")
    assert ext.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(PointsegError, match="precision"):
        FeatureExtractor("efficientnet_lite0", precision="fp8")


def testupsample_window_equals_the_same_window_of_the_whole_upsampling():
    import torch

    from pointseg.features import upsample_window

    grid = torch.randn(3, 7, 9, generator=torch.Generator().manual_seed(1))
    whole = torch.nn.functional.interpolate(grid[None], scale_factor=8, mode="bilinear", align_corners=False)[0]
    for rows, cols in [((0, 56), (0, 72)), ((0, 16), (40, 72)), ((24, 56), (8, 32)), ((48, 56), (0, 8))]:
        window = upsample_window(grid, 8, rows, cols)
        assert torch.allclose(window, whole[:, rows[0]:rows[1], cols[0]:cols[1]], atol=1e-6)


def test_linear_scores_of_a_float16_window_equal_those_of_its_float32_copy():
    """A float16 map's window is copied out and converted chunk by chunk: the same numbers as scoring the
    float32 copy of the map, for windows inside, at the edges and across several chunks."""
    import torch

    from pointseg.features import linear_scores

    rng = np.random.default_rng(5)
    data = rng.normal(size=(24, 70, 90)).astype(np.float16)
    weights = torch.from_numpy(rng.normal(size=(3, 24)).astype(np.float32))
    for rows, cols in [((0, 70), (0, 90)), ((3, 68), (17, 41)), ((69, 70), (89, 90)), ((10, 11), (0, 90))]:
        got = linear_scores(weights, data, rows, cols, chunk_bytes=4 * 24 * 90 * 8)
        expected = linear_scores(weights, data.astype(np.float32), rows, cols, chunk_bytes=4 * 24 * 90 * 8)
        assert got.shape == (3, rows[1] - rows[0], cols[1] - cols[0])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        direct = np.einsum("kc,chw->khw", weights.numpy(), data[:, rows[0]:rows[1], cols[0]:cols[1]].astype(np.float32))
        np.testing.assert_allclose(got.numpy(), direct, rtol=1e-5, atol=1e-4)


def test_context_map_is_kept_coarse_yet_equals_the_fused_network_output(image, large_image):
    from pointseg.sampling import project, sample_bilinear, sample_points

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", cache=FeatureCache())
    fmap = ext.extract(image)
    hf, wf = fmap.grid_size
    assert fmap.data.shape[0] == 176 and fmap.context.shape == (192, hf // 8, wf // 8)
    whole = ext.compute(image)  # the network's own fusion: context upsampled inside forward()
    np.testing.assert_allclose(fmap.full_deep(), whole, atol=2e-4, rtol=1e-4)
    # points sample the upsampled context without building it
    xy = np.array([[0, 0], [426.9, 328.9], [13.2, 200.7], [300.5, 3.1], [211, 160]])
    uv = project(xy, fmap.extent, fmap.grid_size)
    np.testing.assert_allclose(sample_points(fmap, xy), sample_bilinear(whole, uv), atol=2e-4, rtol=1e-4)
    # a tiled image gives the same split
    tiled = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", tile_size=192)
    base, context = tiled.compute_parts(large_image)
    joined = FeatureMap(base, large_image.shape[:2], tiled.padded_size(large_image.shape[:2]), "k", tiled.id,
                        context=context)
    np.testing.assert_allclose(joined.full_deep(), tiled.compute(large_image), atol=2e-4, rtol=1e-4)


def test_disk_cache_keeps_the_context_map(image, tmp_path):
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", cache=FeatureCache(disk_dir=tmp_path))
    fmap = ext.extract(image)
    loaded = FeatureCache(disk_dir=tmp_path).get(fmap.key)
    np.testing.assert_allclose(loaded.context, fmap.context, rtol=2e-3, atol=2e-3)
    assert loaded.deep_channels == 368 and loaded.nbytes == fmap.nbytes


def test_fine_responses_per_tile_equal_the_whole_image_filter_bank(image, monkeypatch):
    import pointseg.features as features_module
    from pointseg.features import FineFeatures, tile_cache
    from pointseg.filters import low_level_features

    monkeypatch.setattr(features_module, "FINE_TILE", 64)  # 329 x 427: tiles cut the image 6 x 7 ways
    whole = low_level_features(image)
    fine = FineFeatures(image, "t", cache=tile_cache(10**9))
    for y0, y1, x0, x1 in [(0, 329, 0, 427), (0, 5, 0, 3), (60, 70, 120, 200), (300, 329, 400, 427)]:
        np.testing.assert_array_equal(fine.box(y0, y1, x0, x1), whole[:, y0:y1, x0:x1])
    rows, cols = np.array([0, 328, 64, 63, 200]), np.array([0, 426, 64, 63, 17])
    np.testing.assert_array_equal(fine.at(rows, cols), whole[:, rows, cols].T)
    cold = FineFeatures(image, "cold", cache=tile_cache(0))  # at most the last tile: points mostly from their windows
    np.testing.assert_array_equal(cold.at(rows, cols), whole[:, rows, cols].T)
    total, total_sq = fine.sums()
    flat = whole.reshape(whole.shape[0], -1).astype(np.float64)
    np.testing.assert_allclose(total, flat.sum(1), rtol=1e-9)
    np.testing.assert_allclose(total_sq, (flat * flat).sum(1), rtol=1e-9)


def test_fine_tile_cache_is_bounded_in_bytes(image, monkeypatch):
    import pointseg.features as features_module
    from pointseg.features import FineFeatures, tile_cache

    monkeypatch.setattr(features_module, "FINE_TILE", 64)
    lru = tile_cache(max_bytes=3 * 18 * 64 * 64 * 4)  # room for three full tiles (edge tiles are smaller)
    fine = FineFeatures(image, "bounded", cache=lru)
    fine.box(0, 329, 0, 427)  # 42 tiles computed
    assert lru.nbytes <= lru.max_bytes and 3 <= len(lru) < 42


def test_hybrid_map_keeps_pixels_not_fine_responses_and_scores_any_box(image):
    """The channel layout contract: score(w, b) of a box equals w · [upsampled deep | context | fine] + b."""
    import torch

    from pointseg.features import upsample
    from pointseg.filters import CHANNELS, low_level_features

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", cache=FeatureCache())
    fmap = ext.extract(image)
    assert fmap.fine is None and fmap.layout == {"deep": 176, "context": 192, "fine": CHANNELS}
    assert fmap.n_channels == ext.n_features and fmap.nbytes == fmap.data.nbytes + fmap.context.nbytes + image.nbytes
    fine = low_level_features(image)
    full = np.concatenate([upsample(torch.from_numpy(fmap.full_deep()), fmap.extent, fmap.image_size).numpy(), fine])
    # statistics streamed at extraction equal those of the whole arrays
    hf, wf = fmap.valid_grid_size
    deep = fmap.full_deep()[:, :hf, :wf].reshape(368, -1).astype(np.float64)
    total, total_sq, count = fmap.moments()
    np.testing.assert_allclose(total[:368] / count, deep.mean(1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(total[368:] / count, fine.reshape(CHANNELS, -1).mean(1, dtype=np.float64), rtol=1e-6)
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, fmap.n_channels)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    scores = fmap.score(w, b)
    for y0, y1, x0, x1 in [(0, 329, 0, 427), (0, 9, 0, 13), (317, 329, 401, 427), (100, 171, 33, 290)]:
        expected = np.einsum("kc,chw->khw", w, full[:, y0:y1, x0:x1]) + b[:, None, None]
        np.testing.assert_allclose(scores.logits(y0, y1, x0, x1).numpy(), expected, rtol=1e-4, atol=2e-3)
    # a feature vector sampled at a pixel centre gives that pixel's logit (formula (1) + the layout)
    xy = np.array([[0, 0], [426, 328], [200, 150], [7, 301]])  # pixel (x, y): sampled at its centre
    logit = fmap.sample(xy) @ w.T + b
    at = scores.logits(0, 329, 0, 427).numpy()[:, xy[:, 1].astype(int), xy[:, 0].astype(int)].T
    np.testing.assert_allclose(logit, at, rtol=1e-4, atol=2e-3)
    with pytest.raises(PointsegError, match="channels but the model expects"):
        fmap.score(w[:, :-1], b)


def test_disk_cache_keeps_pixels_and_statistics_of_hybrid_maps(image, tmp_path):
    ext = FeatureExtractor("efficientnet_lite0", precision="fp32", features="hybrid",
                           cache=FeatureCache(disk_dir=tmp_path))
    fmap = ext.extract(image)
    loaded = FeatureCache(disk_dir=tmp_path).get(fmap.key)
    np.testing.assert_array_equal(loaded.rgb, image)
    assert loaded._stats is not None
    np.testing.assert_array_equal(loaded.moments()[0], fmap.moments()[0])
    np.testing.assert_array_equal(loaded.fine_box(10, 20, 30, 40), fmap.fine_box(10, 20, 30, 40))


# ---------------------------------------------------------------- paged deep maps (issue 15: bounded memory)
def _vm_rss_kb() -> int:
    from pathlib import Path

    return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmRSS:"))


def _mapped_files_in(directory) -> list[str]:
    from pathlib import Path

    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(directory) in line]


def test_released_pages_leave_the_resident_set_but_keep_their_data(tmp_path):
    from pointseg.features import is_paged, paged_array, release_pages

    a = paged_array((16 << 20,), np.float32, tmp_path)  # 64 MB
    assert is_paged(a) and is_paged(a[10:20]) and not is_paged(np.zeros(3))
    assert list(tmp_path.iterdir()) == []  # the file has no name: nothing to clean up, even after a crash
    a[:] = 1.5
    before = _vm_rss_kb()
    release_pages(a)
    assert before - _vm_rss_kb() > 48 * 1024
    assert float(a[::4096].sum()) == 1.5 * (16 << 20) // 4096  # read back from the file
    mapped = _mapped_files_in(tmp_path)
    assert mapped and all("(deleted)" in line for line in mapped)
    del a
    import gc

    gc.collect()
    assert _mapped_files_in(tmp_path) == []  # the last view gone, the file's space is freed


def test_paged_array_falls_back_to_none_where_no_file_can_be_made(tmp_path):
    from pointseg.features import paged_array

    (tmp_path / "file").write_text("x")
    assert paged_array((10,), np.float16, tmp_path / "file" / "sub") is None


@pytest.fixture
def paged_above(monkeypatch, tmp_path):
    """Page deep maps of images above 100,000 pixels (the test image has 140,483), into ``tmp_path``."""
    import tempfile

    monkeypatch.setenv("POINTSEG_PAGED_DEEP_ABOVE_PIXELS", "100000")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_paged_deep_map_equals_the_in_memory_one_and_is_not_resident(image, paged_above, monkeypatch):
    import gc

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache(max_bytes=0))  # nothing kept by the cache: the caller's map
    paged = ext.extract(image)
    assert paged.paged and paged.data.dtype == np.float16 and ext.cache.spill_dir == paged_above
    levels = sum(paged.pooled(lv).nbytes for lv in range(1, paged.pyramid_levels + 1))  # paged too
    assert paged.resident_nbytes == paged.nbytes - paged.data.nbytes - levels and len(ext.cache) == 0
    assert list(paged_above.iterdir()) == [] and _mapped_files_in(paged_above)
    monkeypatch.delenv("POINTSEG_PAGED_DEEP_ABOVE_PIXELS")
    held = ext.extract(image)
    assert not held.paged and held.data.dtype == np.float32
    np.testing.assert_array_equal(paged.data, held.data.astype(np.float16))
    np.testing.assert_array_equal(paged.context, held.context)
    for a, b in zip(paged.moments()[:2], held.moments()[:2]):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-2)
    xy = np.array([[0, 0], [426.9, 328.9], [100.3, 200.7], [13, 301]])
    as_float16 = FeatureMap(held.data.astype(np.float16), held.image_size, held.extent, "f16", ext.id,
                            context=held.context, rgb=held.rgb)
    np.testing.assert_array_equal(paged.sample(xy), as_float16.sample(xy))
    np.testing.assert_array_equal(paged.sample(xy[::-1]), as_float16.sample(xy[::-1]))  # from the memo
    del paged
    gc.collect()
    assert _mapped_files_in(paged_above) == []


def test_paged_maps_go_to_and_come_back_from_the_disk_cache_paged(image, paged_above):
    disk = paged_above / "features"
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache(disk_dir=disk))
    first = ext.extract(image)
    assert first.paged and ext.cache.spill_dir == disk
    assert [p.suffix for p in disk.iterdir()] == [".npz"]  # the paged file itself has no name
    reopened = FeatureCache(disk_dir=disk).get(first.key)
    assert reopened.paged and reopened.data.dtype == np.float16
    np.testing.assert_array_equal(reopened.data, first.data)
    np.testing.assert_array_equal(reopened.rgb, first.rgb)


def test_context_tail_in_tiles_equals_one_pass(large_image, monkeypatch):
    """Large images run the stride-32 tail in tiles with a margin (bounded memory); the result is the one
    pass's within float32 precision, at the borders and the tile seams too."""
    import pointseg.features as features_module

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch", tile_size=4096)
    _, whole = ext.compute_parts(large_image)
    s16_rows = ext.padded_size(large_image.shape[:2])[0] // 16
    monkeypatch.setattr(features_module, "CONTEXT_TILE_CELLS", 8)
    monkeypatch.setattr(features_module, "CONTEXT_MARGIN_CELLS", 16)
    assert s16_rows > 8 + 2 * 16  # really tiled: 6 x 6 tiles
    _, tiled = ext.compute_parts(large_image)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=1e-4)
    monkeypatch.setattr(features_module, "CONTEXT_MARGIN_CELLS", 2)  # guards the test: too small a margin
    _, short = ext.compute_parts(large_image)
    assert not np.allclose(short, whole, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- pooled levels for zoomed-out previews
def test_paged_map_keeps_pooled_levels_that_are_block_means_and_paged(image, paged_above):
    import torch
    import torch.nn.functional as F

    from pointseg.features import PYRAMID_LEVELS, is_paged

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache())
    paged = ext.extract(image)  # extraction builds the levels of a paged map
    assert paged.paged and paged.pyramid_levels == PYRAMID_LEVELS == 2
    deep = torch.from_numpy(paged.data.astype(np.float32))
    for level in (1, 2):
        pooled = paged.pooled(level)
        assert is_paged(pooled) and pooled.dtype == np.float16
        assert pooled.shape == (176, paged.grid_size[0] >> level, paged.grid_size[1] >> level)
        expected = F.avg_pool2d(deep[None], 1 << level)[0].numpy()
        np.testing.assert_allclose(pooled.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    levels = sum(paged.pooled(lv).nbytes for lv in (1, 2))
    assert paged.nbytes == paged.data.nbytes + paged.context.nbytes + image.nbytes + levels
    assert paged.resident_nbytes == paged.context.nbytes + image.nbytes  # the levels are paged too
    assert list(paged_above.iterdir()) == []  # nameless files, like the map's
    with pytest.raises(PointsegError, match="2 pooled levels, not 3"):
        paged.pooled(3)
    # a map held in memory has none: it is small enough to preview cell by cell
    held = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                            cache=FeatureCache()).extract(image[:200, :200])
    assert not held.paged and held.pyramid_levels == 0 and held.pooled(0) is held.data


def test_scores_of_a_pooled_level_are_the_block_means_of_the_cell_scores(image, paged_above):
    """Pooling then scoring equals scoring then pooling, the context part included (upsampled to the level's
    grid it equals the mean of its upsampling to the stride-4 grid), for whole levels and windows of them."""
    import torch
    import torch.nn.functional as F

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache())
    fmap = ext.extract(image)
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(3, fmap.n_channels)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    scores = fmap.score(w, b)
    assert scores.levels == 2
    cells = scores.grid()
    # the context part alone, scored at stride 32 and upsampled to the stride-4 grid as the cells have it
    ctx = torch.from_numpy(np.einsum("kc,chw->khw", w[:, 176:368], fmap.context))
    ctx_cells = F.interpolate(ctx[None], size=fmap.grid_size, mode="bilinear", align_corners=False)[0]
    for level in (1, 2):
        h, wd = scores.level_size(level)
        # deep part from the float16 level itself: what is left is the context claim, at float32 precision
        deep = np.einsum("kc,chw->khw", w[:, :176], fmap.pooled(level).astype(np.float32)) + b[:, None, None]
        expected = deep + F.avg_pool2d(ctx_cells[None], 1 << level)[0].numpy()
        block_means = F.avg_pool2d(cells[None], 1 << level)[0].numpy()
        assert expected.shape[1:] == (h, wd)
        for rows, cols in [((0, h), (0, wd)), ((3, h - 2), (1, 7))]:
            got = scores.grid_window(rows, cols, level).numpy()
            window = (slice(None), slice(*rows), slice(*cols))
            np.testing.assert_allclose(got, expected[window], rtol=1e-4, atol=1e-3)
            # and the means of the cells' scores, within the float16 rounding of the pooled features
            np.testing.assert_allclose(got, block_means[window], atol=1e-3 * np.abs(block_means).max())
    with pytest.raises(PointsegError, match="pooled levels"):
        scores.grid_window((0, 1), (0, 1), level=3)


# ---------------------------------------------------------------- resident windows of large maps (clicks)
@pytest.fixture
def window_cache(monkeypatch):
    """A fresh :func:`resident_window_cache` of ``bytes`` (set by the test), restored afterwards."""
    import pointseg.features as features_module

    def make(nbytes: int):
        monkeypatch.setattr(features_module, "RESIDENT_WINDOW_BYTES", nbytes)
        features_module.resident_window_cache.cache_clear()
        return features_module.resident_window_cache()

    yield make
    features_module.resident_window_cache.cache_clear()


def test_resident_window_scores_equal_the_paged_maps_and_stay_bounded(image, paged_above, window_cache):
    """Clicks in one view read the viewport's cells from a held float16 copy: the same scores as reading the
    paged map, windows inside it served from it, a small window elsewhere not evicting it, one above the
    budget never held, and the bytes held within the budget."""
    import torch

    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache())
    fmap = ext.extract(image)
    assert fmap.paged and fmap.grid_size == (88, 112)
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(2, fmap.n_channels)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    view = ((10, 60), (20, 100))                       # 50 x 80 cells x 176 channels x 2 B = 1.4 MB
    windows = [view, ((12, 40), (20, 31)), ((59, 60), (99, 100)), ((70, 80), (0, 10)), ((0, 88), (0, 112)),
               ((30, 80), (40, 112))]
    window_cache(0)                                    # nothing held: every window read from the paged map
    scores = fmap.score(w, b)
    expected = [scores.grid_window(*win) for win in windows]
    cache = window_cache(2_000_000)
    got = [scores.grid_window(*view)]                  # the first time: noted, not held
    assert cache.get((fmap.key, 0)) == (*view, None)
    assert cache.nbytes == 0
    got = [scores.grid_window(*view)]                  # again (the next click): held
    (rows, cols, cells), = [cache.get((fmap.key, 0))]
    assert (rows, cols) == view and cells.shape == (176, 50, 80) and not np.shares_memory(cells, fmap.data)
    np.testing.assert_array_equal(cells, fmap.data[:, 10:60, 20:100])
    hits = cache.hits
    got += [scores.grid_window(*win) for win in windows[1:3]]  # inside the view: from the held copy
    assert cache.hits == hits + 2
    got.append(scores.grid_window(*windows[3]))        # a small window elsewhere: the view's stays
    assert cache.get((fmap.key, 0))[:2] == view
    got.append(scores.grid_window(*windows[4]))        # the whole map (3.5 MB): above the budget, not held
    assert cache.get((fmap.key, 0))[:2] == view and cache.nbytes == cells.nbytes <= 2_000_000
    got.append(scores.grid_window(*windows[5]))        # a new view about as large: noted instead of the old
    assert cache.get((fmap.key, 0)) == (*windows[5], None) and cache.nbytes == 0
    assert torch.equal(scores.grid_window(*windows[5]), got[-1])  # and held when asked for again
    assert cache.get((fmap.key, 0))[:2] == windows[5] and len(cache) == 1 and 0 < cache.nbytes <= 2_000_000
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


def test_resident_windows_belong_to_their_map(image, paged_above, window_cache):
    """Another image's map (another key), or the same image's features from another extractor, never reads
    a window held for the first: its scores are its own."""
    import torch

    cache = window_cache(4_000_000)
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", features="hybrid", engine="torch",
                           cache=FeatureCache())
    a = ext.extract(image)
    b = ext.extract(np.ascontiguousarray(image[::-1]))
    rng = np.random.default_rng(4)
    w, bias = rng.normal(size=(2, a.n_channels)).astype(np.float32), np.zeros(2, np.float32)
    view = ((5, 50), (5, 90))
    for _ in range(2):  # the second time each is held
        a.score(w, bias).grid_window(*view)
        got = b.score(w, bias).grid_window(*view)
    assert {k[0] for k in cache.keys()} == {a.key, b.key} and all(cache.get(k)[2] is not None for k in cache.keys())
    window_cache(0)
    assert torch.equal(got, b.score(w, bias).grid_window(*view))
    assert not torch.equal(got, a.score(w, bias).grid_window(*view))

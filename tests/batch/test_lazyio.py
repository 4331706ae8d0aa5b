"""Lazy readers: a region read lazily equals the same window of the eagerly read image (to_rgb8's rules)."""

import numpy as np
import pytest
import tifffile

from pointseg import lazyio
from pointseg.errors import ImageError
from pointseg.imageio import read_image, to_rgb8

zarr = pytest.importorskip("zarr")


def test_ome_zarr_full_resolution_level_with_chosen_channels(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    rng = np.random.default_rng(0)
    data = (rng.random((5, 300, 400)) * 4000 + 100).astype(np.uint16)
    root = zarr.group(store=parse_url(str(tmp_path / "img.ome.zarr"), mode="w").store, overwrite=True)
    write_image(image=data, group=root, axes="cyx", storage_options=dict(chunks=(1, 128, 128)))
    image = lazyio.open_lazy(str(tmp_path / "img.ome.zarr"), channels=[2, 0, 1])
    assert image.shape == (300, 400) and image.dtype == np.uint16
    whole = np.moveaxis(data[[2, 0, 1]], 0, -1)
    value_range = lazyio.combine_ranges(
        [lazyio.region_range(image.read(y, y + 100, 0, 400)) for y in range(0, 300, 100)], image.dtype)
    assert (image.read_rgb(37, 251, 90, 333, value_range) == to_rgb8(whole)[37:251, 90:333]).all()
    with pytest.raises(ImageError, match="--channels"):
        lazyio.open_lazy(str(tmp_path / "img.ome.zarr"))  # 5 channels: the user must choose
    with pytest.raises(ImageError, match="channels 0..4"):
        lazyio.open_lazy(str(tmp_path / "img.ome.zarr"), channels=[7])


def test_tiled_bigtiff_and_plain_zarr_regions(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (500, 700, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", rgb, tile=(128, 128), bigtiff=True)
    image = lazyio.open_lazy(str(tmp_path / "big.tif"))
    assert image.shape == (500, 700)
    assert (image.read_rgb(100, 333, 250, 699) == read_image(tmp_path / "big.tif")[100:333, 250:699]).all()
    image.close()
    grey = zarr.open_array(store=lazyio.zarr_store(str(tmp_path / "g.zarr"), read_only=False), mode="w",
                           shape=(200, 300), chunks=(64, 64), dtype="u1")
    grey[:] = rgb[:200, :300, 0]
    region = lazyio.open_lazy(f"file://{tmp_path / 'g.zarr'}").read_rgb(5, 50, 60, 70)
    assert region.shape == (45, 10, 3) and (region[..., 1] == rgb[5:50, 60:70, 0]).all()


def test_atomic_writes_to_urls(tmp_path):
    lazyio.write_bytes(f"file://{tmp_path / 'a' / 'x.bin'}", b"one")
    lazyio.write_bytes("memory://lazyio-test/x.bin", b"two")
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"one"
    assert lazyio.read_bytes("memory://lazyio-test/x.bin") == b"two"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.bin"]  # no temporary file left


def test_a_16_bit_ome_zarr_predicted_in_tiles_equals_the_whole_image(model_path, tmp_path):
    """The tiles rescale by the whole image's value range (a first pass over the tiles), as to_rgb8 does."""
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    from batchkit import mosaic
    from pointseg.batch import BatchOptions, predict_many
    from pointseg.batch.tiled import read_labels
    from pointseg.segmenter import Segmenter

    rgb = mosaic(300, 420)
    data = (np.moveaxis(rgb, -1, 0).astype(np.uint16) * 9 + 1000)[[2, 1, 0]]  # 16-bit, channels stored BGR
    root = zarr.group(store=parse_url(str(tmp_path / "s.ome.zarr"), mode="w").store, overwrite=True)
    write_image(image=data, group=root, axes="cyx", storage_options=dict(chunks=(1, 128, 128)))
    (result,) = predict_many(model_path, [str(tmp_path / "s.ome.zarr")], str(tmp_path / "out"),
                             options=BatchOptions(channels=(2, 1, 0), tile_above_pixels=50_000))
    assert result.ok, result.error
    expected = Segmenter.load(model_path).predict(to_rgb8(np.moveaxis(data[[2, 1, 0]], 0, -1)))
    assert (read_labels(str(tmp_path / "out" / "s.ome.zarr")) == expected).all()

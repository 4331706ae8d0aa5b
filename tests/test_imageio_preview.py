"""``read_preview``: a ≤ max_side image without decoding more than the file needs, equal to the exact path
(``downscale(read_image(path))``) except for the two approximations it documents (JPEG draft, TIFF level)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pointseg.errors import ImageError
from pointseg.imageio import downscale, downscaled_size, read_image, read_preview


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P"])
def test_png_preview_equals_the_exact_downscale(tmp_path, mode):
    img = Image.fromarray(_texture(700, 1300)).convert(mode)
    path = tmp_path / f"x_{mode}.png"
    img.save(path)
    got = read_preview(path, 512)
    want = downscale(read_image(path), 512)
    assert got.shape == want.shape == (276, 512, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_16_bit_png_is_rescaled_by_the_whole_image_range_as_the_exact_path(tmp_path):
    data = (_texture(600, 900)[..., 0].astype(np.uint16) * 7 + 1000)
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    np.testing.assert_array_equal(read_preview(path, 256), downscale(read_image(path), 256))


def test_small_image_is_returned_whole(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(_texture(100, 200)).save(path)
    np.testing.assert_array_equal(read_preview(path, 512), read_image(path))


def test_jpeg_preview_decodes_reduced_within_the_documented_approximation(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(_texture(1600, 2400)).save(path, quality=92)
    got = read_preview(path, 512)
    want = downscale(read_image(path), 512)
    assert got.shape == want.shape == (341, 512, 3)
    assert np.abs(got.astype(int) - want).mean() < 3.0           # ~1-2.5 grey levels (docstring)


def test_pyramidal_tiff_reads_its_reduced_level_not_the_full_page(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    full = _texture(2048, 3072)
    level = np.full((1024, 1536, 3), (10, 200, 30), np.uint8)   # unlike the full page: shows which was read
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, subifds=1, photometric="rgb", tile=(256, 256))
        tif.write(level, subfiletype=1, photometric="rgb", tile=(256, 256))
    got = read_preview(path, 512)
    assert got.shape == (*downscaled_size((2048, 3072), 512), 3)
    assert (got == (10, 200, 30)).all()
    # without a level small enough the full page is read, exactly
    np.testing.assert_array_equal(read_preview(path, 1600), downscale(read_image(path), 1600))


def test_corrupt_or_unsupported_file_gives_one_line_image_error(tmp_path):
    good = tmp_path / "cut.png"
    Image.fromarray(_texture(600, 900)).save(good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])                     # header intact, pixels cut off
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(ImageError) as err:
            read_preview(tmp_path / name, 256)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageError, match="not found"):
        read_preview(tmp_path / "missing.png")


def test_pixel_limit_is_checked_on_the_header_first(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.fromarray(_texture(400, 1200)).save(path)
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "100000")
    with pytest.raises(ImageError, match="above the limit"):
        read_preview(path, 256)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
def test_pillow_array_equals_numpys_conversion_without_its_copies(mode):
    from pointseg.imageio import pillow_array

    img = Image.fromarray(_texture(301, 4003, seed=5)).convert(mode)   # odd sizes: many encoder pieces
    got = pillow_array(img)
    want = np.asarray(img)
    assert got.shape == want.shape and got.dtype == want.dtype and got.flags.writeable
    np.testing.assert_array_equal(got, want)

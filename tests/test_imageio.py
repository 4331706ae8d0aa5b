import numpy as np
import pytest
import tifffile
from PIL import Image

from pointseg.errors import ImageError
from pointseg.imageio import list_images, load_image, read_image, to_rgb8


def test_grey_rgba_and_rgb_all_become_hxwx3_uint8(tmp_path):
    grey = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.dstack([grey] * 3)).save(tmp_path / "c.bmp")
    for name in ("g.png", "a.png", "c.bmp"):
        img = read_image(tmp_path / name)
        assert img.shape == (12, 10, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img[..., 1], grey)


def test_16bit_png_and_tiff_are_rescaled_by_their_range(tmp_path):
    data = np.linspace(1000, 3000, 20 * 16).reshape(20, 16).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "d.png")
    tifffile.imwrite(tmp_path / "d.tif", data)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([data] * 3, axis=-1))
    for name in ("d.png", "d.tif", "rgb.tif"):
        img = read_image(tmp_path / name)
        assert img.shape == (20, 16, 3)
        assert img.min() == 0 and img.max() == 255
        assert np.all(np.diff(img[..., 0].ravel().astype(int)) >= 0)  # monotonic ramp kept


def test_corrupt_and_missing_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ImageError, match="cannot read image broken.png") as err:
        read_image(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "5000")
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(tmp_path / "big.png")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(np.zeros((100, 100), np.uint8))


def test_float_arrays_and_bad_shapes():
    assert to_rgb8(np.full((4, 4), 0.5)).max() == 128
    with pytest.raises(ImageError, match="shape"):
        to_rgb8(np.zeros((4, 4, 5)))


def test_list_images_expands_folders_and_rejects_missing(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]
    with pytest.raises(ImageError, match="no such file"):
        list_images([tmp_path / "missing"])

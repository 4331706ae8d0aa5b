"""Thumbnails and display PNGs (``server.media``) follow the image file: keyed like the previews by content
hash plus the file's size and modification time, so an image edited in place is never shown stale, and the
stale copy is removed. Tested on a real ProjectStore and real files."""
from __future__ import annotations

import io
import os

import numpy as np
import tifffile
from PIL import Image

from pointseg.server.media import PreviewCache, display_file, register_folder, thumbnail
from pointseg.server.store import ProjectStore
from serverkit import two_region_image


def _store_with(tmp_path, name: str, write) -> tuple[ProjectStore, int]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    write(folder / name)
    store = ProjectStore(tmp_path / "project")
    register_folder(store, folder)
    [img] = store.list_images()
    return store, img["id"]


def _touch_later(path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # even within one clock tick


def _jpeg_pixels(path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        return np.asarray(im.convert("L"), dtype=np.float64)


def test_thumbnail_of_a_file_changed_in_place_is_made_anew_and_the_stale_one_removed(tmp_path):
    pixels = two_region_image(300, 400, seed=3)
    store, image_id = _store_with(tmp_path, "a.png", lambda p: Image.fromarray(pixels).save(p))
    first = thumbnail(store, image_id, PreviewCache(store)).path
    old = _jpeg_pixels(first)
    path = store.image_file(image_id)
    Image.fromarray(255 - pixels).save(path)
    _touch_later(path)
    second = thumbnail(store, image_id, PreviewCache(store)).path
    assert second != first and not os.path.exists(first)
    new = _jpeg_pixels(second)
    assert np.abs((255 - old) - new).mean() < 12         # the inverted image's thumbnail, not the old one
    assert thumbnail(store, image_id, PreviewCache(store)).path == second     # made once, then read


def test_display_png_of_a_16_bit_tiff_changed_in_place_shows_the_new_pixels(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1))
    store, image_id = _store_with(tmp_path, "a.tif", lambda p: tifffile.imwrite(p, ramp))
    first = display_file(store, image_id).path
    path = store.image_file(image_id)
    tifffile.imwrite(path, ramp[:, ::-1].copy())
    _touch_later(path)
    second = display_file(store, image_id).path
    assert second != first and not os.path.exists(first)
    with Image.open(second) as im:
        shown = np.asarray(im.convert("L"), dtype=np.int64)
    assert shown[:, 0].mean() > shown[:, -1].mean()        # the reversed ramp: bright on the left now

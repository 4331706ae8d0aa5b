"""Image previews (``server.media.PreviewCache``): made once per image, in the background after the project
opens or from an upload's pixels, keyed by content, written atomically; the first view reads them.

The cache itself is tested on a real ProjectStore; the first view through a real ``pointseg serve`` on
loopback.
"""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from pointseg.errors import ImageError
from pointseg.imageio import downscale
from pointseg.server.media import PREVIEW_SIDE, PreviewCache, register_folder
from pointseg.server.store import ProjectStore
from serverkit import left_right_points, setup_classes, two_region_image


def _store_with(tmp_path, images: dict[str, np.ndarray | bytes]) -> tuple[ProjectStore, dict[str, int]]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, data in images.items():
        if isinstance(data, bytes):
            (folder / name).write_bytes(data)
        else:
            Image.fromarray(data).save(folder / name)
    store = ProjectStore(tmp_path / "project")
    register_folder(store, folder)
    return store, {i["name"]: i["id"] for i in store.list_images()}


def _previews(store: ProjectStore) -> list:
    return sorted((store.dir / "thumbs").glob("*-preview-*"))


def _leftovers(store: ProjectStore) -> list:
    return [p for p in (store.dir / "thumbs").iterdir() if p.name.startswith(".")]


def test_preview_is_made_once_and_equals_the_exact_downscale(tmp_path):
    pixels = two_region_image(900, 1400, seed=4)
    store, ids = _store_with(tmp_path, {"a.png": pixels})
    cache = PreviewCache(store)
    got, cached = cache.get(ids["a.png"])
    assert not cached and got.shape == (329, 512, 3)
    np.testing.assert_array_equal(got, downscale(pixels, PREVIEW_SIDE))
    [file] = _previews(store)
    stamp = file.stat().st_mtime_ns
    again, cached = PreviewCache(store).get(ids["a.png"])       # another cache object: from the file
    assert cached and file.stat().st_mtime_ns == stamp and _previews(store) == [file]
    np.testing.assert_array_equal(again, got)
    assert not cache.make(ids["a.png"]) and not _leftovers(store)


def test_a_file_changed_in_place_gets_a_new_preview_not_the_stale_one(tmp_path):
    store, ids = _store_with(tmp_path, {"a.png": two_region_image(700, 1000, seed=1)})
    cache = PreviewCache(store)
    old, _ = cache.get(ids["a.png"])
    path = store.image_file(ids["a.png"])
    new_pixels = 255 - two_region_image(700, 1000, seed=1)
    Image.fromarray(new_pixels).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # even within one clock tick
    new, cached = cache.get(ids["a.png"])
    assert not cached
    np.testing.assert_array_equal(new, downscale(new_pixels, PREVIEW_SIDE))
    assert not np.array_equal(new, old)
    assert len(_previews(store)) == 1                          # the stale one is gone


def test_a_damaged_preview_file_is_made_again(tmp_path):
    store, ids = _store_with(tmp_path, {"a.png": two_region_image(700, 1000, seed=2)})
    cache = PreviewCache(store)
    good, _ = cache.get(ids["a.png"])
    [file] = _previews(store)
    file.write_bytes(file.read_bytes()[:100])
    again, cached = cache.get(ids["a.png"])
    assert not cached
    np.testing.assert_array_equal(again, good)


@pytest.mark.parametrize("damage", ["cut off", "not an image"])
def test_unreadable_image_gives_one_line_error_and_no_cache_file(tmp_path, damage):
    """An image file cut off (header intact) or replaced by something else after it was registered."""
    store, ids = _store_with(tmp_path, {"ok.png": two_region_image(), "bad.png": two_region_image(600, 900)})
    path = store.image_file(ids["bad.png"])
    path.write_bytes(path.read_bytes()[:4000] if damage == "cut off" else b"this is not an image")
    with pytest.raises(ImageError) as err:
        PreviewCache(store).get(ids["bad.png"])
    assert "bad.png" in str(err.value) and "\n" not in str(err.value)
    assert _previews(store) == [] and not _leftovers(store)


# ---------------------------------------------------------------------------------------------- the server
W, H = 600, 400
BIG_W, BIG_H = 2200, 1100


def _wait_previews(c, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = c.get("/api/status").json()
        if status["previews"]["pending"] == 0 or time.monotonic() > deadline:
            return status["previews"]
        time.sleep(0.1)


def _first_view(c, image_id: int, rev: int) -> tuple[np.ndarray, dict]:
    r = c.get(f"/api/images/{image_id}/first-view.png", params={"min_rev": rev})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content))), json.loads(r.headers["X-Timings"])


def test_first_view_reads_the_preview_made_in_the_background_and_equals_the_cold_one(make_server, tmp_path):
    """Opened project: the big image's preview is made in the background before anyone opens it; its first
    view reads it (``preview: cached``) and equals the first view without one (decoded from the file)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(two_region_image(H, W, seed=1)).save(folder / "a_train.png")
    Image.fromarray(np.tile(two_region_image(550, 1100, seed=2), (2, 2, 1))).save(folder / "b_big.png")
    (folder / "c_broken.png").write_bytes((folder / "a_train.png").read_bytes()[:3000])
    server = make_server(images=[folder])
    thumbs = tmp_path / "project" / "thumbs"
    with server.client() as c:
        ids = {i["name"]: i["id"] for i in c.get("/api/images").json()["images"]}
        cls = setup_classes(c)
        rev = c.post(f"/api/images/{ids['a_train.png']}/annotations",
                     json={"items": left_right_points(cls, W, H, n=6)}).json()["rev"]
        assert c.get(f"/api/images/{ids['a_train.png']}/overlay.png", params={"min_rev": rev}).status_code == 200
        assert _wait_previews(c)["pending"] == 0
        made = sorted(p.name for p in thumbs.glob("*-preview-*"))
        assert len(made) == 2                                   # the two readable images, not the broken one
        c.get(f"/api/images/{ids['b_big.png']}")
        warm, t_warm = _first_view(c, ids["b_big.png"], rev)
        assert t_warm["preview"] == "cached" and warm.shape == (256, 512)
        for p in thumbs.glob("*-preview-*"):
            p.unlink()
        cold, t_cold = _first_view(c, ids["b_big.png"], rev)
        assert t_cold["preview"] == "decoded"
        np.testing.assert_array_equal(warm, cold)               # PNG: the preview is the exact downscale
        assert len(list(thumbs.glob("*-preview-*"))) == 1        # and the cold view left it for next time
        # an unreadable image: the one-line error, and no broken preview file
        r = c.get(f"/api/images/{ids['c_broken.png']}/first-view.png", params={"min_rev": rev})
        assert r.status_code == 422 and "c_broken.png" in r.json()["detail"]
        assert "\n" not in r.json()["detail"] and str(tmp_path) not in r.json()["detail"]
        assert len(list(thumbs.glob("*-preview-*"))) == 1 and not list(thumbs.glob(".*"))


def test_upload_comes_with_its_preview_and_thumbnail_from_it(make_server, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(two_region_image(H, W, seed=1)).save(folder / "a_train.png")
    server = make_server(images=[folder])
    with server.client() as c:
        train = c.get("/api/images").json()["images"][0]["id"]
        cls = setup_classes(c)
        rev = c.post(f"/api/images/{train}/annotations",
                     json={"items": left_right_points(cls, W, H, n=6)}).json()["rev"]
        big = np.tile(two_region_image(550, 1100, seed=3), (2, 2, 1))
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, format="PNG", compress_level=1)
        assert _wait_previews(c)["pending"] == 0
        thumbs = tmp_path / "project" / "thumbs"
        before = set(thumbs.glob("*-preview-*"))
        up = c.post("/api/images", files=[("files", ("up.png", buf.getvalue(), "image/png"))])
        assert up.status_code == 201, up.text
        new_id = up.json()["added"][0]["id"]
        assert len(set(thumbs.glob("*-preview-*")) - before) == 1   # made by the upload itself
        small, timings = _first_view(c, new_id, rev)
        assert timings["preview"] == "cached" and small.shape == (256, 512)
        thumb = c.get(f"/api/images/{new_id}/thumb")
        assert thumb.status_code == 200
        t = np.asarray(Image.open(io.BytesIO(thumb.content)))
        assert t.shape[1] == 176 and abs(t.shape[0] - 88) <= 1
        want = np.asarray(Image.fromarray(big).resize((t.shape[1], t.shape[0]), Image.BOX))
        assert np.abs(t.astype(int) - want).mean() < 12          # the same picture (JPEG, resampled)

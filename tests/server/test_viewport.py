"""Viewport-first overlays and the progressive first view, through a real ``pointseg serve`` on loopback.

``overlay.png?box=x0,y0,x1,y1&scale=s`` predicts only the region the viewer shows (from the model's Scores,
kept per model version); ``first-view.png`` is a new image's coarse overlay before its features exist, and
``features`` events report the backbone's tiles done / total meanwhile.
"""
from __future__ import annotations

import io
import json
import math
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from serverkit import Server, left_right_points, setup_classes, two_region_image

W, H = 600, 400
#: small enough that the whole 600 x 400 image at scale 1 is refused as a region (the limit is tested)
REGION_LIMIT = 200_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A server with one 600 x 400 image, two classes and points on both halves; (server, image id, rev)."""
    root = tmp_path_factory.mktemp("viewport")
    (root / "imgs").mkdir()
    Image.fromarray(two_region_image(H, W, seed=3)).save(root / "imgs" / "wide.png")
    server = Server(root / "project", images=[root / "imgs"],
                    env={"POINTSEG_MAX_REGION_PIXELS": str(REGION_LIMIT)}).start()
    with server.client() as c:
        image_id = c.get("/api/images").json()["images"][0]["id"]
        cls = setup_classes(c)
        r = c.post(f"/api/images/{image_id}/annotations", json={"items": left_right_points(cls, W, H, n=6)})
        assert r.status_code == 201, r.text
        rev = r.json()["rev"]
    yield server, image_id, rev
    server.stop()


def _png(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _get(c, image_id, rev, path="overlay.png", **params) -> httpx.Response:
    return c.get(f"/api/images/{image_id}/{path}", params={"min_rev": rev, **params})


def test_region_at_scale_1_equals_the_crop_of_the_whole_overlay(trained):
    server, image_id, rev = trained
    with server.client() as c:
        whole = _png(_get(c, image_id, rev))
        proba = _png(_get(c, image_id, rev, view="proba", class_index=1))
        assert whole.shape == (H, W) and 0.2 < whole.mean() < 0.8        # both classes are there
        # inside, at every edge and across the class boundary (smoothing's halo comes from outside the box)
        for x0, y0, x1, y1 in [(0, 0, 256, 200), (250, 100, 420, 300), (344, 188, 600, 400), (299, 0, 301, 400),
                               (0, 399, 600, 400)]:
            r = _get(c, image_id, rev, box=f"{x0},{y0},{x1},{y1}")
            assert r.headers["X-Box"] == f"{x0},{y0},{x1},{y1}" and float(r.headers["X-Scale"]) == 1
            assert int(r.headers["X-Model-Rev"]) >= rev
            np.testing.assert_array_equal(_png(r), whole[y0:y1, x0:x1])
            crop = _png(_get(c, image_id, rev, view="proba", class_index=1, box=f"{x0},{y0},{x1},{y1}"))
            assert np.abs(crop.astype(int) - proba[y0:y1, x0:x1]).max() <= 1     # the same numbers, quantised
        timings = json.loads(r.headers["X-Timings"])
        assert timings["predict_ms"] >= 0 and "fit_ms" in timings


def test_region_below_scale_1_is_a_screen_sized_preview_consistent_with_the_whole(trained):
    server, image_id, rev = trained
    with server.client() as c:
        whole = _png(_get(c, image_id, rev))
        for (x0, y0, x1, y1), scale in [((0, 0, W, H), 0.25), ((100, 50, 507, 333), 0.5), ((0, 0, W, H), 0.37)]:
            r = _get(c, image_id, rev, box=f"{x0},{y0},{x1},{y1}", scale=scale)
            small = _png(r)
            oh, ow = math.ceil((y1 - y0) * scale), math.ceil((x1 - x0) * scale)
            assert small.shape == (oh, ow) and float(r.headers["X-Scale"]) == scale
            # each output pixel shows the image pixel under its centre
            ys = np.minimum(y1 - 1, y0 + np.floor((np.arange(oh) + 0.5) / scale)).astype(int)
            xs = np.minimum(x1 - 1, x0 + np.floor((np.arange(ow) + 0.5) / scale)).astype(int)
            agree = (small == whole[np.ix_(ys, xs)]).mean()
            assert agree > 0.93, (scale, agree)


@pytest.mark.parametrize("params, says", [
    ({"box": "0,0,0,10"}, "not a non-empty box"),
    ({"box": "10,10,5,20"}, "not a non-empty box"),
    ({"box": "0,0,601,10"}, "inside the 600 x 400 image"),
    ({"box": "0,0,10,401"}, "inside the 600 x 400 image"),
    ({"box": "1,2,3"}, "box"),
    ({"box": "-1,0,10,10"}, "box"),
    ({"box": "a,b,c,d"}, "box"),
    ({"box": "0,0,10,10", "scale": 0}, "scale"),
    ({"box": "0,0,10,10", "scale": 1.5}, "scale"),
    ({"box": "0,0,10,10", "scale": "nan"}, "scale"),
    ({"scale": 0.5}, "scale needs a box"),
    ({"box": f"0,0,{W},{H}"}, "POINTSEG_MAX_REGION_PIXELS"),
])
def test_bad_boxes_and_scales_get_422_with_one_line(trained, params, says):
    server, image_id, rev = trained
    with server.client() as c:
        r = _get(c, image_id, rev, **params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert says in detail and "\n" not in detail


def test_region_limit_counts_output_pixels_and_errors_keep_the_protocol(trained):
    server, image_id, rev = trained
    with server.client() as c:
        assert _png(_get(c, image_id, rev, box=f"0,0,{W},{H}", scale=0.5)).shape == (H // 2, W // 2)
        assert _get(c, 999, rev, box="0,0,10,10").status_code == 404
        ahead = _get(c, image_id, rev + 1000, box="0,0,10,10")
        assert ahead.status_code == 422 and "ahead" in ahead.json()["detail"]


def test_first_view_is_coarse_at_once_then_exact_with_real_progress(make_server, tmp_path):
    """A new 2200 x 1100 image (six backbone tiles): its coarse overlay comes before its features are done,
    ``features`` events count the tiles up to their total, then the exact overlay (and region) follow."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(two_region_image(H, W, seed=1)).save(folder / "train.png")
    server = make_server(images=[folder])
    events: list[tuple[float, dict]] = []
    listening = threading.Event()

    def listen():
        with httpx.Client(base_url=server.url, timeout=120) as ec, ec.stream("GET", "/api/events") as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append((time.perf_counter(), json.loads(line[6:])))
                    listening.set()
                    ev = events[-1][1]
                    if ev["type"] == "features" and ev.get("status") == "ready" and ev["image_id"] == new_id[0]:
                        return

    new_id: list[int | None] = [None]
    with server.client() as c:
        train_id = c.get("/api/images").json()["images"][0]["id"]
        cls = setup_classes(c)
        rev = c.post(f"/api/images/{train_id}/annotations",
                     json={"items": left_right_points(cls, W, H, n=6)}).json()["rev"]
        assert _get(c, train_id, rev).status_code == 200                    # trained
        big = Image.fromarray(np.tile(two_region_image(550, 1100, seed=2), (2, 2, 1)))
        buf = io.BytesIO()
        big.save(buf, format="PNG", compress_level=1)
        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert listening.wait(15)
        up = c.post("/api/images", files=[("files", ("big.png", buf.getvalue(), "image/png"))])
        assert up.status_code in (200, 201), up.text
        new_id[0] = image_id = up.json()["added"][0]["id"]
        assert c.get(f"/api/images/{image_id}").json()["features_ready"] is False   # features queued
        coarse = _get(c, image_id, rev, "first-view.png")
        t_coarse = time.perf_counter()
        small = _png(coarse)
        scale = float(coarse.headers["X-Scale"])
        assert small.shape == (256, 512) and scale == pytest.approx(512 / 2200)
        assert coarse.headers["X-Box"] == "0,0,2200,1100"
        full = _png(_get(c, image_id, rev))
        t_full = time.perf_counter()
        region = _png(_get(c, image_id, rev, box="1000,500,1300,700"))
        t.join(60)
    assert t_coarse < t_full
    assert full.shape == (1100, 2200)
    np.testing.assert_array_equal(region, full[500:700, 1000:1300])
    # the coarse view agrees with the exact one at most pixels (it saw a 4x smaller image)
    ys = np.minimum(1099, ((np.arange(256) + 0.5) / scale).astype(int))
    xs = np.minimum(2199, ((np.arange(512) + 0.5) / scale).astype(int))
    assert (small == full[np.ix_(ys, xs)]).mean() > 0.8
    mine = [(ts, e) for ts, e in events if e["type"] == "features" and e["image_id"] == image_id]
    running = [e for _, e in mine if e["status"] == "running"]
    assert running and running[-1]["done"] == running[-1]["total"] == 6
    assert [e["done"] for e in running] == list(range(1, 7))
    ready_at = next(ts for ts, e in mine if e["status"] == "ready")
    assert t_coarse < ready_at <= t_full                 # the coarse view came before the features were done

"""The first view of an image no larger than its preview (512 px) is its exact prediction, made from the
feature map the exact overlay reads (a coarse pass would cost as much as those features, ×4 context
included). Against a real server process on loopback."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from serverkit import left_right_points, setup_classes, write_images


def _png(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def test_first_view_of_a_small_image_is_the_exact_overlay(make_server, tmp_path):
    write_images(tmp_path / "imgs", 2)                       # 160 x 128: under the 258-px context reach too
    s = make_server(images=[tmp_path / "imgs"])
    with s.client() as c:
        cls = setup_classes(c)
        ids = [i["id"] for i in c.get("/api/images").json()["images"]]
        rev = c.post(f"/api/images/{ids[0]}/annotations", json={"items": left_right_points(cls)}).json()["rev"]
        first = c.get(f"/api/images/{ids[1]}/first-view.png", params={"min_rev": rev})
        assert first.headers["X-Scale"] == "1" and first.headers["X-Box"] == "0,0,160,128"
        timings = json.loads(first.headers["X-Timings"])
        assert "preview" not in timings and "features_wait_ms" in timings      # the exact path, not a coarse one
        exact = c.get(f"/api/images/{ids[1]}/overlay.png", params={"min_rev": rev})
        np.testing.assert_array_equal(_png(first), _png(exact))
        assert json.loads(exact.headers["X-Timings"])["predict_ms"] == timings["predict_ms"]   # one prediction

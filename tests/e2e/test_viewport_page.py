"""The page on a large image in Chromium: a click updates what is visible first, then tiles fill in the rest.

A 2600 x 1400 synthetic image (3.6 MP, above the page's one-request size): the page asks for the visible box at
screen resolution (``overlay.png?box=…&scale=…``), draws it, then fetches the 512-px full-resolution tiles
nearest the view first; a click while zoomed in asks for just the visible box at scale 1 before any tile.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

import serverkit
from pagekit import click_image, open_page, real_errors

pytestmark = pytest.mark.browser
W, H = 2600, 1400                                # 3.6 MP: above the page's one-request size (2 MP)
TILES = 6 * 3                                    # ceil(2600 / 512) x ceil(1400 / 512), edge tiles partial

# the overlay canvas (image coordinates) at image pixels
COMP_JS = """(pts) => { const O = S.overlay, g = O.comp.getContext('2d');
  return pts.map(([x, y]) => Array.from(g.getImageData(Math.floor(x * O.k), Math.floor(y * O.k), 1, 1).data)); }"""


def _rgb(hex_color: str) -> list[int]:
    return [int(hex_color[i: i + 2], 16) for i in (1, 3, 5)]


def _overlay_requests(log: list[str]) -> list[dict]:
    out = []
    for url in log:
        u = urlparse(url)
        if u.path.endswith("/overlay.png"):
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            out.append({"box": tuple(map(int, q["box"].split(","))) if "box" in q else None,
                        "scale": float(q.get("scale", 1)), "min_rev": int(q.get("min_rev", -1))})
    return out


def test_large_image_click_updates_the_view_first_and_tiles_fill_in(page, make_server, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(serverkit.two_region_image(H, W, seed=5)).save(folder / "large.png", compress_level=1)
    server = make_server(images=[folder])
    api = server.client()
    image_id = api.get("/api/images").json()["images"][0]["id"]
    cls = serverkit.setup_classes(api)
    rev = api.post(f"/api/images/{image_id}/annotations",
                   json={"items": serverkit.left_right_points(cls, W, H, n=6)}).json()["rev"]
    log: list[str] = []
    page.on("request", lambda req: log.append(req.url))
    open_page(page, server)
    page.locator("#opacity").fill("100")
    # fitted view: the whole image at screen resolution first, then every tile at full resolution
    page.wait_for_function("(rev) => +document.querySelector('#overlay-img').dataset.rev >= rev", arg=rev,
                           timeout=120000)
    page.wait_for_function(f"() => S.overlay.cov.full.size === {TILES}", timeout=120000)
    reqs = _overlay_requests(log)
    first = reqs[0]
    assert first["box"] == (0, 0, W, H) and first["scale"] < 1          # what the fitted view shows
    tiles = reqs[1:]
    assert len(tiles) == TILES and all(t["scale"] == 1 for t in tiles)
    assert all(t["box"][0] % 512 == 0 and t["box"][1] % 512 == 0 for t in tiles)
    centre = [abs((t["box"][0] + t["box"][2]) / 2 - W / 2) + abs((t["box"][1] + t["box"][3]) / 2 - H / 2)
              for t in tiles]
    assert centre[0] == min(centre) and centre[-1] == max(centre)        # nearest the view first
    bg, fg = _rgb(cls[0]["color"]), _rgb(cls[1]["color"])
    corners = page.evaluate(COMP_JS, [[40, 40], [W - 40, H - 40], [W * 0.2, H / 2], [W * 0.8, H / 2]])
    assert [c[:3] for c in corners] == [bg, fg, bg, fg] and all(c[3] == 255 for c in corners)

    # zoom to 100 % on the left half and click a point of the second class there
    page.evaluate("""([x, y]) => { const r = document.querySelector('#viewport').getBoundingClientRect();
        S.vt.s = 1; S.vt.tx = r.width / 2 - x; S.vt.ty = r.height / 2 - y; }""", [700, 1000])
    page.evaluate("() => window.dispatchEvent(new Event('resize'))")
    page.wait_for_timeout(300)
    assert len(_overlay_requests(log)) == 1 + TILES                      # all there already: nothing asked
    page.locator("#viewport").focus()
    page.keyboard.press("2")                                             # the second class
    n_before = len(log)
    click_image(page, 700, 1000)
    new_rev = page.wait_for_function("(rev) => { const r = +document.querySelector('#overlay-img').dataset.rev;"
                                     " return r > rev ? r : false; }", arg=rev, timeout=60000).json_value()
    after = _overlay_requests(log[n_before:])
    view = after[0]
    x0, y0, x1, y1 = view["box"]
    assert view["scale"] == 1 and view["min_rev"] == new_rev and x0 <= 700 < x1 and y0 <= 1000 < y1
    assert x1 - x0 < W and (x1 - x0) * (y1 - y0) < W * H / 2            # the visible box, not the image
    page.wait_for_function(f"() => S.overlay.cov.full.size === {TILES} && S.overlay.cov.rev === {new_rev}",
                           timeout=120000)
    after = _overlay_requests(log[n_before:])
    assert all(r["scale"] == 1 and r["min_rev"] == new_rev for r in after)
    assert len(after) <= 1 + TILES                                       # tiles the view covered are not asked again
    assert page.evaluate("() => S.lastLatency") > 0                     # click → visible overlay, measured
    api.close()
    assert real_errors(page) == []


def test_first_view_of_a_large_image_is_coarse_with_tiles_done_of_total(page, make_server, tmp_path):
    """Opening a new 3.6 MP image (six backbone tiles) before its features exist: a coarse overlay is drawn
    and the hint counts the backbone's tiles; then the exact overlay replaces it and the hint goes."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(serverkit.two_region_image(240, 320, seed=1)).save(folder / "a_small.png")
    big = tmp_path / "big.png"
    Image.fromarray(serverkit.two_region_image(H, W, seed=6)).save(big, compress_level=1)
    server = make_server(images=[folder])
    api = server.client()
    small_id = api.get("/api/images").json()["images"][0]["id"]
    cls = serverkit.setup_classes(api)
    rev = api.post(f"/api/images/{small_id}/annotations",
                   json={"items": serverkit.left_right_points(cls, 320, 240)}).json()["rev"]
    open_page(page, server)
    page.wait_for_function("(rev) => +document.querySelector('#overlay-img').dataset.rev >= rev", arg=rev,
                           timeout=60000)
    page.set_input_files("#upload-input", [str(big)])
    page.wait_for_selector("#image-list li >> nth=1")
    big_id = next(i["id"] for i in api.get("/api/images").json()["images"] if i["name"] == "big.png")
    page.click(f"#image-list li[data-id='{big_id}']")
    page.wait_for_function(f"() => S.current && S.current.id === {big_id}")
    if page.evaluate("() => S.featuresReady[S.currentId]"):
        pytest.skip("the server had this image's features before it was opened")
    page.wait_for_function("() => S.overlay && S.overlay.coarse === true", timeout=60000)
    assert page.evaluate("() => +document.querySelector('#overlay-img').dataset.rev") < 0   # not exact yet
    page.wait_for_function("() => / of 6 tiles|\\d \\/ 6 tiles/.test(document.querySelector('#hint-text').textContent)",
                           timeout=60000)
    assert "coarse preview shown" in page.inner_text("#hint-text")
    width = page.evaluate("() => parseFloat(document.querySelector('#hint-bar').style.width)")
    assert 0 < width <= 100
    page.wait_for_function("(rev) => +document.querySelector('#overlay-img').dataset.rev >= rev", arg=rev,
                           timeout=120000)
    assert page.evaluate("() => S.overlay.coarse") is False
    page.wait_for_function("() => document.querySelector('#hint').hidden", timeout=10000)
    api.close()
    assert real_errors(page) == []

"""Helpers for the page tests: open a project in the browser, click image pixels, read what is drawn."""
from __future__ import annotations

import serverkit

# pixels of the #view canvas (what the user sees: image, overlay) at viewport CSS positions
VIEW_PIXELS_JS = """(pts) => {
  const c = document.querySelector('#view');
  const g = c.getContext('2d');
  const k = window.devicePixelRatio || 1;
  return pts.map(([x, y]) => Array.from(g.getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data));
}"""
MARK_ALPHA_JS = """([x, y]) => {
  const c = document.querySelector('#marks');
  const k = window.devicePixelRatio || 1;
  return c.getContext('2d').getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data[3];
}"""


def screen_of(page, x: float, y: float) -> tuple[float, float]:
    """Viewport position (CSS px, relative to #viewport) of the centre of image pixel (x, y)."""
    vt = page.evaluate("() => S.vt")
    return (x + 0.5) * vt["s"] + vt["tx"], (y + 0.5) * vt["s"] + vt["ty"]


def click_image(page, x: float, y: float) -> None:
    box = page.locator("#viewport").bounding_box()
    sx, sy = screen_of(page, x, y)
    page.mouse.click(box["x"] + sx, box["y"] + sy)


def view_pixels(page, image_points) -> list[list[int]]:
    return page.evaluate(VIEW_PIXELS_JS, [list(screen_of(page, x, y)) for x, y in image_points])


def open_page(page, server, n_images: int = 1) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector(f"#image-list li >> nth={n_images - 1}")
    page.wait_for_function("() => S.current && document.querySelector('#base-img').naturalWidth > 0")


def wait_overlay(page, rev: int, view: str = "labels") -> None:
    page.wait_for_function(
        "([rev, view]) => { const o = document.querySelector('#overlay-img');"
        " return +o.dataset.rev >= rev && o.dataset.view === view && o.complete && o.naturalWidth > 0; }",
        arg=[rev, view], timeout=60000)
    page.wait_for_timeout(100)          # one animation frame: the canvas is drawn


def trained(api, image_id: int, w: int, h: int, names=("background", "stripes")) -> tuple[list[dict], int]:
    """Two classes and points left / right on one image, through the API; returns (classes, rev)."""
    cls = serverkit.setup_classes(api, names)
    r = api.post(f"/api/images/{image_id}/annotations", json={"items": serverkit.left_right_points(cls, w, h)})
    assert r.status_code == 201, r.text
    return cls, r.json()["rev"]


def real_errors(page) -> list[str]:
    # 409 "no model yet" and 404 answers are part of the protocol; the browser logs them as failed loads
    return [e for e in page.errors if "Failed to load resource" not in e]

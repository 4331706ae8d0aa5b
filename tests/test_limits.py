"""The limits table (pointseg.limits) and the decompression-bomb guard, end to end.

The bomb is a real PNG of about a kilobyte whose header declares 30000 x 30000 pixels: it must be refused
from the header alone, by the library, the CLI (tests/test_cli_errors.py) and the server's upload route.
"""
from __future__ import annotations

import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointseg import limits
from pointseg.errors import ImageError, PointsegError
from pointseg.imageio import load_image, read_image

README = Path(__file__).resolve().parents[1] / "README.md"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width x height`` RGB pixels, followed by a token of image data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _chunk(b"IEND", b""))


def test_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(30000, 30000))
    assert path.stat().st_size < 2000
    for reader in (read_image, load_image):
        with pytest.raises(ImageError) as info:
            reader(path)
        message = str(info.value)
        assert "30000x30000" in message or "900,000,000" in message
        assert "POINTSEG_MAX_PIXELS" in message and "tiled TIFF" in message and "\n" not in message


def test_default_pixel_limit_is_pillows_and_pillows_guard_stays_on(tmp_path, monkeypatch):
    pillow_default = 1024 * 1024 * 1024 // 4 // 3  # PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it
    assert limits.max_pixels() == 2 * pillow_default == 178_956_970
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS is not None  # reading never switches Pillow's own guard off
    # between our limit and twice it, Pillow only warns; we refuse
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "300")
    with pytest.raises(ImageError, match="30x20 = 600 pixels, above the limit of 300"):
        read_image(tmp_path / "small.png")
    # above twice it Pillow itself refuses, and the message is still ours
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="declares 600 pixels.*POINTSEG_MAX_PIXELS"):
        read_image(tmp_path / "small.png")


def test_raising_the_limit_lets_a_large_image_through(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(3000, 3000))
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match="POINTSEG_MAX_PIXELS"):
        read_image(path)
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "10000000")
    with pytest.raises(ImageError, match="cannot read image bomb.png"):  # decoded now: the data is truncated
        read_image(path)


def test_tiff_size_is_checked_before_decoding(tmp_path, monkeypatch):
    import tifffile

    tifffile.imwrite(tmp_path / "t.tif", np.zeros((50, 40), np.uint16))
    monkeypatch.setenv("POINTSEG_MAX_PIXELS", "1999")
    with pytest.raises(ImageError, match="40x50 = 2,000 pixels.*POINTSEG_MAX_PIXELS"):
        read_image(tmp_path / "t.tif")


def test_env_values_are_parsed_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("POINTSEG_MAX_UPLOAD_MB", "1.5")
    assert limits.max_upload_bytes() == int(1.5 * 1024 * 1024)
    for bad in ("many", "-1", "nan", "inf"):
        monkeypatch.setenv("POINTSEG_MAX_UPLOAD_MB", bad)
        with pytest.raises(PointsegError, match="POINTSEG_MAX_UPLOAD_MB=.* is not a non-negative number of MiB"):
            limits.max_upload_bytes()


def test_readme_lists_every_limit():
    text = README.read_text()
    assert limits.markdown_table() in text, "README's Limits table differs from pointseg.limits.markdown_table()"
    assert set(re.findall(r"POINTSEG_MAX_\w+|POINTSEG_FEATURE_CACHE_MB", limits.markdown_table())) == {
        limit.env for limit in limits.LIMITS}


def test_server_upload_of_a_bomb_is_refused_with_422(tmp_path):
    sys.path.append(str(Path(__file__).parent / "server"))
    from serverkit import Server

    server = Server(tmp_path / "project").start()
    try:
        with server.client() as client:
            r = client.post("/api/images", files=[("files", ("bomb.png", bomb_png(30000, 30000), "image/png"))])
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert "bomb.png" in detail and "POINTSEG_MAX_PIXELS" in detail and str(tmp_path) not in detail
            assert client.get("/api/images").json()["images"] == []
    finally:
        server.stop()


def test_the_server_takes_its_limits_from_the_same_table(tmp_path):
    """POINTSEG_MAX_SCRIBBLE_WIDTH, _POINTS_PER_REQUEST and _JSON_BODY_MB change what `pointseg serve` accepts."""
    sys.path.append(str(Path(__file__).parent / "server"))
    from serverkit import Server, setup_classes, write_images

    write_images(tmp_path / "imgs", 1)
    env = {"POINTSEG_MAX_SCRIBBLE_WIDTH": "10", "POINTSEG_MAX_POINTS_PER_REQUEST": "3",
           "POINTSEG_MAX_JSON_BODY_MB": "0.01"}
    server = Server(tmp_path / "project", images=[tmp_path / "imgs"], env=env).start()
    try:
        with server.client() as client:
            classes = setup_classes(client)
            image = client.get("/api/images").json()["images"][0]["id"]

            def scribble(width, n):
                return {"items": [{"kind": "scribble", "class_id": classes[0]["id"], "width": width,
                                   "points": [[5.0 + i, 5.0] for i in range(n)]}]}
            url = f"/api/images/{image}/annotations"
            assert client.post(url, json=scribble(8, 3)).status_code == 201
            assert client.post(url, json=scribble(12, 3)).status_code == 422   # wider than 10 px
            assert client.post(url, json=scribble(8, 4)).status_code == 422    # more than 3 points
            assert client.post(url, json={"items": [{"pad": "x" * 20_000}]}).status_code == 413  # > 10 KiB
    finally:
        server.stop()

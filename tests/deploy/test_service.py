"""`pointseg serve-model` as a real uvicorn process on the loopback."""
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")
pytest.importorskip("prometheus_client")

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env_extra=None):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "pointseg.cli", "serve-model", *args, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, port


def _wait(proc, url, headers=None, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(url + "/health", headers=headers, timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("service did not start")


@pytest.fixture(scope="module")
def service(exported):
    _, onnx_path, _ = exported
    proc, port = _start([str(onnx_path), "--engine", "onnxruntime", "--max-body-mb", "1", "--concurrency", "1",
                         "--queue", "1"])
    url = f"http://127.0.0.1:{port}"
    _wait(proc, url)
    yield url
    proc.terminate()
    proc.wait(10)


def _png(h=120, w=160) -> bytes:
    from pointseg.deploy.export import check_image

    buffer = io.BytesIO()
    Image.fromarray(check_image()[:h, :w]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_returns_decision_areas_regions_and_timings(service, exported):
    from pointseg.deploy.runtime import Runner

    r = httpx.post(service + "/predict", content=_png(), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    runner = Runner(exported[1], engine="onnxruntime")
    expected = runner.summary(runner.predict(_png()))
    assert body["summary"] == expected and body["status"] == expected["status"]
    assert sum(body["area"].values()) == 120 * 160
    assert set(body["region_count"]) == {"right", "disc"}
    for region in body["regions"]:
        x0, y0, x1, y1 = region["bbox"]
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120 and region["area"] <= (x1 - x0) * (y1 - y0)
    assert body["timings"]["graph_ms"] > 0 and body["timings"]["request_ms"] >= body["timings"]["graph_ms"]


def test_labels_png_and_batch(service):
    r = httpx.post(service + "/predict?labels=png", content=_png(), timeout=60)
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["labels_png"]))))
    assert labels.shape == (120, 160) and labels.max() <= 2
    files = [("images", ("a.png", _png(), "image/png")), ("images", ("b.png", _png(96, 64), "image/png"))]
    r = httpx.post(service + "/predict", files=files, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["image"] for x in results] == ["a.png", "b.png"] and results[1]["size"] == [96, 64]


def test_bad_image_and_oversized_body_are_4xx(service):
    r = httpx.post(service + "/predict", content=b"definitely not a PNG", timeout=30)
    assert r.status_code == 400 and "cannot read" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must be enforced while the body streams in
        for _ in range(40):
            yield b"\0" * 65536
    r = httpx.post(service + "/predict", content=chunks(), timeout=30)
    assert r.status_code == 413
    assert httpx.get(service + "/health").status_code == 200  # still serving


def test_model_health_and_metrics(service, exported):
    model = httpx.get(service + "/model").json()
    assert model["classes"] == ["left", "right", "disc"] and model["model_sha256"] == exported[2]["model_sha256"]
    httpx.post(service + "/predict", content=_png(), timeout=60)
    text = httpx.get(service + "/metrics").text
    assert "pointseg_predict_seconds_bucket" in text and "pointseg_images_total" in text
    assert "pointseg_ng_total" in text and 'pointseg_requests_total{code="200",endpoint="/predict"}' in text


def test_concurrency_is_bounded(service):
    big = _png(400, 600)
    codes = []

    def hit():
        codes.append(httpx.post(service + "/predict", content=big, timeout=120).status_code)
    threads = [threading.Thread(target=hit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one running + one waiting: the rest are told to come back, none fails otherwise
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes


def test_non_loopback_bind_requires_a_token(exported):
    _, onnx_path, _ = exported
    proc, port = _start([str(onnx_path), "--engine", "onnxruntime", "--host", "0.0.0.0", "--token", "s3cret"])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(proc, url)
        assert httpx.get(url + "/health").status_code == 401
        assert httpx.get(url + "/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/model?token=s3cret").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)

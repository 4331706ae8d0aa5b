"""Limits and failure paths of a real ``pointseg serve`` process (#14 items 3, 8, 9; #12 item 3)."""
from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serverkit import free_port, left_right_points, setup_classes, write_images


def _chunked_post(port: int, path: str, content_type: str, total: int, chunk: int = 1 << 20,
                  prefix: bytes = b"") -> tuple[int, bytes]:
    """POST ``total`` bytes with chunked transfer encoding (no Content-Length); stop sending as soon as a
    response arrives. Returns (bytes sent, the start of the response)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode())
    sent, block = 0, b"x" * chunk
    response = b""
    try:
        while sent < total:
            data = prefix if sent == 0 and prefix else block
            try:
                s.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
            if select.select([s], [], [], 0)[0]:
                break
        s.settimeout(20)
        try:
            response = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    return sent, response


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory):
    from serverkit import Server

    root = tmp_path_factory.mktemp("limits")
    write_images(root / "imgs", 1)
    s = Server(root / "project", images=[root / "imgs"], env={"POINTSEG_MAX_UPLOAD_MB": "1"}).start()
    yield s
    s.stop()


def test_a_chunked_upload_is_cut_off_at_the_limit(small_limits):
    boundary = "xyz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    sent, response = _chunked_post(small_limits.port, "/api/images", f"multipart/form-data; boundary={boundary}",
                                   200 << 20, prefix=head)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 40 << 20            # stopped long before 200 MiB (limit: 8 files x 1 MiB + 1 MiB)


def test_a_chunked_json_body_is_cut_off_small(small_limits):
    sent, response = _chunked_post(small_limits.port, "/api/classes", "application/json", 300 << 20,
                                   prefix=b'{"name": "')
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 60 << 20
    with small_limits.client() as c:                  # and the server carries on
        assert c.get("/api/status").status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading(small_limits):
    s = socket.create_connection(("127.0.0.1", small_limits.port), timeout=10)
    s.sendall(f"POST /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {1 << 30}\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 413")
    s.close()


def test_outputs_respect_the_umask(small_limits):
    """Predictions and exports are 0644 under umask 022, not mkstemp's 0600 (#12 item 3)."""
    with small_limits.client() as c:
        cls = setup_classes(c, ("bg", "fg"))
        img = c.get("/api/images").json()["images"][0]
        c.post(f"/api/images/{img['id']}/annotations", json={"items": left_right_points(cls)})
        assert c.post("/api/predict-all").status_code == 202
        deadline = time.monotonic() + 120
        while c.get("/api/predict-all").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/api/export/annotations.json").status_code == 200
        assert c.get("/api/export/summary.csv").status_code == 200
    project = small_limits.project
    files = [project / "predictions" / f"{img['id']}.png", project / "export" / "annotations.json",
             project / "export" / "summary.csv"]
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o644, (f.name, oct(f.stat().st_mode))


def test_an_unexpected_error_keeps_the_connection(tmp_path):
    """A 500 is one JSON line and the keep-alive connection stays usable (it was reset before)."""
    import uvicorn

    from pointseg.server.app import Settings, create_app
    from pointseg.server.deps import get_store

    app = create_app(Settings(project_dir=tmp_path / "p"))

    class Broken:
        def list_classes(self):
            raise RuntimeError("boom at /home/someone/secret/project.sqlite")

        def rev(self):
            return 0

    app.dependency_overrides[get_store] = lambda: Broken()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                                           lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = f"GET /api/classes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        for _ in range(2):                                   # the same connection, twice
            s.sendall(request)
            head, body = _read_response(s)
            assert head.startswith(b"HTTP/1.1 500"), head
            detail = json.loads(body)["detail"]
            assert "boom" in detail and "/home/" not in detail and "\n" not in detail
        s.close()
    finally:
        server.should_exit = True
        t.join(10)


def _read_response(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(4096)
        assert part, "connection closed"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        part = s.recv(4096)
        assert part, "connection closed"
        body += part
    return head, body


def _serve(args, tmp_path, timeout=60):
    return subprocess.run([sys.executable, "-c", "from pointseg.cli import main; main()", "serve", *args],
                          capture_output=True, text=True, timeout=timeout)


def _pinned(project) -> str | None:
    import sqlite3

    if not (project / "project.sqlite").exists():
        return None
    db = sqlite3.connect(f"file:{project / 'project.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='backbone'").fetchone()
        return row[0] if row else None
    finally:
        db.close()


def test_an_unknown_backbone_or_a_failed_start_pins_nothing(tmp_path):
    project = tmp_path / "project"
    out = _serve([str(project), "--backbone", "resnet999", "--port", str(free_port())], tmp_path)
    assert out.returncode == 2 and "unknown backbone" in out.stderr and "Traceback" not in out.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        out = _serve([str(project), "--backbone", "resnet18", "--port", str(busy.getsockname()[1])], tmp_path)
    finally:
        busy.close()
    assert out.returncode == 2 and "cannot listen" in out.stderr
    assert _pinned(project) is None                      # a later start may still choose any backbone


def test_the_backbone_is_pinned_once_the_server_runs(make_server, tmp_path):
    s = make_server(tmp_path / "project")
    with httpx.Client(base_url=s.url, timeout=10) as c:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and c.get("/api/project").json()["backbone"] is None:
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while _pinned(tmp_path / "project") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pinned(tmp_path / "project") is not None

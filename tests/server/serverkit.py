"""Helpers for the server and browser tests: a real ``pointseg serve`` process, small test images.

The server runs as a separate process (the console entry point, exactly as a user starts it) so the tests
exercise uvicorn, the SQLite file and the worker threads for real, and can ``kill -9`` it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_region_image(h: int = 128, w: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth grey left half, bright red stripes on the right half: class 0 left, class 1 right."""
    rng = np.random.default_rng(seed)
    xx = np.arange(w)[None, :].repeat(h, 0)
    img = np.empty((h, w, 3), dtype=np.float32)
    img[...] = 120 + rng.normal(0, 3, (h, w, 1))
    right = xx >= w // 2
    stripes = 70 * (np.sin(xx / 1.5) > 0)
    img[right] = np.stack([185 + stripes, 60 + 0 * stripes, 50 + 0 * stripes], -1)[right]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int = 2, h: int = 128, w: int = 160) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"part_{i:02d}.png"
        Image.fromarray(two_region_image(h, w, seed=i)).save(p)
        out.append(p)
    return out


def ranking_folder(root: Path) -> Path:
    """For "next image to annotate": part_00 (to annotate), part_01 the same scene with other noise (a model
    trained on part_00 is sure of it), part_02 the scene at half contrast (where refits of the model on its
    clicks resampled disagree most: the top of the committee ranking), part_03 colour noise unlike anything
    annotated (the one model is least sure of it: the top of the uncertainty ranking; a kind of image of its
    own: the top of the default, committee_coverage ranking, then part_02)."""
    root.mkdir(parents=True)
    Image.fromarray(two_region_image(seed=0)).save(root / "part_00.png")
    Image.fromarray(two_region_image(seed=1)).save(root / "part_01.png")
    faint = (0.5 * two_region_image(seed=2).astype(np.float32) + 64).astype(np.uint8)
    Image.fromarray(faint).save(root / "part_02.png")
    noise = np.random.default_rng(3).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "part_03.png")
    return root


def wait_ranking_complete(c: httpx.Client, timeout: float = 120.0, **params) -> dict:
    """Ask for the ranking until every unannotated image is scored by the current model (features of
    never-viewed images are computed while nobody clicks)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/api/images/ranking", params={"wait": 5, **params})
        assert r.status_code == 200, r.text
        if r.json()["complete"] or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.5)


class Server:
    """``pointseg serve PROJECT`` in a subprocess; ``url``, ``client``, ``kill9()``, ``stop()``."""

    def __init__(self, project: Path, *, images: list[Path] = (), host: str = "127.0.0.1",
                 token: str | None = None, env: dict | None = None):
        self.project, self.images, self.host, self.token = project, list(images), host, token
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "Server":
        self.port = free_port()
        cmd = [sys.executable, "-c", "from pointseg.cli import main; main()", "serve", str(self.project),
               "--host", self.host, "--port", str(self.port)]
        for folder in self.images:
            cmd += ["--images", str(folder)]
        if self.token:
            cmd += ["--token", self.token]
        self.log = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        headers = {"X-Pointseg-Token": self.token} if self.token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited early:\n" + "".join(self.log))
            try:
                if httpx.get(self.url + "/api/project", headers=headers, timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _pump(self, proc) -> None:
        for line in proc.stdout:
            self.log.append(line)

    def client(self, **kw) -> httpx.Client:
        headers = {"X-Pointseg-Token": self.token} if self.token else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers, **kw)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def setup_classes(c: httpx.Client, names=("background", "stripes")) -> list[dict]:
    out = []
    for n in names:
        r = c.post("/api/classes", json={"name": n})
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def left_right_points(cls: list[dict], w: int = 160, h: int = 128, n: int = 4) -> list[dict]:
    """``n`` points of class 0 on the left half and ``n`` of class 1 on the right half."""
    ys = np.linspace(10, h - 10, n)
    items = [{"kind": "point", "class_id": cls[0]["id"], "x": float(w * 0.2), "y": float(y)} for y in ys]
    items += [{"kind": "point", "class_id": cls[1]["id"], "x": float(w * 0.8), "y": float(y)} for y in ys]
    return items


def servers_started_in(tmp_path: Path):
    """Generator behind the ``make_server`` fixtures: a factory of started servers, all stopped at the end."""
    started: list[Server] = []

    def make(project: Path | None = None, **kw) -> Server:
        s = Server(project or tmp_path / "project", **kw)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()

"""Click → updated overlay latency of ``pointseg serve``, measured through its HTTP API.

    python bench/bench_server_latency.py [--images 5] [--points 300] [--clicks 60] [--size 1000]

A real server process is started on a loopback port with a fresh project of ``--images`` images of
``--size`` x ``--size`` pixels (1 MP by default; real textures from ../shared when present). Two classes and
``--points`` points spread over all images are added and every image is viewed once (its features are
computed in the background, as in the app). Then each measured "click" is what the page does:

    POST /api/images/{id}/annotations  (one point, committed to SQLite)  →  rev
    GET  /api/images/{id}/overlay.png?min_rev=rev                         →  palette PNG of the new labels

timed on the client from before the POST until the PNG has arrived, i.e. retraining on all points of all
images + predicting the 1 MP image + encoding + both HTTP round trips. Clicks are paced like a user
(``--pace`` seconds apart), come after pauses long enough for the server to start its cross-validation
(``--slow-pace``), and are sent back to back. In the same run, for comparison:

* the first view of a new, never seen image (its features are computed on demand);
* the baseline without pointseg's feature reuse: the same fit + predict through the library when every
  call re-runs the network (a Segmenter whose feature cache cannot hold a map), as a click would cost if
  features were not kept;
* the overlay's size as a palette PNG versus the label map as a JSON array.

Writes bench/results/server_latency.md (Markdown for BENCHMARKS.md) and server_latency.json.

Large images (``--size 4000x3000,8165x6124``: any size given as WxH above 4 MP) run another protocol, one
fresh server per tree and size (``--baseline /path/to/other/src`` first, e.g. ``git worktree add /tmp/base
16c6b8c`` → ``/tmp/base/src``; ``--baseline-sizes`` limits which sizes it runs, the old server needs ~9 GB at
50 MP): a model trained on a 1 MP image meets the large image — its first view: first pixels
(``first-view.png``, the coarse overlay), the visible ``--viewport`` exact, the whole image at full
resolution as the page fetches it (512-px tiles one after another) — then ``--points`` points on it and
``--large-clicks`` paced clicks inside the viewport, each timed until the visible overlay
(``overlay.png?box=…&scale=1``) has arrived, then clicks zoomed out (the whole image at the viewport's width).
A tree without regions (the baseline) answers every one of these with its whole overlay (no ``X-Box``
header): that is what its page waited for. Peak resident memory of the server process from /proc (VmHWM).
Writes bench/results/server_latency_large.md / .json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, header, md_table, save_md, test_image  # noqa: E402


def stop_server(proc, timeout: float = 30) -> None:
    """Ctrl+C the server as a user would, and kill it if it does not exit in ``timeout`` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_size(text: str) -> tuple[int, int]:
    """``1000`` (square) or ``4000x3000`` (width x height) → (width, height)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base = test_image(size, size + 97 * n)
    out = []
    for k in range(n):
        img = np.ascontiguousarray(base[:, 97 * k: 97 * k + size])
        if k % 2:
            img = img[::-1]
        p = folder / f"img_{k:02d}.png"
        Image.fromarray(img).save(p, compress_level=1)
        out.append(p)
    return out


def start_server(project: Path, images: Path, backbone: str | None,
                 src: str | None = None) -> tuple[subprocess.Popen, str]:
    """``pointseg serve`` in a fresh process; ``src``: run another tree's package (a baseline)."""
    port = free_port()
    cmd = [sys.executable, "-c", "from pointseg.cli import main; main()", "serve", str(project),
           "--images", str(images), "--port", str(port)]
    if backbone:
        cmd += ["--backbone", backbone]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    import httpx

    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/api/project", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        time.sleep(0.1)
    raise SystemExit("server did not start")


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def click_series(c, ids, cls, n, pace, rng, size) -> tuple[list[float], list[dict]]:
    lat, timings = [], []
    for i in range(n):
        image_id = ids[(i // 10) % len(ids)]            # stay on an image for ten clicks, then move on
        k = i % 2
        item = {"class_id": cls[k]["id"], "x": float(rng.uniform(0, size / 2) + k * size / 2 - 1),
                "y": float(rng.uniform(0, size - 1))}
        t0 = time.perf_counter()
        r = c.post(f"/api/images/{image_id}/annotations", json={"items": [item]})
        r.raise_for_status()
        rev = r.json()["rev"]
        o = c.get(f"/api/images/{image_id}/overlay.png", params={"min_rev": rev})
        o.raise_for_status()
        lat.append((time.perf_counter() - t0) * 1000)
        timings.append(json.loads(o.headers["X-Timings"]))
        if pace:
            time.sleep(pace)
    return lat, timings


def main() -> None:
    args = parse_args()
    sizes = [parse_size(t) for t in args.size.split(",")]
    if any(w * h > LARGE_FROM for w, h in sizes) or args.baseline:
        return large_main(args, sizes)
    args.size = sizes[0][0]
    small_main(args)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--ok-images", type=int, default=0,
                    help="further images marked OK (defect-free: every pixel background, hard negatives mined "
                         "on each refit) beside the annotated ones")
    ap.add_argument("--clicks", type=int, default=60)
    ap.add_argument("--burst", type=int, default=20, help="clicks sent back to back")
    ap.add_argument("--size", default="1000",
                    help="image side, or WxH; sizes above 4 MP (comma-separated) run the large-image protocol")
    ap.add_argument("--pace", type=float, default=0.5, help="seconds between paced clicks")
    ap.add_argument("--slow-pace", type=float, default=1.6,
                    help="seconds between the clicks of a user who pauses (the server validates meanwhile)")
    ap.add_argument("--slow-clicks", type=int, default=15)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--baseline", help="another tree's src/ to run first (large-image protocol)")
    ap.add_argument("--baseline-sizes", default="4000x3000", help="sizes the baseline runs at")
    ap.add_argument("--viewport", default="1600x1000", help="the visible box of the large-image clicks (WxH)")
    ap.add_argument("--large-clicks", type=int, default=20, help="paced clicks per large image")
    ap.add_argument("--zoomed-out-clicks", type=int, default=8)
    return ap.parse_args()


def small_main(args) -> None:
    import httpx

    rng = np.random.default_rng(0)
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="pointseg-bench-"))
    files = make_images(tmp / "imgs", args.images + args.ok_images + 1, args.size)
    fresh = files.pop()                                   # kept out of the project until the cold test
    (tmp / "cold").mkdir()
    fresh = fresh.rename(tmp / "cold" / fresh.name)
    proc, url = start_server(tmp / "project", tmp / "imgs", args.backbone)
    result: dict = {"args": vars(args)}
    try:
        with httpx.Client(base_url=url, timeout=300) as c:
            method = c.get("/api/project").json()["method"]
            ids = [i["id"] for i in c.get("/api/images").json()["images"] if i["name"] != fresh.name]
            ids, ok_ids = ids[:args.images], ids[args.images:]
            cls = [c.post("/api/classes", json={"name": n}).json() for n in ("left", "right")]
            for image_id in ok_ids:                       # marked OK: no clicks, all background
                rev = c.put(f"/api/images/{image_id}/ok", json={"ok": True}).json()["rev"]
            per_image = args.points // len(ids)
            for image_id in ids:
                items = []
                for j in range(per_image):
                    k = j % 2
                    items.append({"class_id": cls[k]["id"],
                                  "x": float(rng.uniform(0, args.size / 2) + k * args.size / 2 - 1),
                                  "y": float(rng.uniform(0, args.size - 1))})
                rev = c.post(f"/api/images/{image_id}/annotations", json={"items": items}).json()["rev"]
            t0 = time.perf_counter()
            for image_id in ids + ok_ids:                 # view every image once: features in background
                c.get(f"/api/images/{image_id}")
            for image_id in ids + ok_ids:
                c.get(f"/api/images/{image_id}/overlay.png", params={"min_rev": rev}).raise_for_status()
            result["setup_seconds"] = time.perf_counter() - t0
            time.sleep(1.0)

            paced, paced_t = click_series(c, ids, cls, args.clicks, args.pace, rng, args.size)
            time.sleep(1.0)
            slow, slow_t = click_series(c, ids, cls, args.slow_clicks, args.slow_pace, rng, args.size)
            time.sleep(1.0)
            burst, burst_t = click_series(c, ids, cls, args.burst, 0.0, rng, args.size)
            time.sleep(1.0)
            undo = []
            for _ in range(10):
                t0 = time.perf_counter()
                rev = c.post(f"/api/images/{ids[0]}/undo").json()["rev"]
                c.get(f"/api/images/{ids[0]}/overlay.png", params={"min_rev": rev}).raise_for_status()
                undo.append((time.perf_counter() - t0) * 1000)
                time.sleep(args.pace)
            report = c.get("/api/model").json()["report"]

            # the first view of a new image: upload it, open it, wait for its overlay
            t0 = time.perf_counter()
            with open(fresh, "rb") as fh:
                up = c.post("/api/images", files=[("files", (fresh.name, fh.read(), "image/png"))])
            new_id = up.json()["added"][0]["id"]
            t1 = time.perf_counter()
            c.get(f"/api/images/{new_id}")
            o = c.get(f"/api/images/{new_id}/overlay.png")
            o.raise_for_status()
            cold = {"upload_ms": (t1 - t0) * 1000, "view_to_overlay_ms": (time.perf_counter() - t1) * 1000,
                    **json.loads(o.headers["X-Timings"])}

            labels = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
                __import__("io").BytesIO(o.content)))
            png_bytes = len(o.content)
            json_bytes = len(json.dumps(labels.tolist(), separators=(",", ":")))
    finally:
        stop_server(proc)

    # baseline: the same training set through the library, re-running the network on every call
    from pointseg import FeatureCache, Segmenter
    from pointseg.imageio import read_image

    arrays = [read_image(p) for p in sorted((tmp / "imgs").glob("*.png"))]
    pts = []
    for _ in arrays:
        n = report["n_points"] // len(arrays)
        k = np.arange(n) % 2
        pts.append(np.column_stack([rng.uniform(0, args.size / 2, n) + k * args.size / 2 - 1,
                                    rng.uniform(0, args.size - 1, n), k]))
    kwargs = {"backbone": args.backbone} if args.backbone else {}
    seg = Segmenter.preset("default", classes=["left", "right"], cache=FeatureCache(max_bytes=0),
                           cross_validate=False, **kwargs)
    seg.extractor  # load the network outside the timing
    base = []
    for _ in range(args.baseline_repeats):
        t0 = time.perf_counter()
        seg.fit(arrays, pts)
        seg.predict_full(arrays[0], probabilities=True)
        base.append((time.perf_counter() - t0) * 1000)
    load1 = os.getloadavg()[0]

    def med(ts, key):
        vals = [t[key] for t in ts if key in t]
        return float(np.median(vals)) if vals else float("nan")

    mp = args.size * args.size / 1e6
    result.update(
        method=method,
        paced={"p50": pct(paced, 50), "p95": pct(paced, 95), "max": max(paced), "n": len(paced),
               "fit_ms": med(paced_t, "fit_ms"), "predict_ms": med(paced_t, "predict_ms"),
               "encode_ms": med(paced_t, "encode_ms"), "wait_ms": med(paced_t, "wait_ms")},
        burst={"p50": pct(burst, 50), "p95": pct(burst, 95), "max": max(burst), "n": len(burst)},
        slow={"p50": pct(slow, 50), "p95": pct(slow, 95), "max": max(slow), "n": len(slow)},
        undo={"p50": pct(undo, 50), "p95": pct(undo, 95), "n": len(undo)},
        cold=cold, baseline={"median": float(np.median(base)), "runs": base},
        overlay_bytes={"png": png_bytes, "json": json_bytes}, report=report,
        loadavg=[load0, load1], megapixels=mp,
    )
    rows = [
        [f"click → overlay, paced ({args.pace:g} s apart), n={len(paced)}", f"{result['paced']['p50']:.0f}",
         f"**{result['paced']['p95']:.0f}**", f"{result['paced']['max']:.0f}"],
        [f"click → overlay after a pause ({args.slow_pace:g} s: cross-validation runs and yields), n={len(slow)}",
         f"{result['slow']['p50']:.0f}", f"{result['slow']['p95']:.0f}", f"{result['slow']['max']:.0f}"],
        [f"click → overlay, back to back, n={len(burst)}", f"{result['burst']['p50']:.0f}",
         f"{result['burst']['p95']:.0f}", f"{result['burst']['max']:.0f}"],
        [f"undo → overlay, n={len(undo)}", f"{result['undo']['p50']:.0f}", f"{result['undo']['p95']:.0f}", "–"],
        ["first view of a new image → overlay (features computed)", f"{cold['view_to_overlay_ms']:.0f}", "–", "–"],
        [f"baseline: fit + predict re-running the network, n={len(base)}", f"{result['baseline']['median']:.0f}",
         "–", f"{max(base):.0f}"],
    ]
    text = [
        header("bench_server_latency.py", sys.argv[1:]),
        "",
        f"Project: {args.images} images of {args.size}×{args.size} ({mp:.1f} MP)"
        f"{f' + {args.ok_images} marked OK' if args.ok_images else ''}, {report['n_points']} points "
        f"at the end ({args.points} before the measured clicks), 2 classes; the default method "
        f"({', '.join(f'{k} {v}' for k, v in method.items() if v is not None)}); "
        f"load average {load0:.1f} → {load1:.1f} (other jobs on the 2 cores).",
        "",
        md_table(["ms", "p50", "p95", "max"], rows),
        "",
        f"Inside a paced click (server-side medians): fit {result['paced']['fit_ms']:.0f} ms on all points of "
        f"all images, predict {result['paced']['predict_ms']:.0f} ms, PNG encode {result['paced']['encode_ms']:.0f} ms; "
        f"the rest is the two HTTP round trips, the SQLite commit and the 10 ms debounce. "
        f"Speed-up over the baseline at p50: {result['baseline']['median'] / result['paced']['p50']:.0f}×.",
        "",
        f"Overlay of a {args.size}×{args.size} label map: palette PNG {png_bytes / 1024:.0f} KiB vs "
        f"{json_bytes / 1024:.0f} KiB as a JSON array ({json_bytes / png_bytes:.0f}× smaller).",
    ]
    md = "\n".join(text) + "\n"
    save_md("server_latency", md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server_latency.json").write_text(json.dumps(result, indent=2))
    print(md)



# ---------------------------------------------------------------------------------------------- large images
#: above this many pixels an image runs the large-image protocol
LARGE_FROM = 4_000_000
TILE = 512          # the page's refinement tiles (static/overlay.js)


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of process ``pid``, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class PhasePeaks:
    """Peak resident memory of process ``pid`` per phase of a run: a thread samples VmRSS from /proc every few
    ms, :meth:`mark` closes a phase (VmHWM alone says how high the server went, not during what)."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval, self.current, self.peaks = pid, interval, 0.0, {}
        self._lock = threading.Lock()  # a sample taken before a mark must not land in the next phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> float:
        try:
            return rss_mb(self.pid)[0]
        except (OSError, KeyError, ValueError):  # the process has exited
            return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self.current = max(self.current, self._rss())

    def mark(self, phase: str) -> None:
        with self._lock:
            self.peaks[phase] = round(max(self.current, self._rss()))
            self.current = 0.0

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peaks


def large_images(folder: Path, w: int, h: int) -> tuple[Path, Path, Path]:
    """A 1 MP training image, the large one and another large one for the cold first view (real textures),
    as PNG files in ``folder``. The cold one sorts first, so it is nobody's neighbour in the list and no
    prefetch touches it before its turn at the end."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    train, large, cold = folder / "a_train.png", folder / "b_large.png", folder / "0_cold.png"
    Image.fromarray(test_image(1000, 1000, seed=1)).save(train, compress_level=1)
    pixels = test_image(h, w, seed=2)
    Image.fromarray(pixels).save(large, compress_level=1)
    Image.fromarray(np.ascontiguousarray(pixels[::-1, ::-1])).save(cold, compress_level=1)
    return train, large, cold


def wait_previews(c, timeout: float = 300) -> float | None:
    """Seconds until the server's background previews are all made (``status.previews.pending == 0``);
    None for a tree without previews."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        previews = c.get("/api/status").json().get("previews")
        if previews is None:
            return None
        if previews["pending"] == 0:
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise SystemExit("the server's previews were not made in time")


def first_view(c, image_id: int, rev: int) -> dict:
    """Open an image and fetch its coarse first view, as the page does: seconds to first pixels and where
    they went (server: reading the preview or decoding, the model, encoding; the rest is HTTP)."""
    t0 = time.perf_counter()
    c.get(f"/api/images/{image_id}")
    r = c.get(f"/api/images/{image_id}/first-view.png", params={"min_rev": rev}, timeout=600)
    total = time.perf_counter() - t0
    if r.status_code != 200:
        return {"coarse": False, "first_pixels_s": None}
    t = json.loads(r.headers["X-Timings"])
    server = t.get("wait_ms", 0) + t.get("encode_ms", 0)
    return {"coarse": True, "first_pixels_s": total, "preview": t.get("preview"),
            "read_ms": t.get("read_ms"), "model_ms": t.get("model_ms"), "predict_ms": t.get("predict_ms"),
            "encode_ms": t.get("encode_ms"), "http_ms": total * 1000 - server}


def overlay(c, image_id: int, rev: int | None, box=None, scale: float = 1.0, timeout: float = 600):
    """One overlay request, timed; (ms, response). ``box`` = (x0, y0, x1, y1)."""
    params = {"timeout": min(300, timeout)}
    if rev is not None:
        params["min_rev"] = rev
    if box is not None:
        params.update(box=",".join(map(str, box)), scale=scale)
    t0 = time.perf_counter()
    while True:   # 504: still computing (the server waits at most 300 s a request); ask again, as the page does
        r = c.get(f"/api/images/{image_id}/overlay.png", params=params, timeout=timeout)
        if r.status_code != 504 or time.perf_counter() - t0 > timeout:
            break
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000, r


def whole_in_tiles(c, image_id: int, rev: int, w: int, h: int) -> tuple[float, list[float]]:
    """The whole overlay at full resolution the way the page fetches it: 512-px tiles one after another
    (a tree without regions answers the first with the whole overlay: then that is all). (ms, tile ms)."""
    t0 = time.perf_counter()
    tiles = []
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            ms, r = overlay(c, image_id, rev, (x, y, min(w, x + TILE), min(h, y + TILE)))
            tiles.append(ms)
            if "X-Box" not in r.headers:
                return (time.perf_counter() - t0) * 1000, tiles
    return (time.perf_counter() - t0) * 1000, tiles


def large_run(label: str, src: str | None, w: int, h: int, args, rng) -> dict:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="pointseg-bench-large-"))
    train, large, cold = large_images(tmp / "imgs", w, h)
    vw, vh = parse_size(args.viewport)
    vw, vh = min(vw, w), min(vh, h)
    view = ((w - vw) // 2, (h - vh) // 2, (w - vw) // 2 + vw, (h - vh) // 2 + vh)
    out: dict = {"tree": label, "size": f"{w}x{h}", "viewport": [vw, vh]}
    proc, url = start_server(tmp / "project", tmp / "imgs", args.backbone, src)
    peaks = PhasePeaks(proc.pid)
    try:
        with httpx.Client(base_url=url, timeout=600) as c:
            ids = {i["name"]: i["id"] for i in c.get("/api/images").json()["images"]}
            tid, lid, cid = ids[train.name], ids[large.name], ids[cold.name]
            cls = [c.post("/api/classes", json={"name": n}).json() for n in ("left", "right")]
            items = [{"class_id": cls[k % 2]["id"], "x": float(rng.uniform(0, 499) + 500 * (k % 2)),
                      "y": float(rng.uniform(0, 999))} for k in range(40)]
            rev = c.post(f"/api/images/{tid}/annotations", json={"items": items}).json()["rev"]
            overlay(c, tid, rev)                                   # trained, features of the 1 MP image
            # the project was opened a moment ago: its previews are made in the background meanwhile
            out["previews_made_s"] = wait_previews(c)
            peaks.mark("open + training (1 MP)")
            # first view of the large image
            t0 = time.perf_counter()
            fv = first_view(c, lid, rev)
            t_first = time.perf_counter()
            peaks.mark("first view: coarse")
            ms_view, r = overlay(c, lid, rev, view)
            t_view = time.perf_counter()
            peaks.mark("features + visible exact")
            whole = "X-Box" not in r.headers
            ms_tiles, tile_ms = (0.0, []) if whole else whole_in_tiles(c, lid, rev, w, h)
            t_full = time.perf_counter()
            peaks.mark("full resolution in tiles")
            out["first_view"] = {
                **fv, "first_pixels_s": (t_first if fv["coarse"] else t_view) - t0,
                "visible_exact_s": t_view - t0, "full_s": t_full - t0,
                "tile_ms_p50": pct(tile_ms, 50) if tile_ms else None}
            out["rss_after_features_mb"] = rss_mb(proc.pid)[0]
            # a few hundred points on the large image, then clicks inside the viewport
            x0, y0, x1, y1 = view
            items = [{"class_id": cls[k % 2]["id"], "x": float(rng.uniform(0, w - 1)), "y": float(rng.uniform(0, h - 1))}
                     for k in range(args.points)]
            rev = c.post(f"/api/images/{lid}/annotations", json={"items": items}).json()["rev"]
            overlay(c, lid, rev, view)

            def click(box, scale):
                item = {"class_id": cls[len(lat) % 2]["id"], "x": float(rng.uniform(x0, x1 - 1)),
                        "y": float(rng.uniform(y0, y1 - 1))}
                t = time.perf_counter()
                r = c.post(f"/api/images/{lid}/annotations", json={"items": [item]})
                r.raise_for_status()
                _, o = overlay(c, lid, r.json()["rev"], box, scale)
                lat.append((time.perf_counter() - t) * 1000)
                fits.append(json.loads(o.headers["X-Timings"]))
                time.sleep(args.pace)

            lat, fits = [], []
            for _ in range(args.large_clicks):
                click(view, 1.0)
            peaks.mark("points + clicks in the viewport")
            out["click_view"] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat),
                                 **{f"{k}_p50": float(np.median([t.get(k, np.nan) for t in fits]))
                                    for k in ("fit_ms", "predict_ms", "encode_ms", "wait_ms")}}
            lat, fits = [], []
            for _ in range(args.zoomed_out_clicks):
                click((0, 0, w, h), min(1.0, vw / w))
            peaks.mark("zoomed-out clicks")
            out["click_zoomed_out"] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat)}
            out["rss_mb"], out["peak_rss_mb"] = rss_mb(proc.pid)
            out["regions"] = not whole
            # the cold case, last (after the peak was read): an image whose preview is not made yet (removed
            # here, as if the background had not reached it), so its first view decodes the file
            for stale in (tmp / "project" / "thumbs").glob("*-preview-*"):
                stale.unlink()
            time.sleep(args.pace)
            out["cold_first_view"] = first_view(c, cid, rev)
            time.sleep(1.0)                     # its features have started meanwhile: the decode's peak
            peaks.mark("cold first view (+1 s)")
    finally:
        out["phase_peaks_mb"] = peaks.stop()
        stop_server(proc)
    return out


PHASES = ("open + training (1 MP)", "first view: coarse", "features + visible exact", "full resolution in tiles",
          "points + clicks in the viewport", "zoomed-out clicks", "cold first view (+1 s)")


def first_rows(runs: list[dict]) -> list[list]:
    def num(v, fmt="{:.0f}"):
        return "–" if v is None else fmt.format(v)

    rows = []
    for r in runs:
        made = r.get("previews_made_s")
        for case, fv in (("with preview" if made is not None else "(no previews)", r["first_view"]),
                         ("cold", r.get("cold_first_view"))):
            if not fv or not fv.get("coarse"):
                continue
            rows.append([r["tree"], r["size"], case + (f" (previews made {made:.1f} s)" if case == "with preview" else ""),
                         num(fv["first_pixels_s"], "{:.2f}"), fv.get("preview") or "–",
                         num(fv.get("read_ms")), num(fv.get("model_ms")), num(fv.get("encode_ms")),
                         num(fv.get("http_ms"))])
    return rows


def large_main(args, sizes) -> None:
    rng = np.random.default_rng(0)
    load0 = os.getloadavg()[0]
    runs = []
    for w, h in sizes:
        trees = [("this tree", None)]
        if args.baseline and f"{w}x{h}" in args.baseline_sizes.split(","):
            trees.insert(0, ("baseline", args.baseline))
        for label, src in trees:
            print(f"{label} at {w}x{h} …", flush=True)
            runs.append(large_run(label, src, w, h, args, rng))
    load1 = os.getloadavg()[0]
    rows = []
    for r in runs:
        fv, cv, cz = r["first_view"], r["click_view"], r["click_zoomed_out"]
        rows.append([r["tree"], r["size"], f"{fv['first_pixels_s']:.2f}" + ("" if fv["coarse"] else " (whole)"),
                     f"{fv['visible_exact_s']:.2f}", f"{fv['full_s']:.1f}", f"{cv['p50']:.0f}", f"**{cv['p95']:.0f}**",
                     f"{cz['p50']:.0f}", f"{cz['p95']:.0f}", f"{cv['fit_ms_p50']:.0f}",
                     f"{r['rss_after_features_mb']:.0f}", f"{r['peak_rss_mb']:.0f}"])
    vw, vh = runs[0]["viewport"]
    md = "\n".join([
        header("bench_server_latency.py", sys.argv[1:]), "",
        f"Through the server (HTTP on loopback, a fresh `pointseg serve` per tree and size): 40 points on a 1 MP "
        f"image, then the large image's first view, {args.points} points on it and {args.large_clicks} clicks "
        f"{args.pace:g} s apart inside a {vw}x{vh} viewport, each timed from the POST until the visible overlay "
        f"arrived; {args.zoomed_out_clicks} more with the whole image at {vw} px wide. Load average {load0:.1f} → "
        f"{load1:.1f}.", "",
        md_table(["tree", "image", "first pixels s", "visible exact s", "full resolution s",
                  "click→view p50 ms", "click→view p95 ms", "zoomed-out p50 ms", "zoomed-out p95 ms",
                  "fit p50 ms", "RSS after features MB", "peak RSS MB"], rows), "",
        "First pixels (`first-view.png`), client-timed from opening the image; server side: reading the "
        "preview (or decoding the file), the model on it, encoding; HTTP the rest. *with preview*: made in the "
        "background when the project opened (`previews made` s after training, before the image was opened); "
        "*cold*: no preview yet (removed just before), the file decoded on the first view.", "",
        md_table(["tree", "image", "case", "first pixels s", "preview", "read ms", "model ms", "encode ms",
                  "HTTP ms"], first_rows(runs)), "",
        "Peak resident memory of the server per phase (VmRSS sampled every 5 ms), MB; the peak RSS above is "
        "read before the cold case, which is last:", "",
        md_table(["tree", "image", *PHASES], [[r["tree"], r["size"], *(r["phase_peaks_mb"].get(k, "–") for k in PHASES)]
                                               for r in runs])])
    save_md("server_latency_large", md + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server_latency_large.json").write_text(json.dumps({"args": vars(args), "runs": runs,
                                                                   "loadavg": [load0, load1]}, indent=2))
    print(md)


if __name__ == "__main__":
    main()

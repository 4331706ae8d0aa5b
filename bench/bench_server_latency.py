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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_server(project: Path, images: Path, backbone: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-c", "from pointseg.cli import main; main()", "serve", str(project),
           "--images", str(images), "--port", str(port)]
    if backbone:
        cmd += ["--backbone", backbone]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--clicks", type=int, default=60)
    ap.add_argument("--burst", type=int, default=20, help="clicks sent back to back")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--pace", type=float, default=0.5, help="seconds between paced clicks")
    ap.add_argument("--slow-pace", type=float, default=1.6,
                    help="seconds between the clicks of a user who pauses (the server validates meanwhile)")
    ap.add_argument("--slow-clicks", type=int, default=15)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--backbone", default=None)
    args = ap.parse_args()
    import httpx

    rng = np.random.default_rng(0)
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="pointseg-bench-"))
    files = make_images(tmp / "imgs", args.images + 1, args.size)
    fresh = files.pop()                                   # kept out of the project until the cold test
    (tmp / "cold").mkdir()
    fresh = fresh.rename(tmp / "cold" / fresh.name)
    proc, url = start_server(tmp / "project", tmp / "imgs", args.backbone)
    result: dict = {"args": vars(args)}
    try:
        with httpx.Client(base_url=url, timeout=300) as c:
            method = c.get("/api/project").json()["method"]
            ids = [i["id"] for i in c.get("/api/images").json()["images"] if i["name"] != fresh.name]
            cls = [c.post("/api/classes", json={"name": n}).json() for n in ("left", "right")]
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
            for image_id in ids:                          # view every image once: features in background
                c.get(f"/api/images/{image_id}")
            for image_id in ids:
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
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

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
        f"Project: {args.images} images of {args.size}×{args.size} ({mp:.1f} MP), {report['n_points']} points "
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


if __name__ == "__main__":
    main()

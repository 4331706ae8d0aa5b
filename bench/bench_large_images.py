"""Large images through the library: click → refit + visible-region prediction, first view, memory.

    python bench/bench_large_images.py [--sizes 4000x3000,8165x6124] [--points 300] [--clicks 15]
                                       [--baseline /path/to/other/src] [--baseline-sizes 4000x3000]

For each image size, one fresh Python process per source tree (this checkout's ``src`` and, with
``--baseline``, another tree such as main's, interleaved size by size) runs what the app does with a large
image, through the library only (no HTTP):

* **first view**: a model trained on another (1 MP) image meets the new large image. Time to the first
  pixels (``Segmenter.predict_coarse`` from a 512-px downscale, where the tree has it; otherwise the full
  prediction) and to the full-resolution labels (features extracted + ``predict_full``);
* **clicks**: ``--points`` points on the large image (plus some on the 1 MP one), then ``--clicks`` times:
  one more point → ``fit`` (warm start) → the visible region: a 1600 x 1000 viewport at scale 1 around
  the click (``predict_region``) and, separately, the whole image zoomed out to 1600 px wide
  (``predict_region(..., scale=...)``). Trees without ``predict_region`` predict the whole image
  (``predict_full(probabilities=False)``), which is what their app waits for;
* **memory**: the process's resident set after the image is loaded, after its features, and its peak.

Writes bench/results/large_images.md and .json. The machine is shared: quote ratios, and the load average
printed in the header.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, header, test_image  # noqa: E402

VIEW_W, VIEW_H = 1600, 1000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhasePeaks:
    """Peak resident memory per phase of a run: a thread samples VmRSS every few ms, :meth:`mark` closes a
    phase (``ru_maxrss`` alone says how high the process went, not during what)."""

    def __init__(self, interval: float = 0.005):
        import threading

        self.interval, self.current, self.peaks = interval, 0.0, {}
        self._lock = threading.Lock()  # a sample taken before a mark must not land in the next phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self.current = max(self.current, rss_mb())

    def mark(self, phase: str) -> None:
        with self._lock:
            self.peaks[phase] = round(max(self.current, rss_mb()))
            self.current = 0.0

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peaks


def random_points(rgb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points labelled by a simple rule the head can learn: dark (cracks, edges) vs the rest."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    grey = rgb[ys, xs].mean(axis=1)
    labels = (grey < np.median(grey)).astype(np.int64)
    return np.column_stack([xs, ys, labels]).astype(np.float64)


def child(size: str, n_points: int, n_clicks: int) -> dict:
    import torch

    from pointseg import Segmenter

    w, h = (int(v) for v in size.split("x"))
    out: dict = {"size": size, "megapixels": round(w * h / 1e6, 1), "threads": torch.get_num_threads()}
    small = test_image(1000, 1000, seed=1)
    rgb = test_image(h, w, seed=0)
    out["rss_image_mb"] = round(rss_mb())
    peaks = PhasePeaks()
    seg = Segmenter(classes=["surface", "dark"], warm_start=True, cross_validate=False)
    small_pts = random_points(small, 40, seed=1)
    fmap_small = seg.extract_features(small)
    seg.fit([fmap_small], [small_pts])
    seg.predict_full(fmap_small, probabilities=False)  # warm up the prediction path
    peaks.mark("warm-up (1 MP)")
    has_region = hasattr(seg, "predict_region")

    # ---- first view of the new large image
    t0 = time.perf_counter()
    if hasattr(seg, "predict_coarse"):
        seg.predict_coarse(rgb, max_side=512)
        out["first_pixels_s"] = round(time.perf_counter() - t0, 3)
        peaks.mark("coarse")
    fmap = seg.extract_features(rgb)
    out["features_s"] = round(time.perf_counter() - t0, 2)
    peaks.mark("extraction")
    seg.predict_full(fmap, probabilities=False)
    peaks.mark("first whole-image prediction")
    out["full_view_s"] = round(time.perf_counter() - t0, 2)
    out.setdefault("first_pixels_s", out["full_view_s"])
    out["rss_features_mb"] = round(rss_mb())

    # ---- clicks
    pts = random_points(rgb, n_points, seed=0)
    seg.fit([fmap_small, fmap], [small_pts, pts])
    peaks.mark("first fit")
    rng = np.random.default_rng(7)
    cy, cx = h // 2, w // 2  # the viewport the user looks at (clicks land inside it)
    box = (max(0, cy - VIEW_H // 2), min(h, cy + VIEW_H // 2), max(0, cx - VIEW_W // 2), min(w, cx + VIEW_W // 2))
    if has_region:
        seg.predict_region(fmap, box)  # the viewport is shown before the first click (its fine tiles warm)
    view, zoomed, fits = [], [], []
    for _ in range(n_clicks):
        y, x = int(rng.integers(box[0], box[1])), int(rng.integers(box[2], box[3]))
        label = int(rgb[y, x].mean() < 128)
        pts = np.concatenate([pts, [[x, y, label]]])
        t = time.perf_counter()
        seg.fit([fmap_small, fmap], [small_pts, pts])
        fits.append(time.perf_counter() - t)
        if has_region:
            seg.predict_region(fmap, box, probabilities=False)
        else:
            seg.predict_full(fmap, probabilities=False)
        view.append(time.perf_counter() - t)
        if has_region:
            t = time.perf_counter()
            seg.predict_region(fmap, (0, h, 0, w), scale=VIEW_W / w, probabilities=False)
            zoomed.append(time.perf_counter() - t + fits[-1])
    peaks.mark("clicks")
    t = time.perf_counter()
    seg.predict_full(fmap, probabilities=False)
    out["refine_full_s"] = round(time.perf_counter() - t, 2)
    peaks.mark("whole image after clicks")
    q = lambda xs, p: round(1000 * float(np.percentile(xs, p)))  # noqa: E731
    out.update(click_view_p50_ms=q(view, 50), click_view_p95_ms=q(view, 95), fit_p50_ms=q(fits, 50))
    if zoomed:
        out.update(click_zoomed_p50_ms=q(zoomed, 50), click_zoomed_p95_ms=q(zoomed, 95))
    out["n_points"] = int(len(pts) + len(small_pts))
    out["rss_end_mb"] = round(rss_mb())
    out["peak_rss_mb"] = round(peak_rss_mb())
    out["phase_peak_rss_mb"] = peaks.stop()
    return out


def run_child(src: str, size: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    cmd = [sys.executable, __file__, "--child", size, "--points", str(args.points), "--clicks", str(args.clicks)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"size": size, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    cols = [("tree", "tree"), ("size", "image"), ("first_pixels_s", "first pixels s"),
            ("full_view_s", "full resolution s"), ("click_view_p50_ms", "click→view p50 ms"),
            ("click_view_p95_ms", "click→view p95 ms"), ("click_zoomed_p95_ms", "click→zoomed-out p95 ms"),
            ("fit_p50_ms", "fit p50 ms"), ("refine_full_s", "whole image after click s"),
            ("rss_features_mb", "RSS with features MB"), ("peak_rss_mb", "peak RSS MB"), ("n_points", "points")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tree']} | {r['size']} | failed: {r['error']} |")
            continue
        lines.append("| " + " | ".join(str(r.get(k, "–")) for k, _ in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4000x3000,8165x6124", help="WxH,WxH,...")
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--baseline", help="another tree's src/ to compare with (e.g. main's)")
    parser.add_argument("--baseline-sizes", default="4000x3000",
                        help="sizes to run the baseline on (a tree that holds full fine responses needs ~9 GB at 50 MP)")
    parser.add_argument("--baseline-only", action="store_true", help="run only the baseline tree")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.points, args.clicks)))
        return
    head = header("bench_large_images.py", sys.argv[1:])
    rows = []
    for size in args.sizes.split(","):
        trees = [] if args.baseline_only else [("this branch", str(REPO / "src"))]
        if args.baseline and size in args.baseline_sizes.split(","):
            trees.insert(0, ("baseline", args.baseline))
        for name, src in trees:
            print(f"{size} · {name} …", file=sys.stderr, flush=True)
            row = {"tree": name, **run_child(src, size, args)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    text = f"{head}\n\n{table(rows)}\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "large_images_baseline" if args.baseline_only else "large_images"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Scale-out figures of `pointseg.batch.predict_many`: throughput and scaling, a gigapixel-style zarr image, resume.

    python bench/bench_distributed.py                       # ~10 min on 2 shared cores
    python bench/bench_distributed.py --images 200 --side 8000

1. A model (default backbone, hybrid features) is trained on two synthetic images with 5 clicks per class.
2. Throughput on a folder of ``--images`` small images (``--small`` px square, real texture from ../shared when
   present): in-process (torch on all cores), then LocalCluster with 1 and with 2 single-threaded worker
   processes, in the same run. Reported: images/s, MP/s, wall time without cluster start-up (given apart), and
   scaling efficiency = throughput(2 workers) / (2 × throughput(1 worker)).
3. Resume: the same batch rerun with ``resume=True`` into the 2-worker run's output (every output present).
4. A synthetic ``--side`` × ``--side`` zarr image: tile tasks on a fresh 2-worker LocalCluster (peak RSS of
   each worker, read in the worker) versus today's single-process streaming (`Segmenter.predict` on the whole
   array, in a child process so its peak RSS is its own); wall time, MP/s, and whether the labels agree. The
   single process holds the whole image and its label/uncertainty arrays, so it is bounded: it is stopped
   above ``--stream-max-mb`` of resident memory or after ``--stream-timeout`` seconds, and the table then
   says where it stood (the tiled run comes first so its figures survive).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, header, md_table, save_md, test_image

sys.path.insert(0, str(REPO / "tests"))

STREAM_CHILD = """
import json, resource, sys, time
import numpy as np, zarr
from pointseg import lazyio
from pointseg.features import FeatureCache
from pointseg.segmenter import Segmenter
model, image, labels_out, stream_above = sys.argv[1:5]
import pointseg.segmenter
pointseg.segmenter.STREAM_ABOVE_PIXELS = int(stream_above)  # stream (tile by tile) as a huge image would
seg = Segmenter.load(model, cache=FeatureCache(max_bytes=0))
rgb = np.asarray(zarr.open_array(store=lazyio.zarr_store(image), mode="r")[:])
t = time.perf_counter()
labels = seg.predict(rgb)
wall = time.perf_counter() - t
np.save(labels_out, labels.astype(np.uint8))
print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def train_model(folder: Path) -> Path:
    from synthetic import points_from_truth, two_texture_image

    from pointseg.segmenter import Segmenter

    images, points = [], []
    for seed in (0, 1):
        image, truth = two_texture_image(seed=seed)
        images.append(image)
        points.append(points_from_truth(truth, 5, seed))
    seg = Segmenter(classes=["left", "right", "disc"], cross_validate=False).fit(images, points)
    path = folder / "model.pointseg"
    seg.save(path)
    return path


def write_folder(folder: Path, count: int, side: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    big = test_image(side * 4, side * 5, seed=1)
    for i in range(count):
        y, x = (i // 5) % 4 * side, i % 5 * side
        tile = np.roll(big, i * 7, axis=1)[y:y + side, x:x + side]
        Image.fromarray(tile).save(folder / f"part{i:04d}.png")


def run_batch(model, inputs, out, client=None, resume=False, options=None):
    from pointseg.batch import predict_many

    t = time.perf_counter()
    results = list(predict_many(model, inputs, str(out), client=client, resume=resume, options=options))
    wall = time.perf_counter() - t
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return wall, results


def local_cluster(n: int):
    import distributed

    t = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    return cluster, client, time.perf_counter() - t


def throughput(model, folder: Path, work: Path, count: int, side: int) -> tuple[list, dict]:
    mp = count * side * side / 1e6
    rows, figures = [], {}
    wall, _ = run_batch(model, [folder], work / "out0")
    figures["inprocess"] = wall
    rows.append(["in-process (torch on all cores)", "–", f"{wall:.1f}", f"{count / wall:.2f}", f"{mp / wall:.3f}", "–"])
    print(rows[-1], flush=True)
    for n in (1, 2):
        cluster, client, start = local_cluster(n)
        try:
            wall, _ = run_batch(model, [folder], work / f"out{n}", client)
        finally:
            client.close()
            cluster.close()
        figures[n] = wall
        eff = "–" if n == 1 else f"**{figures[1] / (2 * wall):.2f}**"
        rows.append([f"LocalCluster, {n} worker(s) × 1 thread", f"{start:.1f}", f"{wall:.1f}", f"{count / wall:.2f}",
                     f"{mp / wall:.3f}", eff])
        print(rows[-1], flush=True)
    t = time.perf_counter()
    run_batch(model, [folder], work / "out2", resume=True)
    figures["resume"] = time.perf_counter() - t
    print("resume", figures["resume"], flush=True)
    return rows, figures


def large_image(model, work: Path, side: int, stream_above: int, max_mb: float = 8000,
                timeout: float = 3600, skip_tiled: bool = False) -> tuple[list, dict]:
    import distributed
    import zarr

    from pointseg import lazyio
    from pointseg.batch import BatchOptions
    from pointseg.batch.tiled import read_labels

    image = work / "slide.zarr"
    array = zarr.open_array(store=lazyio.zarr_store(str(image), read_only=False), mode="w", shape=(side, side, 3),
                            chunks=(1024, 1024, 3), dtype="u1")
    for y in range(0, side, 1024):
        array[y:y + 1024] = np.roll(test_image(min(1024, side - y), side), y // 7, axis=1)
    mp = side * side / 1e6
    print(f"zarr input written ({mp:.0f} MP)", flush=True)
    wall, rss, results, tiled_row = None, [], [], None
    if not skip_tiled:
        cluster, client, _ = local_cluster(2)
        try:
            options = BatchOptions(tile_above_pixels=stream_above)
            wall, results = run_batch(model, [str(image)], work / "tiled", client, options=options)
            rss = sorted(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values())
        finally:
            client.close()
            cluster.close()
        print(f"tiled: {wall:.0f} s, worker peak RSS {rss} MB", flush=True)
        tiled_row = ["tile tasks, LocalCluster 2 workers × 1 thread", f"{wall:.0f}", f"{mp / wall:.2f}",
                     " / ".join(f"{r:.0f}" for r in rss) + " (each worker)"]
    stream = bounded_child([sys.executable, "-c", STREAM_CHILD, str(model), str(image), str(work / "stream.npy"),
                            str(stream_above)], max_mb, timeout)
    print(f"stream: {stream}", flush=True)
    name = "single process, streaming (`Segmenter.predict`, torch on all cores)"
    if stream.get("stopped") is not None:
        stream_row = [name, f"> {stream['wall']:.0f} (stopped: {stream['stopped']})", "–",
                      f"≥ {stream['rss']:.0f} (the process, when stopped)"]
    else:
        stream_row = [name, f"{stream['wall']:.0f}", f"{mp / stream['wall']:.2f}", f"{stream['rss']:.0f} (the process)"]
    differ = None
    if stream.get("stopped") is None and tiled_row is not None:
        tiled = read_labels(str(work / "tiled" / "slide.ome.zarr"))
        differ = int((tiled != np.load(work / "stream.npy")).sum())
    rows = [stream_row] + ([tiled_row] if tiled_row is not None else [])
    return rows, {"differ": differ, "pixels": side * side, "stream": stream, "tiled": wall, "rss": rss,
                  "tiles": len(results)}


def bounded_child(command: list[str], max_mb: float, timeout: float) -> dict:
    """Run the single-process baseline, polling its resident memory: stopped (killed) above ``max_mb`` MB or
    after ``timeout`` s, so a baseline that holds the whole image cannot exhaust a shared machine."""
    start = time.perf_counter()
    # the baseline decodes the whole image on purpose: lift the decompression-bomb guard for it alone
    env = {**os.environ, "POINTSEG_MAX_PIXELS": str(10**10)}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, stopped = 0.0, None
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak = max(peak, float(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM"))) / 1024)
        except (OSError, StopIteration):
            pass
        elapsed = time.perf_counter() - start
        if peak > max_mb or elapsed > timeout:
            stopped = f"peak RSS above {max_mb:.0f} MB" if peak > max_mb else f"ran past {timeout:.0f} s"
            child.kill()
            child.wait()
            return {"stopped": stopped, "wall": elapsed, "rss": peak}
        time.sleep(0.5)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"streaming baseline failed ({child.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--small", type=int, default=256, help="side of the small images (px)")
    parser.add_argument("--side", type=int, default=8000, help="side of the synthetic zarr image (px)")
    parser.add_argument("--stream-above", type=int, default=16_000_000,
                        help="pixels above which both runs take the large-image path (streaming / tile tasks); "
                             "lower it to measure that path on a smaller image")
    parser.add_argument("--stream-max-mb", type=float, default=8000,
                        help="stop the single-process baseline above this peak RSS (MB)")
    parser.add_argument("--stream-timeout", type=float, default=3600, help="stop the single-process baseline after (s)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-tiled", action="store_true", help="only the single-process baseline of the large image")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    head = header("bench_distributed.py", sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="pointseg-bench-dist-"))
    try:
        model = train_model(work)
        rows, fig = [], {}
        if not args.skip_throughput:
            write_folder(work / "in", args.images, args.small)
            rows, fig = throughput(model, work / "in", work, args.images, args.small)
        big_rows, big = ([], None) if args.skip_large else large_image(model, work, args.side, args.stream_above,
                                                                             args.stream_max_mb, args.stream_timeout,
                                                                             args.skip_tiled)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big_text = [] if big is None else [
        f"A {args.side}×{args.side} px ({args.side ** 2 / 1e6:.1f} MP) synthetic zarr image, both runs on the "
        f"large-image path (above {args.stream_above:,} px):",
        md_table(["run", "wall s", "MP/s", "peak RSS MB"], big_rows),
        f"Labels of the tiled run differ from the single-process streaming labels at {big['differ']:,} of "
        f"{big['pixels']:,} pixels." if big["differ"] is not None else
        "No label comparison in this run (the single-process baseline was stopped, or the tiled run skipped).",
    ]
    if not fig:
        text = "\n\n".join([head, *big_text])
        print(text)
        save_md("distributed_large", text)
        return
    per_core = args.images * args.small ** 2 / 1e6 / fig[1]
    text = "\n\n".join([
        head,
        f"Throughput on {args.images} images of {args.small}×{args.small} px (default model, hybrid features), "
        "wall time from the first submit to the last result (model loading on the workers included, cluster "
        "start-up given apart):",
        md_table(["run", "cluster start s", "wall s", "images/s", "MP/s", "scaling efficiency (2 vs 1)"], rows),
        f"Per core (1 single-threaded worker): {args.images / fig[1]:.2f} images/s, {per_core:.3f} MP/s. "
        f"Resume with every output present: {fig['resume']:.1f} s for {args.images} images "
        f"({fig['resume'] / fig[2]:.1%} of the 2-worker run).",
        *big_text,
    ])
    print(text)
    save_md("distributed", text)


if __name__ == "__main__":
    main()

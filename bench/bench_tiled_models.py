"""What tiled prediction costs for the models that could not be tiled before: an enlarged context (×4, what
the default fits on training images under 258 px) and auto-context (the thin preset), against the native
default, on one zarr image predicted as tile tasks in this process.

    python bench/bench_tiled_models.py [--side 1536] [--repeat 2]

Each model is fitted on the same small synthetic image and clicks (a ×4 model by the default rule; the
others with ``context_upscale=1``), saved, and run through ``pointseg.batch.predict_many`` with the tile
threshold lowered so the image is cut into tile tasks; the whole-image ``Segmenter.predict`` of the same
model gives the reference labels (``differ``: share of pixels whose tiled label differs). Rounds alternate
the models; best of ``--repeat`` wall and process-CPU seconds (all threads), and the ratio to the native
model. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import header, md_table  # noqa: E402


def models(folder: Path) -> dict[str, Path]:
    from synthetic import points_from_truth, two_texture_image

    from pointseg import Segmenter

    image, truth = two_texture_image()
    other, other_truth = two_texture_image(seed=1)
    images, points = [image, other], [points_from_truth(truth, 5), points_from_truth(other_truth, 5)]
    specs = {"native (x1)": dict(context_upscale=1), "enlarged context (x4)": {},
             "auto-context (x1)": dict(context_upscale=1, autocontext=True)}
    out = {}
    for name, params in specs.items():
        seg = Segmenter(classes=["left", "right", "disc"], cross_validate=False, **params).fit(images, points)
        path = folder / f"{len(out)}.pointseg"
        seg.save(path)
        out[name] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=1536)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import zarr
    from batchkit import mosaic

    from pointseg import Segmenter, lazyio
    from pointseg.batch import BatchOptions, predict_many
    from pointseg.batch.tiled import read_labels

    tmp = Path(tempfile.mkdtemp(prefix="pointseg-tiled-"))
    big = mosaic(args.side, args.side)
    store = lazyio.zarr_store(str(tmp / "slide.zarr"), read_only=False)
    zarr.open_array(store=store, mode="w", shape=big.shape, chunks=(256, 256, 3), dtype="u1")[:] = big
    paths = models(tmp)
    times = {name: [] for name in paths}
    differ = {}
    for round_ in range(args.repeat):
        for name, path in paths.items():
            out = tmp / f"out-{round_}-{len(times[name])}-{hash(name) & 0xffff}"
            t0, c0 = time.perf_counter(), time.process_time()
            (result,) = predict_many(path, [str(tmp / "slide.zarr")], str(out),
                                     options=BatchOptions(tile_above_pixels=1_000_000))
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
            assert result.ok, result.error
            if name not in differ:
                expected = Segmenter.load(path).predict(big)
                differ[name] = float(np.mean(read_labels(str(out / "slide.ome.zarr")) != expected))
    wall0 = min(t for t, _ in times["native (x1)"])
    cpu0 = min(c for _, c in times["native (x1)"])
    rows = []
    for name in paths:
        wall, cpu = min(t for t, _ in times[name]), min(c for _, c in times[name])
        rows.append([name, f"{wall:.1f}", f"{wall / wall0:.2f}", f"{cpu:.1f}", f"{cpu / cpu0:.2f}", f"{differ[name]:.2g}"])
    print(header("bench_tiled_models.py", sys.argv[1:]))
    print()
    print(f"{args.side} x {args.side} px zarr image as tile tasks, in this process; best of {args.repeat}, alternating")
    print()
    print(md_table(["model", "wall s", "× native", "CPU s", "× native", "differ from whole"], rows))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "batch"))
    main()

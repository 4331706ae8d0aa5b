"""Batch throughput of `pointseg predict` on a folder, and peak memory for one 25-megapixel image.

    python bench/bench_predict_cli.py        # ~3-5 min on 2 cores

1. A model (default backbone) is trained on one ../shared image with 10 clicks per class and saved.
2. `pointseg predict MODEL FOLDER -o OUT` runs as a subprocess on each folder (../shared crackforest and
   kolektorsdd images): images/s and MP/s, wall time including start-up and model loading; the baseline,
   in the same run, is the library loop (`Segmenter.load` + `read_image` + `predict_full` + label PNG) in this
   process, so the ratio shows what the CLI adds.
3. Peak resident memory (ru_maxrss of the child) of `pointseg predict` on a 5000×5000 (25 MP) image versus a
   1000×1000 (1 MP) one: images above 16 MP stream through the backbone tile by tile, so the peak must stay
   far below what a whole-image feature map would need (given for scale).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from _common import SHARED, header, md_table, save_md, test_image

CHILD = """
import resource, subprocess, sys, json, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
print(json.dumps({"rc": r.returncode, "wall": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "err": r.stderr[-2000:]}))
"""


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh wrapper so ru_maxrss is that command's peak alone."""
    out = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res['err']}")
    return res


def library_loop(model, files, tmp) -> float:
    """What `pointseg predict` does per image, through the library in this process: load, read, predict,
    write the label PNG. Seconds."""
    from pointseg import Segmenter
    from pointseg.imageio import read_image
    from pointseg.outputs import save_label_png

    t = time.perf_counter()
    lib = Segmenter.load(model)
    for f in files:
        pred = lib.predict_full(read_image(f), probabilities=False)
        save_label_png(pred.labels, lib.colors_, tmp / "lib.png")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folders", nargs="+", default=["crackforest", "kolektorsdd"])
    ap.add_argument("--big", type=int, default=5000, help="side of the large test image (5000 -> 25 MP)")
    args = ap.parse_args()

    from PIL import Image

    from pointseg import Segmenter
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.protocols import random_clicks
    from pointseg.imageio import list_images

    pointseg_exe = shutil.which("pointseg") or "pointseg"
    tmp = Path(tempfile.mkdtemp(prefix="pointseg-bench-"))
    try:
        ds = load_dataset(SHARED / "datasets" / "crackforest")
        stem = ds.stems[0]
        pts = random_clicks(ds.load_mask(stem), ds.n_classes, (10,), seed=0, key=stem)[10]
        seg = Segmenter(classes=list(ds.classes), cross_validate=False).fit([ds.load_image(stem)], [pts])
        model = tmp / "model.pointseg"
        seg.save(model)
        backbone = seg.backbone

        rows = []
        for name in args.folders:
            folder = SHARED / "datasets" / name / "images"
            files = list_images([folder])
            mp = sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files) / 1e6
            # CLI and the library loop alternately, best of two each: load from other jobs only adds time
            cli_runs, lib_runs = [], []
            for _ in range(2):
                lib_runs.append(library_loop(model, files, tmp))
                cli_runs.append(run_measured([pointseg_exe, "predict", str(model), str(folder),
                                              "-o", str(tmp / f"out_{name}")]))
            res = min(cli_runs, key=lambda r: r["wall"])
            lib_s = min(lib_runs)
            rows.append([name, len(files), f"{mp:.1f}", f"{res['wall']:.1f}", f"{len(files) / res['wall']:.2f}",
                         f"{mp / res['wall']:.2f}", f"{lib_s:.1f}", f"{len(files) / lib_s:.2f}",
                         f"{res['wall'] / lib_s:.2f}×", f"{res['maxrss_kb'] / 1024:.0f}"])
            print(rows[-1], flush=True)

        one = list_images([SHARED / "datasets" / "crackforest" / "images"])[:1]
        startup = min(run_measured([pointseg_exe, "predict", str(model), str(one[0]), "-o", str(tmp / "one")])["wall"]
                      for _ in range(2))

        mem_rows = []
        for side in (1000, args.big):
            path = tmp / f"big_{side}.png"
            Image.fromarray(test_image(side, side)).save(path)
            res = run_measured([pointseg_exe, "predict", str(model), str(path), "-o", str(tmp / f"out_big_{side}")])
            mp = side * side / 1e6
            whole_fmap_gb = seg.extractor.channels * (side / 4) ** 2 * 4 / 1e9
            mem_rows.append([f"{side}×{side}", f"{mp:.1f}", f"{res['maxrss_kb'] / 1024:.0f}",
                             f"{res['wall']:.1f}", f"{whole_fmap_gb:.2f}"])
            print(mem_rows[-1], flush=True)
        ratio = float(mem_rows[1][2]) / float(mem_rows[0][2])
        text = "\n".join([
            header("bench_predict_cli.py", sys.argv[1:]), "",
            f"#### `pointseg predict` on a folder ({backbone}, features '{seg.features_}', label PNG + summary.csv "
            "per image; best of 2 alternating runs)\n",
            md_table(["folder", "images", "MP", "CLI wall s", "CLI images/s", "CLI MP/s",
                      "library loop s", "library images/s", "CLI / library", "CLI peak RSS MB"], rows),
            f"\n`pointseg predict` on a single 0.15 MP image takes {startup:.1f} s in all (process start, imports, "
            "model and backbone loading): the fixed cost inside the CLI column.\n",
            f"\n#### Peak memory of `pointseg predict` on one image ({args.big * args.big / 1e6:.0f} MP vs 1 MP)\n",
            md_table(["image", "MP", "peak RSS MB", "wall s", "a whole-image feature map would be GB"], mem_rows),
            f"\nPeak RSS ratio {args.big}² / 1000²: {ratio:.2f}× for {float(mem_rows[1][1]) / float(mem_rows[0][1]):.0f}× "
            "the pixels.", ""])
        print(text)
        print(f"saved {save_md('predict_cli', text)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

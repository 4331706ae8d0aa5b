"""The folder protocol (issue 13, "which image next"): pointseg's ranking against a random order.

    python bench/accuracy_folder.py --datasets magnetic_tile crackforest neu_seg --seeds 0-5

A simulated user starts on one image (the same for both orders), gives it corrective clicks until it has
--per-image clicks, moves to the next image (random, or the highest-ranked by
pointseg.decision.rank_images_for_annotation), up to --budget clicks; held-out defect IoU after each image.
Default preset. Writes bench/results/accuracy_folder_<dataset>.json and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["magnetic_tile", "crackforest", "neu_seg"])
    ap.add_argument("--seeds", default="0-5")
    ap.add_argument("--orders", default="random,uncertainty")
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    from pointseg import FeatureCache, Segmenter
    from pointseg.evaluation.command import _ints
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.folder import FolderConfig, markdown_folder, run_folder

    config = FolderConfig(seeds=_ints(args.seeds, "--seeds"), orders=tuple(args.orders.split(",")),
                          per_image=args.per_image, budget=args.budget, test=args.test,
                          candidates=args.candidates)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        ds = load_dataset(SHARED / "datasets" / name)
        cache = FeatureCache(max_bytes=2_000_000_000)
        start = time.time()
        result = run_folder(ds, lambda: Segmenter.preset(args.preset, classes=list(ds.classes), cache=cache,
                                                         cross_validate=False), config,
                            on_progress=lambda d: print(f"[{time.time() - start:6.0f}s] {d}", flush=True))
        result["meta"] = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "command": "python bench/accuracy_folder.py " + " ".join(sys.argv[1:]),
                          "wall_s": time.time() - start}
        (args.out / f"accuracy_folder_{name}.json").write_text(json.dumps(result, indent=1))
        print(f"\n{name}: {result['meta']['date']}, commit {commit}, {result['meta']['wall_s']:.0f} s")
        print(markdown_folder(result), flush=True)


if __name__ == "__main__":
    main()

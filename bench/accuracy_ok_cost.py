"""What OK images cost a refit (issue 13: hard negatives "bounded so a click still refits interactively").

    python bench/accuracy_ok_cost.py [--repeat 5]

Three KolektorSDD parts with 10 clicks each (features cached, as in the app after the first view), fitted
with 0, 3 and 10 clean parts marked OK; interleaved, best of --repeat. cross_validate=False: the refit the app
runs after a click. Also the training-time fit with cross_validate=True (point CV + the NG rule leave-one-image-out).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "kolektorsdd_parts"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from pointseg import Segmenter
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.parts import part_is_defective
    from pointseg.evaluation.protocols import random_clicks

    ds = load_dataset(DATA)
    masks = {s: ds.load_mask(s) for s in ds.stems}
    ng = [s for s in ds.stems if part_is_defective(masks[s])][:3]
    ok = [s for s in ds.stems if not part_is_defective(masks[s])][:10]
    seg = Segmenter(classes=list(ds.classes), cross_validate=False)
    fmaps = {s: seg.extract_features(ds.load_image(s)) for s in ng + ok}
    points = [random_clicks(masks[s], 2, (5,), 0, s)[5].astype(np.float64) for s in ng]
    cases = {n: ([fmaps[s] for s in ng + ok[:n]], points + [None] * n, [False] * 3 + [True] * n) for n in (0, 3, 10)}
    best = {n: np.inf for n in cases}
    for _ in range(args.repeat):
        for n, (imgs, pts, flags) in cases.items():
            t = time.perf_counter()
            seg.fit(imgs, pts, ok=flags)
            best[n] = min(best[n], time.perf_counter() - t)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python bench/accuracy_ok_cost.py --repeat {args.repeat}`")
    warm = Segmenter(classes=list(ds.classes), cross_validate=False, warm_start=True)
    best_warm = {n: np.inf for n in cases}
    for n, (imgs, pts, flags) in cases.items():
        warm.fit(imgs, pts, ok=flags)     # the session's earlier state
        for _ in range(args.repeat):
            t = time.perf_counter()
            warm.fit(imgs, pts, ok=flags)
            best_warm[n] = min(best_warm[n], time.perf_counter() - t)
    print("| OK images | fit from scratch (ms, best of %d) | × no OK images | refit with warm_start (ms) | × no OK images |"
          % args.repeat)
    print("|---|---|---|---|---|")
    for n in cases:
        print(f"| {n} | {best[n] * 1000:.1f} | {best[n] / best[0]:.2f} | {best_warm[n] * 1000:.1f} | "
              f"{best_warm[n] / best_warm[0]:.2f} |")
    seg.cross_validate = True
    for n in (0, 3):
        imgs, pts, flags = cases[n]
        t = time.perf_counter()
        seg.fit(imgs, pts, ok=flags)
        print(f"training fit with cross_validate=True (point CV + NG rule), {n} OK images: "
              f"{(time.perf_counter() - t) * 1000:.0f} ms")


if __name__ == "__main__":
    main()

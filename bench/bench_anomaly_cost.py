"""What the anomaly NG rule costs (issue 13): learning it, and deciding one part with it.

    python bench/bench_anomaly_cost.py [--repeat 3]

KolektorSDD parts (about 500 x 1250 px): 3 defective parts with 10 random clicks each and 3 clean parts marked
OK, features cached (as in the app and in `pointseg predict` after the prediction). Interleaved, best of
--repeat: the training fit with cross_validate=True (point CV + the NG rule leave-one-image-out) with
ng_rule="largest_region" (today's) and "anomaly"; then per held-out part the prediction (predict_full) and
the anomaly score (anomaly_score: cell features, nearest neighbours in the bank, smoothing, maximum), and
feature extraction of an uncached part for scale.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def best_of(repeat: int, fn) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from pointseg import Segmenter
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.parts import part_is_defective
    from pointseg.evaluation.protocols import random_clicks

    ds = load_dataset(SHARED / "datasets" / "kolektorsdd_parts")
    masks = {s: ds.load_mask(s) for s in ds.stems}
    ng = [s for s in ds.stems if part_is_defective(masks[s])][:3]
    ok = [s for s in ds.stems if not part_is_defective(masks[s])]
    train_ok, held = ok[:3], ok[3:6]
    area = Segmenter(classes=list(ds.classes))
    fmaps = {s: area.extract_features(ds.load_image(s)) for s in ng + train_ok + held}
    points = [random_clicks(masks[s], 2, (10,), 0, s)[10].astype(np.float64) for s in ng]
    imgs, pts, flags = [fmaps[s] for s in ng + train_ok], points + [None] * 3, [False] * 3 + [True] * 3
    anomaly = area.clone(ng_rule="anomaly")
    fit = {"largest_region": np.inf, "anomaly": np.inf}
    for _ in range(args.repeat):
        for name, seg in (("largest_region", area), ("anomaly", anomaly)):
            fit[name] = min(fit[name], best_of(1, lambda: seg.fit(imgs, pts, ok=flags)))
    predict = min(best_of(args.repeat, lambda: anomaly.predict_full(fmaps[s], probabilities=False)) for s in held)
    score = min(best_of(args.repeat, lambda: anomaly.anomaly_score(fmaps[s])) for s in held)
    cold = ds.load_image(ok[7])
    extract = best_of(1, lambda: Segmenter(classes=list(ds.classes)).extract_features(cold))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python bench/bench_anomaly_cost.py "
          f"--repeat {args.repeat}`; load {os.getloadavg()[0]:.1f}; bank {anomaly.anomaly_bank_.n_vectors} vectors")
    print("| step | ms | × |\n|---|---|---|")
    print(f"| training fit, cross_validate=True, ng_rule largest_region | {fit['largest_region'] * 1000:.0f} | 1.00 |")
    print(f"| training fit, cross_validate=True, ng_rule anomaly | {fit['anomaly'] * 1000:.0f} | "
          f"{fit['anomaly'] / fit['largest_region']:.2f} |")
    print(f"| predict_full of a part (features cached) | {predict * 1000:.0f} | 1.00 |")
    print(f"| anomaly_score of a part (features cached) | {score * 1000:.0f} | {score / predict:.2f} |")
    print(f"| feature extraction of an uncached part | {extract * 1000:.0f} | {extract / predict:.2f} |")


if __name__ == "__main__":
    main()

"""What the auto-context head costs a click: refit + prediction on a 1 MP image, linear vs auto-context.

    python bench/bench_autocontext.py [--side 1024] [--points 60] [--repeat 5]

One synthetic image (thin dark lines on a noisy ground, tests/synthetic.py's kind of picture) at
``side x side``, features extracted once and cached (as in the app, where the features of the image being
annotated are ready before the user clicks). Per repeat, interleaved: a warm-started refit after one more
click (the app's refit), the whole-image prediction (``predict_full``, labels + probabilities), and a
512 x 512 viewport (``predict_region``). Prints the best and the median of each in ms, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def lines_image(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    truth = np.zeros((side, side), np.int64)
    for x0 in np.linspace(side * 0.1, side * 0.9, 6):
        truth[np.abs(xx - (x0 + 8 * np.sin(yy / 13.0))) < 1.0] = 1
    dist = ndi.distance_transform_edt(truth == 0)
    grey = 150 - 50 * (dist <= 3) + rng.normal(0, 8, (side, side))
    return np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2).astype(np.uint8), truth


def clicks(truth: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for c in (0, 1):
        ys, xs = np.nonzero(truth == c)
        pick = rng.choice(len(xs), n // 2, replace=False)
        out += [[xs[j], ys[j], c] for j in pick]
    return np.array(out, float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--points", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from pointseg import FeatureCache, Segmenter

    image, truth = lines_image(args.side)
    points = clicks(truth, args.points)
    cache = FeatureCache()
    segs = {name: Segmenter(classes=["ground", "line"], cache=cache, cross_validate=False, warm_start=True,
                            autocontext=ac).fit([image], [points[:-1]])
            for name, ac in (("linear", False), ("autocontext", True))}
    times: dict[str, dict[str, list[float]]] = {name: {"refit": [], "predict": [], "viewport": []} for name in segs}
    box = (0, min(512, args.side), 0, min(512, args.side))
    for _ in range(args.repeat):
        for name, seg in segs.items():
            t0 = time.perf_counter()
            seg.fit([image], [points])
            t1 = time.perf_counter()
            seg.predict_full(image)
            t2 = time.perf_counter()
            seg.predict_region(image, box)
            t3 = time.perf_counter()
            for key, value in (("refit", t1 - t0), ("predict", t2 - t1), ("viewport", t3 - t2)):
                times[name][key].append(1000 * value)
    print(f"{args.side}x{args.side} image, {args.points} points, best / median of {args.repeat} (ms), "
          f"load {os.getloadavg()[0]:.1f}")
    for key in ("refit", "predict", "viewport"):
        line = []
        for name in segs:
            v = times[name][key]
            line.append(f"{name} {min(v):7.1f} / {statistics.median(v):7.1f}")
        ratio = statistics.median(times["autocontext"][key]) / statistics.median(times["linear"][key])
        print(f"  {key:9s} " + "   ".join(line) + f"   median ratio {ratio:.2f}")


if __name__ == "__main__":
    main()

"""What scoring an image for "next image to annotate" costs (issue 13): the committee ranking (the default)
against the one-model uncertainty it replaced.

    python bench/bench_ranking_cost.py [--repeat 3] [--size 1024]

Three synthetic SIZE x SIZE images annotated with 20 clicks each, features cached (as in the app, which
scores only images whose features exist), one more image to score. Interleaved, best of --repeat:
fitting the committee (once per model version in the app), scoring one image with it, and the uncertainty
ranking's one prediction of the image; and the same for a 4x larger image (the committee judges images over
``pointseg.decision.COMMITTEE_PIXELS`` on a whole-image preview).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    from _common import timed
    from synthetic import points_from_truth, two_texture_image

    from pointseg import Segmenter
    from pointseg.decision import committee_disagreement, fit_committee

    n = args.size
    images = [two_texture_image(n, n, seed=s) for s in range(3)]
    seg = Segmenter(cross_validate=False)
    fmaps = [seg.extract_features(im) for im, _ in images]
    points = [points_from_truth(truth, per_class=7, seed=s)[:20] for s, (_, truth) in enumerate(images)]
    seg.fit(fmaps, points)
    new = seg.extract_features(two_texture_image(n, n, seed=9)[0])
    big = seg.extract_features(two_texture_image(2 * n, 2 * n, seed=10)[0])
    committee = fit_committee(seg, fmaps, points)
    rows = {}
    for _ in range(args.repeat):
        for name, fn in (("committee fit (4 refits, once per model)", lambda: fit_committee(seg, fmaps, points)),
                         (f"uncertainty: one prediction, {n}²", lambda: seg.predict_full(new, probabilities=False)),
                         (f"committee: score one image, {n}²", lambda: committee_disagreement(committee, new)),
                         (f"uncertainty: one prediction, {2 * n}²", lambda: seg.predict_full(big, probabilities=False)),
                         (f"committee: score one image, {2 * n}²", lambda: committee_disagreement(committee, big))):
            rows[name] = min(rows.get(name, np.inf), 1000 * timed(fn, repeat=1, warmup=0))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}, "
          f"python bench/bench_ranking_cost.py --repeat {args.repeat} --size {n}")
    print("| step | ms |\n|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.0f} |")


if __name__ == "__main__":
    main()

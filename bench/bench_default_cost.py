"""What the accuracy work (hybrid features + score smoothing) costs, against its own baselines in one run.

    python bench/bench_default_cost.py           # ~2 min on 2 cores

Issue-5 budget: feature extraction per megapixel at most 1.5x the default backbone alone, and click → new
prediction of a 1-megapixel image with cached features under 100 ms in the library. Measured here:

* extraction ms/MP of the default backbone's deep map alone, of the low-level filter bank, and of the default
  configuration (both), with the ratio; the former default (Lite2, deep) and the seed (ResNet-18) for reference;
* the interactive step: ``fit`` on 300 points spread over three cached 1-MP images, then ``predict`` of one of
  them, for the default configuration and for the seed preset's head on the same kind of map.

Times are the best of --repeat runs (load from other jobs only adds time). Extraction is timed as
``FeatureExtractor.compute_parts``, what ``extract`` runs: a stride-32 context map stays at stride 32.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from _common import RESNET18_WEIGHTS, header, md_table, save_md, test_image, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()

    from pointseg import FeatureCache, Segmenter
    from pointseg.features import FeatureExtractor
    from pointseg.filters import low_level_features
    from pointseg.presets import preset_params

    size = args.size
    mp = size * size / 1e6
    images = [test_image(size, size, seed=i) for i in range(3)]
    image = images[0]
    default = preset_params("default")
    ms = lambda seconds: seconds * 1000 / mp

    deep = FeatureExtractor(default["backbone"], features="deep")
    deep_s = timed(lambda: deep.compute_parts(image), repeat=args.repeat, best=True)
    filters_s = timed(lambda: low_level_features(image), repeat=args.repeat, best=True)
    rows = [[f"{default['backbone']} deep map alone (baseline)", f"{ms(deep_s):.0f}", "1.00"],
            ["low-level filter bank", f"{ms(filters_s):.0f}", f"{filters_s / deep_s:.2f}"],
            [f"default: {default['backbone']} + filters", f"{ms(deep_s + filters_s):.0f}",
             f"**{(deep_s + filters_s) / deep_s:.2f}**"]]
    lite0 = FeatureExtractor("efficientnet_lite0", features="deep")
    lite0_s = timed(lambda: lite0.compute_parts(image), repeat=args.repeat, best=True)
    rows.append(["efficientnet_lite0 deep, strides 4/8/16 (previous default)", f"{ms(lite0_s):.0f}",
                 f"{lite0_s / deep_s:.2f}"])
    lite2 = FeatureExtractor("efficientnet_lite2", features="deep")
    lite2_s = timed(lambda: lite2.compute_parts(image), repeat=args.repeat, best=True)
    rows.append(["efficientnet_lite2 deep (first default)", f"{ms(lite2_s):.0f}", f"{lite2_s / deep_s:.2f}"])
    if RESNET18_WEIGHTS.is_file():
        seed = FeatureExtractor("resnet18", RESNET18_WEIGHTS, features="deep")
        seed_s = timed(lambda: seed.compute_parts(image), repeat=args.repeat, best=True)
        rows.append(["resnet18 deep (seed preset)", f"{ms(seed_s):.0f}", f"{seed_s / deep_s:.2f}"])
    extraction = md_table(["features", "ms per megapixel", "× default backbone alone"], rows)

    rng = np.random.default_rng(0)
    points = [np.column_stack([rng.uniform(0, size - 1, 100), rng.uniform(0, size - 1, 100),
                               rng.integers(0, 2, 100)]) for _ in images]
    step_rows = []
    configs = [("default", Segmenter(classes=["normal", "defect"], cache=FeatureCache(), cross_validate=False))]
    configs.append((f"{default['backbone']} deep, no smoothing",
                    Segmenter(default["backbone"], ["normal", "defect"], features="deep", smoothing=0,
                              cache=FeatureCache(), cross_validate=False)))
    for name, seg in configs:
        fmaps = [seg.extract_features(im) for im in images]
        seg.fit(fmaps, points)
        fit_s = timed(lambda: seg.fit(fmaps, points), repeat=args.repeat, best=True)
        predict_s = timed(lambda: seg.predict(fmaps[0]), repeat=args.repeat, best=True)
        step_rows.append([name, f"{fit_s * 1000:.1f}", f"{predict_s * 1000:.1f}", f"**{(fit_s + predict_s) * 1000:.1f}**"])
    step = md_table(["configuration", "fit, 300 points on 3 images (ms)", f"predict {size}×{size} (ms)",
                     "click → new prediction (ms)"], step_rows)
    text = "\n\n".join([header("bench_default_cost.py", sys.argv[1:]), extraction, step])
    print(text)
    save_md("default_cost", text)


if __name__ == "__main__":
    main()

"""Feature extraction speed per backbone: fp32 vs bf16 + channels-last, tiled vs whole, and what bf16 costs
in accuracy.

    python bench/bench_features.py                  # ~10 min on 2 cores (accuracy part included)
    python bench/bench_features.py --no-accuracy    # timings only, ~3 min

Timings: best of --repeat runs after one warm-up (load from other jobs only adds time), fp32 and bf16
interleaved so machine noise hits both alike. Uses the core's FeatureExtractor (no cache).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from _common import RESNET18_WEIGHTS, SHARED, header, md_table, save_md, test_image, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+",
                    default=["efficientnet_lite0_s32", "efficientnet_lite0", "efficientnet_lite2", "resnet18", "resnet34", "resnet50"])
    ap.add_argument("--size", type=int, default=1024, help="square test image side for the fp32/bf16 timing")
    ap.add_argument("--tiled-size", type=int, default=2048, help="square image side for tiled vs whole")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate fp32 vs bf16 with the harness on two dev sets")
    args = ap.parse_args()

    from pointseg.errors import PointsegError
    from pointseg.features import FeatureExtractor, cpu_has_native_bf16

    img = test_image(args.size, args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    rows, skipped, usable = [], [], []
    print(f"native bf16: {cpu_has_native_bf16()}; image {args.size}x{args.size} ({mp:.2f} MP)")
    for bb in args.backbones:
        weights = str(RESNET18_WEIGHTS) if bb == "resnet18" else None
        try:
            ext = {p: FeatureExtractor(bb, weights, precision=p, tile_size=4096) for p in ("fp32", "bf16")}
        except PointsegError as exc:
            skipped.append(f"{bb}: {exc}")
            continue
        usable.append(bb)
        times = {"fp32": [], "bf16": []}
        for p in ("fp32", "bf16"):
            ext[p].compute(img)                                   # warm-up
        for _ in range(args.repeat):
            for p in ("fp32", "bf16"):
                times[p].append(timed(lambda: ext[p].compute_parts(img), repeat=1, warmup=0))
        f32, f16 = ext["fp32"].compute(img), ext["bf16"].compute(img)
        rel = float(np.linalg.norm(f16 - f32) / np.linalg.norm(f32))
        t32, t16 = min(times["fp32"]), min(times["bf16"])
        rows.append([bb, ext["fp32"].channels, f"{1000 * t32 / mp:.0f}", f"{1000 * t16 / mp:.0f}",
                     f"{t32 / t16:.2f}×", f"{rel:.4f}"])
        print(rows[-1], flush=True)
        del ext
    out = [f"#### Feature extraction, {args.size}×{args.size} image (best of {args.repeat})\n",
           md_table(["backbone", "channels", "fp32 ms/MP", "bf16+channels-last ms/MP", "speed-up",
                     "relative feature difference ‖bf16−fp32‖/‖fp32‖"], rows)]
    if skipped:
        out.append("\nSkipped (weights not on this machine): " + ", ".join(s.split(":")[0] for s in skipped))

    # tiled vs whole: the same extractor settings, tile_size 1024 (+ receptive-field margin) vs one pass
    big = test_image(args.tiled_size, args.tiled_size, seed=1)
    bmp = big.shape[0] * big.shape[1] / 1e6
    trows = []
    for bb in [b for b in ("efficientnet_lite0_s32", "efficientnet_lite0", "resnet18") if b in usable]:
        weights = str(RESNET18_WEIGHTS) if bb == "resnet18" else None
        tiled = FeatureExtractor(bb, weights, precision="auto", tile_size=1024)
        whole = FeatureExtractor(bb, weights, precision="auto", tile_size=8192)
        tiled.compute(big), whole.compute(big)                    # warm-up
        tt = tw = float("inf")
        for _ in range(args.repeat):                              # interleaved, best of
            tt = min(tt, timed(lambda: tiled.compute(big), repeat=1, warmup=0))
            tw = min(tw, timed(lambda: whole.compute(big), repeat=1, warmup=0))
        a, b = tiled.compute(big), whole.compute(big)
        diff = float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
        n_tiles = sum(1 for _ in tiled.iter_tiles(big))
        trows.append([bb, tiled.precision, f"{1000 * tw / bmp:.0f}", f"{1000 * tt / bmp:.0f} ({n_tiles} tiles)",
                      f"{tt / tw:.2f}×", f"{diff:.2e}"])
        print(trows[-1], flush=True)
    out += [f"\n#### Tiled vs whole, {args.tiled_size}×{args.tiled_size} image ({bmp:.1f} MP)\n",
            md_table(["backbone", "precision", "whole ms/MP", "tiled (1024 + margin) ms/MP", "tiled / whole",
                      "max |tiled − whole| / max |whole|"], trows)]

    text = header("bench_features.py", sys.argv[1:]) + "\n\n" + "\n".join(out) + "\n"
    print(text)
    print(f"saved {save_md('features', text)}")
    if args.accuracy:   # a separate result: it does not depend on the machine's load
        acc = accuracy_part([b for b in ("efficientnet_lite0_s32", "resnet18") if b in usable])
        text = header("bench_features.py", sys.argv[1:]) + "\n" + acc + "\n"
        print(text)
        print(f"saved {save_md('features_accuracy', text)}")


def accuracy_part(backbones: list[str]) -> str:
    """fp32 vs bf16 through the evaluation harness: same clicks, same images, only precision differs."""
    from pointseg import FeatureCache
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    cfg = EvalConfig(protocols=("random",), seeds=(0, 1), train_images=3, test=10, clicks=(5, 10))
    rows = []
    for name in ("magnetic_tile", "crackforest"):
        root = SHARED / "datasets" / name
        if not root.is_dir():
            continue
        ds = load_dataset(root)
        for bb in backbones:
            cache = FeatureCache(max_bytes=2_000_000_000)
            specs = [f"{bb}:precision='fp32'@fp32", f"{bb}:precision='bf16'@bf16"]
            methods = [build_method(s, ds.classes, weights=str(RESNET18_WEIGHTS), cache=cache) for s in specs]
            res = evaluate(ds, methods, cfg)
            s = res["summary"]["random"]
            for n in ("5", "10"):
                a = s["fp32"]["transfer"][n]
                b = s["bf16"]["transfer"][n]
                ai = s["fp32"]["interactive"][n]
                bi = s["bf16"]["interactive"][n]
                rows.append([name, bb, n, f"{ai['miou']['mean']:.4f} / {bi['miou']['mean']:.4f}",
                             f"{bi['miou']['mean'] - ai['miou']['mean']:+.4f}",
                             f"{a['miou']['mean']:.4f} / {b['miou']['mean']:.4f}",
                             f"{b['miou']['mean'] - a['miou']['mean']:+.4f}"])
                print(rows[-1], flush=True)
    return ("\n#### bf16 vs fp32 accuracy (harness, random clicks, 3 training images, 10 held-out, seeds 0-1)\n\n"
            + md_table(["dataset", "backbone", "clicks/class", "interactive mIoU fp32 / bf16", "Δ",
                        "transfer mIoU fp32 / bf16", "Δ"], rows))


if __name__ == "__main__":
    main()

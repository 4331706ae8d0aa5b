"""Feature engines and the exported whole model, per engine × precision, interleaved in one run.

    python bench/bench_engines.py [--size 1024] [--reps 3] [--backbones efficientnet_lite0_s32,...] [--whole]

Prints ms/MP of feature extraction per backbone × engine × precision (best of --reps, engines interleaved
within each repetition so machine noise hits them alike), the relative RMS difference of the features to
torch fp32, and the fraction of the physical reference reached (issue 15: ~16 GFLOP/MP for the default trunk;
2 Zen 4 cores ≈ 200 GFLOP/s fp32, 400 GFLOP/s bf16). With --whole: the exported model's predict ms/MP per
runtime with label agreement against the torch fp32 path.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PEAK = {"fp32": 200.0, "bf16": 400.0}  # GFLOP/s, 2 Zen 4 cores (issue 15)
GFLOP_PER_MP = 16.0  # efficientnet_lite0_s32 (issue 15)


def _image(size: int) -> np.ndarray:
    from pointseg.deploy.export import check_image

    tile = check_image()
    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:size, :size])


def _rel(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def feature_table(backbones, size: int, reps: int) -> None:
    from pointseg.engines import runtime_installed
    from pointseg.features import FeatureExtractor

    image = _image(size)
    mp = size * size / 1e6
    configs = [("torch", "fp32"), ("torch", "bf16")]
    configs += [("openvino", p) for p in ("fp32", "bf16") if runtime_installed("openvino")]
    configs += [("onnxruntime", "fp32")] if runtime_installed("onnxruntime") else []
    print(f"\n## feature extraction, {size}x{size}, best of {reps} (interleaved)\n")
    print("| backbone | engine | precision | ms/MP | rel. RMS diff to torch fp32 | GFLOP/s (share of peak) |")
    print("|---|---|---|---:|---:|---:|")
    for backbone in backbones:
        weights = None
        if backbone.startswith("resnet"):
            from synthetic import RESNET18_TRUNK

            if backbone != "resnet18" or not RESNET18_TRUNK.is_file():
                print(f"| {backbone} | - | - | skipped: weights not here | | |")
                continue
            weights = RESNET18_TRUNK
        exts = {c: FeatureExtractor(backbone, weights, precision=c[1], engine=c[0], tile_size=4096) for c in configs}
        outs, best = {}, {c: float("inf") for c in configs}
        for c, ext in exts.items():  # warm-up: exports, compiles, first-shape costs
            outs[c] = np.concatenate([p.reshape(p.shape[0], -1) for p in ext.compute_parts(image) if p is not None], 1)
        for _ in range(reps):
            for c, ext in exts.items():
                t = time.perf_counter()
                ext.compute_parts(image)
                best[c] = min(best[c], time.perf_counter() - t)
        ref = outs[("torch", "fp32")]
        for c in configs:
            ms = best[c] * 1e3 / mp
            gflops = GFLOP_PER_MP / (ms / 1e3) if backbone == "efficientnet_lite0_s32" else float("nan")
            share = f"{gflops:.0f} ({gflops / PEAK[c[1]]:.0%})" if gflops == gflops else "-"
            print(f"| {backbone} | {c[0]} | {c[1]} | {ms:.0f} | {_rel(outs[c], ref):.2g} | {share} |")


def whole_model_table(size: int, reps: int) -> None:
    from modelkit import train_small_model

    from pointseg.deploy.export import export_model
    from pointseg.deploy.runtime import Runner
    from pointseg.engines import forced_engine, runtime_installed
    from pointseg.segmenter import Segmenter

    image = _image(size)
    mp = size * size / 1e6
    with tempfile.TemporaryDirectory() as tmp, forced_engine("torch"):
        model = train_small_model(Path(tmp) / "m.pointseg", "efficientnet_lite0_s32")
        export_model(model, Path(tmp) / "m.onnx")
        ref_seg = Segmenter.load(model, precision="fp32")
        auto_seg = Segmenter.load(model, precision="bf16")
        runners = {e: Runner(Path(tmp) / "m.onnx", engine=e) for e in ("openvino", "onnxruntime") if runtime_installed(e)}
        ref = ref_seg.predict(image)
        cands = {"torch fp32": lambda: ref_seg.predict(image), "torch bf16": lambda: auto_seg.predict(image)}
        cands.update({f"{e} fp32 (graph)": (lambda r=r: r.predict(image).labels) for e, r in runners.items()})
        labels = {k: f() for k, f in cands.items()}
        best = {k: float("inf") for k in cands}
        for _ in range(reps):
            for k, f in cands.items():
                t = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t)
    print(f"\n## whole-model predict, {size}x{size}, best of {reps} (interleaved)\n")
    print("| path | ms/MP | labels equal to torch fp32 |")
    print("|---|---:|---:|")
    for k in cands:
        print(f"| {k} | {best[k] * 1e3 / mp:.0f} | {(labels[k] == ref).mean():.4%} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backbones", default="efficientnet_lite0_s32")
    parser.add_argument("--whole", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("POINTSEG_ENGINE_CACHE", str(Path(tempfile.gettempdir()) / "pointseg-bench-engines"))
    import platform

    print(f"# bench_engines {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {' '.join(sys.argv)}")
    feature_table(args.backbones.split(","), args.size, args.reps)
    if args.whole:
        whole_model_table(args.size, args.reps)


if __name__ == "__main__":
    main()

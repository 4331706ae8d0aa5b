"""Feature engines and the exported whole model, per engine × precision, interleaved in one run.

    python bench/bench_engines.py [--size 1024] [--reps 3] [--backbones efficientnet_lite0_s32,...] [--whole]

Prints ms/MP of feature extraction per backbone × engine × precision (best of --reps, engines interleaved
within each repetition so machine noise hits them alike), the relative RMS difference of the features to
torch fp32, and the fraction of the physical reference reached (issue 15: ~16 GFLOP/MP for the default trunk;
2 Zen 4 cores ≈ 200 GFLOP/s fp32, 400 GFLOP/s bf16). With --whole: the exported model's predict ms/MP per
runtime with label agreement against the torch fp32 path. With --harness DATASETS: the default method's
mIoU through the evaluation harness per engine × precision and its difference to torch fp32.
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
            outs[c] = np.concatenate([p.ravel() for p in ext.compute_parts(image) if p is not None])
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


def harness_table(datasets: list[str], seeds: tuple[int, ...], clicks: tuple[int, ...], test: int) -> None:
    """mIoU of the default method through the evaluation harness, once per engine × precision (same clicks,
    same images; only what runs the backbone differs), and its difference to torch fp32."""
    from pointseg import FeatureCache
    from pointseg.engines import forced_engine, runtime_installed
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    configs = [("torch", "fp32"), ("torch", "bf16")]
    configs += [("openvino", p) for p in ("fp32", "bf16") if runtime_installed("openvino")]
    configs += [("onnxruntime", "fp32")] if runtime_installed("onnxruntime") else []
    cfg = EvalConfig(protocols=("random",), seeds=seeds, train_images=3, test=test, clicks=clicks)
    print(f"\n## default method through the harness per engine (random clicks, 3 training images, {test} held-out, "
          f"seeds {','.join(map(str, seeds))})\n")
    print("| dataset | clicks/class | engine | precision | interactive mIoU (± sd over seeds) | Δ | "
          "transfer mIoU (± sd) | Δ |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for name in datasets:
        root = shared / name
        if not root.is_dir():
            print(f"| {name} | - | - | - | skipped: not in ../shared | | | |")
            continue
        ds = load_dataset(root)
        cache = FeatureCache(max_bytes=1_000_000_000)  # keys name engine and precision: no sharing across them
        methods = []
        for engine, precision in configs:
            with forced_engine(engine):  # the extractor resolves engine="auto" when it is built, here
                methods.append(build_method(f"default:precision='{precision}'@{engine}-{precision}", ds.classes,
                                            cache=cache))
        summary = evaluate(ds, methods, cfg)["summary"]["random"]
        for n in map(str, clicks):
            ref = summary["torch-fp32"]
            for engine, precision in configs:
                row = summary[f"{engine}-{precision}"]
                cells = []
                for part in ("interactive", "transfer"):
                    m, r = row[part][n]["miou"], ref[part][n]["miou"]
                    cells += [f"{m['mean']:.4f} ± {m.get('std', 0):.4f}", f"{m['mean'] - r['mean']:+.4f}"]
                print(f"| {name} | {n} | {engine} | {precision} | " + " | ".join(cells) + " |", flush=True)


def whole_model_table(size: int, reps: int) -> None:
    from modelkit import train_small_model

    from pointseg.deploy.export import export_model
    from pointseg.deploy.runtime import Runner
    from pointseg.engines import forced_engine, runtime_installed
    from pointseg.features import FeatureCache
    from pointseg.segmenter import Segmenter

    image = _image(size)
    mp = size * size / 1e6
    tmp = tempfile.mkdtemp()
    with forced_engine("torch"):
        model = train_small_model(Path(tmp) / "m.pointseg", "efficientnet_lite0_s32")
        export_model(model, Path(tmp) / "m.onnx")
        nocache = FeatureCache(max_bytes=0)  # every pass computes its features: no cache hits in the timings
        ref_seg = Segmenter.load(model, precision="fp32", cache=nocache)
        torch_bf16 = Segmenter.load(model, precision="bf16", cache=nocache)
    auto = {p: Segmenter.load(model, precision=p, cache=nocache) for p in ("fp32", "bf16")}  # engine auto
    with forced_engine("torch"):
        runners = {e: Runner(Path(tmp) / "m.onnx", engine=e) for e in ("openvino", "onnxruntime") if runtime_installed(e)}
        ref = ref_seg.predict(image)
        cands = {"library, torch fp32": lambda: ref_seg.predict(image),
                 "library, torch bf16": lambda: torch_bf16.predict(image)}
        cands.update({f"library, trunk on {auto[p].extractor.engine} {p}": (lambda p=p: auto[p].predict(image))
                      for p in auto})
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


def shape_table(size: int, reps: int) -> None:
    """OpenVINO: one dynamic-shape compile vs a compile per padded tile shape (static)."""
    import openvino as ov

    from pointseg.backbones import build_backbone
    from pointseg.engines.trunk import EngineTrunk

    trunk, spec, _, sha = build_backbone("efficientnet_lite0_s32")
    path = EngineTrunk(trunk, spec, sha, "openvino", "bf16")._graph("base")
    core = ov.Core()  # no CACHE_DIR: compile times are real
    x = np.random.rand(1, 3, size, size).astype(np.float32)
    print(f"\n## OpenVINO dynamic vs static shapes (trunk before the context tail, {size}x{size}, bf16)\n")
    print("| shapes | compile ms | best run ms |")
    print("|---|---:|---:|")
    rows = {}
    for kind in ("dynamic", "static"):
        model = core.read_model(str(path))
        if kind == "static":
            model.reshape({model.inputs[0].get_any_name(): [1, 3, size, size]})
        t = time.perf_counter()
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        rows[kind] = [(time.perf_counter() - t) * 1e3, float("inf"), compiled.create_infer_request()]
    rows["dynamic"][2].infer({0: x})
    rows["static"][2].infer({0: x})
    for _ in range(reps):
        for kind, row in rows.items():
            t = time.perf_counter()
            row[2].infer({0: x})
            row[1] = min(row[1], (time.perf_counter() - t) * 1e3)
    for kind, (compile_ms, run_ms, _) in rows.items():
        print(f"| {kind} | {compile_ms:.0f} | {run_ms:.0f} |")


def cli_and_service_table(n_images: int, side: int) -> None:
    """`pointseg predict` folder throughput per engine, and serve-model images/s, p50/p95 with 1 and 4 clients."""
    import io
    import socket
    import subprocess
    import threading

    import httpx
    from PIL import Image
    from typer.testing import CliRunner

    from modelkit import train_small_model
    from pointseg.cli import app
    from pointseg.deploy.export import cached_graph
    from pointseg.engines import forced_engine

    tmp = Path(tempfile.mkdtemp())
    with forced_engine("torch"):
        model = train_small_model(tmp / "m.pointseg", "efficientnet_lite0_s32")
    graph = cached_graph(model)
    big = _image(max(side * 2, 1024))
    (tmp / "in").mkdir()
    for i in range(n_images):
        y, x = (i * 37) % (big.shape[0] - side), (i * 53) % (big.shape[1] - side)
        Image.fromarray(big[y:y + side, x:x + side]).save(tmp / "in" / f"{i:03d}.png")
    print(f"\n## `pointseg predict` folder throughput ({n_images} images {side}x{side}, in-process, model exported "
          "beforehand)\n")
    print("| --engine | images/s |")
    print("|---|---:|")
    for engine in (None, "torch", "onnxruntime", "openvino"):
        args = ["predict", str(model), str(tmp / "in"), "-o", str(tmp / f"out-{engine}")]
        args += ["--engine", engine] if engine else []
        t = time.perf_counter()
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        label = engine or "(default: library, trunk on the auto engine)"
        print(f"| {label} | {n_images / (time.perf_counter() - t):.2f} |")
    pngs = [(tmp / "in" / f"{i:03d}.png").read_bytes() for i in range(n_images)]
    print(f"\n## serve-model on loopback ({side}x{side} PNGs, {n_images} requests per run)\n")
    print("| engine | clients | images/s | p50 ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for engine in ("onnxruntime", "openvino"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ}
        proc = subprocess.Popen([sys.executable, "-m", "pointseg.cli", "serve-model", str(graph), "--port", str(port),
                                 "--engine", engine, "--queue", "16"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(url + "/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            httpx.post(url + "/predict", content=pngs[0], timeout=120)
            for clients in (1, 4):
                latencies: list[float] = []
                todo = list(range(n_images))
                lock = threading.Lock()

                def client():
                    while True:
                        with lock:
                            if not todo:
                                return
                            i = todo.pop()
                        t = time.perf_counter()
                        r = httpx.post(url + "/predict", content=pngs[i], timeout=300)
                        assert r.status_code == 200, r.text
                        latencies.append(time.perf_counter() - t)
                t0 = time.perf_counter()
                threads = [threading.Thread(target=client) for _ in range(clients)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                wall = time.perf_counter() - t0
                p50, p95 = np.percentile(latencies, [50, 95]) * 1e3
                print(f"| {engine} | {clients} | {n_images / wall:.2f} | {p50:.0f} | {p95:.0f} |")
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backbones", default="efficientnet_lite0_s32")
    parser.add_argument("--whole", action="store_true", help="also the whole-model predict table")
    parser.add_argument("--shapes", action="store_true", help="also OpenVINO dynamic vs static shapes")
    parser.add_argument("--serve", type=int, default=0, metavar="N",
                        help="also `pointseg predict` folder and service throughput over N images")
    parser.add_argument("--serve-side", type=int, default=512)
    parser.add_argument("--harness", default="", metavar="DATASETS",
                        help="also the default method's mIoU per engine through the evaluation harness on these "
                             "../shared datasets (comma-separated, e.g. crackforest,magnetic_tile)")
    parser.add_argument("--harness-seeds", default="0,1")
    parser.add_argument("--harness-clicks", default="5")
    parser.add_argument("--harness-test", type=int, default=10, help="held-out images per seed")
    args = parser.parse_args()
    os.environ.setdefault("POINTSEG_ENGINE_CACHE", str(Path(tempfile.gettempdir()) / "pointseg-bench-engines"))
    import platform

    print(f"# bench_engines {time.strftime('%Y-%m-%d %H:%M')} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {' '.join(sys.argv)}")
    if args.backbones:
        feature_table(args.backbones.split(","), args.size, args.reps)
    if args.shapes:
        shape_table(args.size, args.reps)
    if args.whole:
        whole_model_table(args.size, args.reps)
    if args.serve:
        cli_and_service_table(args.serve, args.serve_side)
    if args.harness:
        harness_table(args.harness.split(","), tuple(int(v) for v in args.harness_seeds.split(",")),
                      tuple(int(v) for v in args.harness_clicks.split(",")), args.harness_test)


if __name__ == "__main__":
    main()

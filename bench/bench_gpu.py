"""GPU figures (issue 11): feature extraction ms/MP in fp32/bf16/fp16 with CUDA torch, and the exported
graph on onnxruntime's CUDA provider when installed. Without a GPU it prints why and exits 0.

    python bench/bench_gpu.py [--size 2048] [--reps 5]
"""
from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: skipped - no CUDA GPU visible to torch on this machine (torch "
              f"{torch.__version__}); the CUDA code paths stay, run this where a GPU is present")
        return 0
    import numpy as np

    from pointseg.backbones import build_backbone

    trunk, spec, _, _ = build_backbone("efficientnet_lite0_s32")
    trunk = trunk.cuda().eval()
    x = torch.randn(1, 3, args.size, args.size, device="cuda")
    mp = args.size * args.size / 1e6
    print(f"# bench_gpu {torch.cuda.get_device_name(0)}, {args.size}x{args.size}")
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        times = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(args.reps + 1):
                torch.cuda.synchronize()
                t = time.perf_counter()
                trunk(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        print(f"torch cuda {name}: {min(times[1:]) * 1e3 / mp:.1f} ms/MP")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime: not installed")
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("onnxruntime CUDA provider: not installed (pip install onnxruntime-gpu)")
        return 0
    import tempfile
    from pathlib import Path

    from pointseg.engines.sessions import open_session
    from pointseg.engines.trunk import EngineTrunk

    with tempfile.TemporaryDirectory():
        engine = EngineTrunk(trunk.cpu(), spec, "gpu-bench", "onnxruntime", "fp32")
        session = open_session(engine._graph("base"), "onnxruntime", "fp32")
        a = np.random.rand(1, 3, args.size, args.size).astype(np.float32)
        times = []
        for _ in range(args.reps + 1):
            t = time.perf_counter()
            session.run({"x": a})
            times.append(time.perf_counter() - t)
        print(f"onnxruntime {session.providers[0]}: {min(times[1:]) * 1e3 / mp:.1f} ms/MP (trunk before the context)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the bench scripts: machine description, timing, test images, Markdown tables."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
RESNET18_WEIGHTS = SHARED / "weights" / "resnet18-imagenet-trunk" / "resnet18-trunk-tvlayout.pth"
RESULTS = REPO / "bench" / "results"
FIGURES = REPO / "bench" / "figures"


def machine() -> str:
    cpu, flags = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    extra = " AVX-512-bf16" if "avx512_bf16" in flags else ""
    extra += " AMX" if "amx_bf16" in flags else ""
    import torch

    return (f"{cpu}{extra}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def header(script: str, argv: list[str]) -> str:
    run = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    commit = run("rev-parse", "--short", "HEAD")
    dirty = run("status", "--porcelain", "--", "src/pointseg", ":!src/pointseg/server")
    load = os.getloadavg()[0]
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {machine()} · load average {load:.1f} at start · "
            f"commit {commit}{' + uncommitted changes' if dirty else ''} · "
            f"`python bench/{script} {' '.join(argv)}`".rstrip())


def timed(fn, repeat: int = 3, warmup: int = 1, best: bool = False) -> float:
    """Median (or with ``best``, the minimum) wall time of ``fn()`` in seconds over ``repeat`` runs after
    ``warmup`` runs. The minimum is the better estimate of the cost itself on a machine shared with other
    jobs: load only ever adds time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if best else statistics.median(times)


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A real-texture RGB image of the given size: shared dataset images tiled side by side (or a smooth
    random image when ../shared is absent)."""
    from PIL import Image

    files = sorted((SHARED / "datasets" / "crackforest" / "images").glob("*.jpg"))
    if not files:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    out = np.zeros((height, width, 3), np.uint8)
    i = 0
    for y in range(0, height, 320):
        for x in range(0, width, 480):
            with Image.open(files[i % len(files)]) as im:
                tile = np.asarray(im.convert("RGB"))
            h, w = min(320, height - y), min(480, width - x)
            out[y:y + h, x:x + w] = tile[:h, :w]
            i += 1
    return out


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def save_md(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path


def append_jsonl(name: str, row: dict) -> str:
    """Print ``row`` as one JSON line and append it to ``bench/results/NAME.jsonl`` (runs accumulate, so
    seeds run apart can be merged later); returns the line."""
    import json

    line = json.dumps(row)
    print(line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as handle:
        handle.write(line + "\n")
    return line

"""Accuracy benchmark: `pointseg evaluate` on the four ../shared datasets, both protocols, every method.

Runs the same code as ``pointseg evaluate`` (one process, one FeatureCache per dataset), writes per dataset
JSON + CSV under bench/results/ and a small PNG (mIoU and defect IoU against clicks) under bench/figures/,
and prints Markdown tables for BENCHMARKS.md (also saved as bench/results/accuracy.md).

    python bench/accuracy.py                       # everything below, ~30-60 min on 2 cores
    python bench/accuracy.py --datasets neu_seg --seeds 0 --test 5    # a quick look
    python bench/accuracy.py --methods 'default:context_upscale="size"@default' 'default:context_upscale=1@default-ctx1' seed

Each dataset's section also logs the context factor every Segmenter method fitted per seed
(``context_upscale_``: ``"size"`` enlarges small images' context ×4) and the per-seed transfer defect IoU
behind the headline's first table.

The equivalent single command per dataset is printed in the Markdown (``pointseg evaluate ...``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
DATASETS = ("magnetic_tile", "kolektorsdd", "neu_seg", "crackforest")
WEIGHTS = SHARED / "weights" / "resnet18-imagenet-trunk" / "resnet18-trunk-tvlayout.pth"
METHODS = ("default", "seed", "skimage-rf", "efficientnet_lite0@lite0-hybrid")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def git_commit() -> str:
    """Short HEAD hash, marked when src/ has uncommitted changes (the numbers then come from those)."""
    run = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    dirty = run("status", "--porcelain", "--", "src/pointseg", ":!src/pointseg/server")
    return run("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS),
                    help="method specs, as for pointseg evaluate -m (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--train-images", type=int, default=3)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--clicks", default="2,5,10,20")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--transfer-at", default="5,10,20")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--figures", type=Path, default=REPO / "bench" / "figures")
    ap.add_argument("--render-only", action="store_true",
                    help="no evaluation: rebuild the Markdown and plots from the JSON files of an earlier run")
    args = ap.parse_args()

    from pointseg import FeatureCache
    from pointseg.evaluation.command import _ints
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method, parse_method_spec
    from pointseg.evaluation.report import markdown_tables, plot_curves, print_tables, write_csv, write_json
    from pointseg.evaluation.runner import EvalConfig, evaluate

    args.out.mkdir(parents=True, exist_ok=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    config = EvalConfig(
        seeds=_ints(args.seeds, "--seeds"), train_images=args.train_images, test=args.test,
        clicks=_ints(args.clicks, "--clicks"), budget=args.budget,
        transfer_at=_ints(args.transfer_at, "--transfer-at"),
    )
    run_line = (f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}, "
                f"load average {os.getloadavg()[0]:.1f} at start, commit {git_commit()}; "
                f"`python bench/accuracy.py {' '.join(sys.argv[1:])}`".rstrip())
    if args.render_only:
        previous = args.out / "accuracy.md"
        run_line = previous.read_text().splitlines()[0] if previous.is_file() else "(run line not recorded)"
    md = [run_line + "\n"]
    runs_seen: dict[str, list[str]] = {}
    headline = []
    for name in args.datasets:
        root = SHARED / "datasets" / name
        if args.render_only:
            path = args.out / f"{name}.json"
            if not path.is_file():
                print(f"skip {name}: no {path}")
                continue
            results = json.loads(path.read_text())
            runs_seen.setdefault(results.get("run", {}).get("line", run_line), []).append(name)
            elapsed = sum(t["wall_s"] for t in results["timings"].values())
        else:
            if not root.is_dir():
                print(f"skip {name}: {root} not found")
                continue
            dataset = load_dataset(root)
            cache = FeatureCache(max_bytes=3_000_000_000)
            methods = [build_method(parse_method_spec(m), dataset.classes, weights=str(WEIGHTS), cache=cache)
                       for m in args.methods]
            factors = {m.name: _record_context_factors(m) for m in methods}
            t0 = time.perf_counter()
            results = evaluate(dataset, methods, config,
                               on_progress=lambda n, d: print(f"  {d}", end="\r", flush=True) if n == 0 else None)
            elapsed = time.perf_counter() - t0
            results["run"] = {"line": run_line}
            results["context_upscale"] = {name: {str(seed): sorted(fs) for seed, fs in sorted(by_seed.items())}
                                          for name, by_seed in factors.items() if by_seed}
            print()
            print_tables(results)
            write_json(results, args.out / f"{name}.json")
            write_csv(results, args.out / f"{name}.csv")
        plot_curves(results, args.figures / f"accuracy_{name}.png")
        plot_curves(results, args.figures / f"accuracy_{name}_defect.png", metric="fg_iou")
        cfg = results["config"]
        cmd = (f"pointseg evaluate ../shared/datasets/{name} "
               + " ".join(f"-m {m}" for m in _method_args(results))
               + " --weights ../shared/weights/resnet18-imagenet-trunk/resnet18-trunk-tvlayout.pth"
               + f" --seeds {_join(cfg['seeds'])} --train-images {cfg['train_images']} --test {cfg['test']}"
               + f" --clicks {_join(cfg['clicks'])} --budget {cfg['budget']} --transfer-at {_join(cfg['transfer_at'])}"
               + f" --json {name}.json --plot {name}.png")
        classes = results["dataset"]["classes"]
        md.append(f"### {name}\n")
        md.append(f"Classes {', '.join(classes)}; {results['dataset']['n_images']} images; "
                  f"{elapsed / 60:.1f} min for all methods. Equivalent command:\n")
        md.append(f"```\n{cmd}\n```\n")
        md.append(markdown_tables(results))
        md.append(_per_seed_lines(results))
        md.append(f"![{name}: mIoU against clicks](bench/figures/accuracy_{name}.png)\n")
        md.append(f"![{name}: defect IoU against clicks](bench/figures/accuracy_{name}_defect.png)\n")
        headline.append(_headline(name, results))
    if runs_seen:   # --render-only: say which run produced which dataset
        md[0] = "".join(f"{line} ({', '.join(names)})\n\n" for line, names in runs_seen.items())
    md.insert(1, _headline_table(headline))
    text = "\n".join(md)
    (args.out / "accuracy.md").write_text(text)
    print(text)


def _record_context_factors(method) -> dict:
    """Wrap a Segmenter method's ``fit`` to collect, per seed, the context factors its fits ended with
    (``context_upscale_``; a seed's fits share their training images, so one factor per seed is expected)."""
    by_seed: dict = {}
    segmenter = getattr(method, "segmenter", None)
    if segmenter is None:
        return by_seed
    fit = method.fit

    def recording_fit(images, points, keys, seed=0):
        fit(images, points, keys, seed=seed)
        factor = getattr(segmenter, "context_upscale_", segmenter.get_params().get("context_upscale", 1))
        by_seed.setdefault(seed, set()).add(int(factor))

    method.fit = recording_fit
    return by_seed


def _per_seed_lines(results: dict) -> str:
    """Per seed: the transfer defect IoU after 10 corrective clicks per image (mean ± sd) and the fitted
    context factor of every Segmenter method (absent in JSON files written before it was logged)."""
    per: dict = {}
    for run in results["runs"]:
        if run["protocol"] != "corrective":
            continue
        value = next((c["transfer"]["fg_iou"] for c in run["curve"] if c["clicks"] == 10 and c["transfer"]), None)
        if value is not None:
            per.setdefault(run["method"], []).append((run["seed"], value))
    out = []
    if per:
        out.append("*transfer defect IoU after 10 corrective clicks per image, per seed "
                   f"({', '.join(str(s) for s, _ in next(iter(per.values())))}) — mean ± sd*\n")
        out.append("| method | per seed | mean ± sd |")
        out.append("|---|---|---|")
        for name, pairs in per.items():
            vals = [v for _, v in pairs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out.append(f"| {name} | {' '.join(f'{v:.3f}' for v in vals)} | {statistics.mean(vals):.3f} ± {sd:.3f} |")
        out.append("")
    factors = results.get("context_upscale")
    if factors:
        cells = "; ".join(f"{name} " + " ".join("×" + "/".join(str(f) for f in fs) for fs in by_seed.values())
                          for name, by_seed in factors.items())
        out.append(f"Context factor fitted per seed (`context_upscale_`, seeds {', '.join(next(iter(factors.values())))}): "
                   f"{cells}.\n")
    return "\n".join(out)


def _join(values) -> str:
    return "all" if values is None else ",".join(str(v) for v in values)


def _method_args(results: dict) -> list[str]:
    """The -m values of a run: the spec text, with @label when the name differs from it."""
    out = []
    for name, desc in results["methods"].items():
        spec = desc.get("spec")
        out.append(spec if spec else name)
    return out


def _get(st, *path):
    for p in path:
        if st is None:
            return None
        st = st.get(p)
    return st


def _headline(name: str, results: dict) -> dict:
    s = results["summary"]
    row = {"dataset": name, "methods": {}}
    for method in results["methods"]:
        corr = s["corrective"].get(method, {})
        rnd = s["random"].get(method, {})
        row["methods"][method] = {
            "transfer_fg@10": _get(corr, "curve", "transfer", "10", "fg_iou", "mean"),
            "interactive_miou@20": _get(corr, "curve", "interactive", "20", "miou", "mean"),
            "noc85": _get(corr, "noc", "85", "mean"),
            "random10_transfer_miou": _get(rnd, "transfer", "10", "miou", "mean"),
            "random10_transfer_fg": _get(rnd, "transfer", "10", "fg_iou", "mean"),
        }
    return row


def _headline_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    methods = list(rows[0]["methods"])
    cols = [("transfer_fg@10", "defect IoU, transfer, 10 corrective clicks/image"),
            ("interactive_miou@20", "mIoU, interactive, 20 corrective clicks/image"),
            ("noc85", "NoC@85 (lower is better)"),
            ("random10_transfer_miou", "mIoU, transfer, 10 random clicks/class/image")]
    out = ["#### Headline (mean over seeds)\n"]
    for key, title in cols:
        out.append(f"*{title}*\n")
        out.append("| dataset | " + " | ".join(methods) + " |")
        out.append("|---|" + "---|" * len(methods))
        for r in rows:
            vals = [r["methods"][m][key] for m in methods]
            fmt = "{:.2f}" if key == "noc85" else "{:.3f}"
            out.append(f"| {r['dataset']} | " + " | ".join("–" if v is None else fmt.format(v) for v in vals) + " |")
        avg = []
        for m in methods:
            vs = [r["methods"][m][key] for r in rows if r["methods"][m][key] is not None]
            avg.append(sum(vs) / len(vs) if vs else None)
        fmt = "{:.2f}" if key == "noc85" else "{:.3f}"
        out.append("| **mean** | " + " | ".join("–" if v is None else fmt.format(v) for v in avg) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()

"""Per-part decisions (issue 13): false alarms and misses of the learned OK/NG rule on held-out parts.

    python bench/accuracy_parts.py --datasets kolektorsdd_parts magnetic_tile_parts --seeds 0-5 --test 40

For each dataset, seed and OK count (3 OK-marked clean images, and none), both methods annotate the same
3 defective images with corrective clicks (budget 10 per image), fit, learn the NG rule leave-one-image-out,
and score the held-out parts (the same for every seed and condition): false-alarm rate (clean parts called
NG) and miss rate of the stored rule, AUROC of the two image scores, defect IoU. Mean ± sd over seeds.
Writes bench/results/accuracy_parts_<dataset>.json and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["kolektorsdd_parts", "magnetic_tile_parts"])
    ap.add_argument("--seeds", default="0-5")
    ap.add_argument("--test", type=int, default=40, help="held-out parts per dataset (evenly spaced)")
    ap.add_argument("--ok-images", default="3,0")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=["default", "seed"],
                    help="presets, each optionally with parameters: default:context_upscale=size,ng_rule=anomaly")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--tag", default="", help="suffix of the JSON file (to run seed groups in parallel)")
    ap.add_argument("--merge", nargs="+", type=Path, help="only merge these JSON files of one dataset and print")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge)

    from pointseg import FeatureCache, Segmenter
    import pointseg.segmenter as segmenter_module

    global ORIGINAL_BUDGET
    ORIGINAL_BUDGET = segmenter_module._ok_budget
    from pointseg.evaluation.command import _ints
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.parts import PartsConfig, markdown_parts, run_parts

    config = PartsConfig(seeds=_ints(args.seeds, "--seeds"), ok_images=_ints(args.ok_images, "--ok-images"),
                         budget=args.budget, test=args.test)
    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for name in args.datasets:
        ds = load_dataset(SHARED / "datasets" / name)
        cache = FeatureCache(max_bytes=1_500_000_000)
        methods = {m: (lambda m=m: make_method(m, list(ds.classes), cache)) for m in args.methods}
        start = time.time()
        result = run_parts(ds, methods, config,
                           on_progress=lambda a, d: print(f"[{time.time() - start:6.0f}s] {d}", flush=True)
                           if a else None)
        result["meta"] = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                          "command": "python bench/accuracy_parts.py " + " ".join(sys.argv[1:]),
                          "wall_s": time.time() - start}
        (args.out / f"accuracy_parts_{name}{args.tag}.json").write_text(json.dumps(result, indent=1))
        print(f"\n{name}: {result['meta']['date']}, commit {commit}, {result['meta']['wall_s']:.0f} s")
        print(markdown_parts(result), flush=True)


def method_spec(text: str) -> tuple[str, dict]:
    """``"default:context_upscale=size,min_region=20"`` -> ``("default", {"context_upscale": "size",
    "min_region": 20})`` (values that read as integers or floats become numbers)."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--methods {text!r}: write PRESET:KEY=VALUE,KEY=VALUE")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        params[key.strip()] = value
    return name, params


ORIGINAL_BUDGET = None


def make_method(spec: str, classes, cache):
    """A fresh Segmenter for ``spec`` (:func:`method_spec`). ``ok_hard=N`` is not a Segmenter parameter: it
    replaces the hard negatives per OK image (``pointseg.segmenter._ok_budget``; the evenly spread points
    stay) for this model, which run_parts trains to the end (clicks, final fit, rule) before it makes the
    next one; prediction does not refit, so it holds. A screen, not an option."""
    import pointseg.segmenter as segmenter_module
    from pointseg import Segmenter

    name, params = method_spec(spec)
    hard = params.pop("ok_hard", None)
    segmenter_module._ok_budget = ORIGINAL_BUDGET if hard is None else (
        lambda n_ok: (0, 0) if n_ok == 0 else (ORIGINAL_BUDGET(n_ok)[0], min(int(hard), sum(ORIGINAL_BUDGET(n_ok)))))
    return Segmenter.preset(name, **params, classes=classes, cache=cache)


def merge(paths) -> None:
    """One table from several runs of the same dataset (e.g. seeds 0-2 and 3-5 run side by side)."""
    from pointseg.evaluation.parts import markdown_parts, summarize_parts

    results = [json.loads(Path(p).read_text()) for p in paths]
    runs = [r for res in results for r in res["runs"]]
    merged = {"dataset": results[0]["dataset"], "runs": runs, "summary": summarize_parts(runs)}
    metas = "; ".join(f"{r['meta']['date']}, commit {r['meta']['commit']}, `{r['meta']['command']}`, "
                      f"{r['meta']['wall_s']:.0f} s" for r in results)
    print(f"{merged['dataset']}: {metas}")
    print(markdown_parts(merged))


if __name__ == "__main__":
    main()

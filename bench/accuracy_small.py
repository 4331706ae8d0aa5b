"""Small images (issue 13): the default beside context-upscale variants, one corrective-protocol run.

    python bench/accuracy_small.py DATASET SEEDS SPEC [SPEC ...] [--test N] [--budget B]
    python bench/accuracy_small.py neu_seg 0,1,2 default default:context_upscale=2 --test 30
    python bench/accuracy_small.py magnetic_tile 0,1,2 default 'default:context_upscale="size"'

Every SPEC is a `pointseg evaluate` method spec (``base[:option=value,...][@label]``) run in the same
process on the same splits and clicks (3 training images per seed, up to BUDGET corrective clicks each, N
held-out images evenly spaced). One JSON line per spec: transfer defect IoU at 10 clicks per image (mean,
sd and per seed: the issue's neu_seg figure), interactive defect IoU at BUDGET, the context factor each
seed's model chose (``context_upscale_``) and the wall time. Appended to bench/results/accuracy_small.jsonl.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from _common import append_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def _factor_recorder(method) -> list:
    """Wrap ``method.fit`` to remember the context factor each fit ended with (the last fit of a seed is the
    model the transfer figure comes from)."""
    chosen: list = []
    fit = method.fit

    def recording_fit(*args, **kwargs):
        fit(*args, **kwargs)
        chosen.append(getattr(method.segmenter, "context_upscale_", method.segmenter.context_upscale))

    method.fit = recording_fit
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("seeds")
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    args = ap.parse_args()

    from pointseg import FeatureCache
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    ds = load_dataset(SHARED / "datasets" / args.dataset)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = EvalConfig(protocols=("corrective",), seeds=seeds, train_images=3, test=args.test,
                        budget=args.budget, transfer_at=(10, args.budget))
    cache = FeatureCache()
    for spec in args.specs:
        method = build_method(spec, ds.classes, cache=cache)
        chosen = _factor_recorder(method)
        start = time.perf_counter()
        result = evaluate(ds, [method], config)
        wall = time.perf_counter() - start
        curve = result["summary"]["corrective"][method.name]["curve"]
        per_seed = [next(c["transfer"]["fg_iou"] for c in run["curve"] if c["clicks"] == 10 and c["transfer"])
                    for run in result["runs"]]
        fits_per_seed = len(chosen) // len(seeds)
        row = {
            "dataset": args.dataset, "spec": spec, "seeds": list(seeds), "test": args.test,
            "budget": args.budget,
            "transfer_fg10": round(statistics.mean(per_seed), 4),
            "transfer_fg10_sd": round(statistics.stdev(per_seed), 4) if len(per_seed) > 1 else 0.0,
            "transfer_fg10_per_seed": [round(v, 4) for v in per_seed],
            "interactive_fg": round(curve["interactive"][str(args.budget)]["fg_iou"]["mean"], 4),
            "context_upscale_last_fit": [chosen[(i + 1) * fits_per_seed - 1] for i in range(len(seeds))]
            if fits_per_seed else [],
            "context_upscale_share_of_fits": {str(f): round(chosen.count(f) / len(chosen), 3)
                                              for f in sorted(set(chosen), key=str)},
            "wall_s": round(wall, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": round(os.getloadavg()[0], 2),
        }
        append_jsonl("accuracy_small", row)


if __name__ == "__main__":
    main()

"""Small images (issue 13): the default beside context-upscale variants, one corrective-protocol run.

    python bench/accuracy_small.py DATASET SEEDS SPEC [SPEC ...] [--test N] [--budget B]
    python bench/accuracy_small.py neu_seg 0,1,2 default default:context_upscale=2 --test 30
    python bench/accuracy_small.py crackforest 0,1,2 default 'default:context_upscale="auto"'

Every SPEC is a `pointseg evaluate` method spec (``base[:option=value,...][@label]``) run in the same
process on the same splits and clicks (3 training images per seed, up to BUDGET corrective clicks each, N
held-out images evenly spaced). One JSON line per spec: transfer defect IoU at 10 clicks per image (mean,
sd and per seed: the issue's neu_seg figure), interactive defect IoU at BUDGET, the context factor each
seed's model chose (``context_upscale_``) and the wall time. Appended to bench/results/accuracy_small.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

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


def _logloss_cv_score() -> None:
    """Exploration: let the "cv" rule compare factors by the held-out clicks' mean log-likelihood (the same
    leave-one-image-out folds) instead of their accuracy, which ties often with a few dozen clicks."""
    import numpy as np

    import pointseg.segmenter as S
    from pointseg.classifier import PointClassifier, Standardizer, cross_validation_folds, head_scores

    def score(seg, parts, n_classes):
        X = np.concatenate([p.X for p in parts])
        y = np.concatenate([p.y for p in parts])
        groups = np.concatenate([np.full(len(p.y), p.index) for p in parts])
        standardizer = Standardizer.from_moments([p.moments for p in parts])
        clf = PointClassifier(seg.classifier, seg.C, seg.class_weight)
        folds, _ = cross_validation_folds(y, groups)
        total, n = 0.0, 0
        for train, test in folds:
            if len(np.unique(y[train])) < 2:
                continue
            logits = head_scores(clf.fit(X[train], y[train], n_classes, standardizer), X[test])
            logits = logits - logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            total, n = total + float(logp[np.arange(len(test)), y[test]].sum()), n + len(test)
        return total / n if n else None

    S._clicks_cv_accuracy = score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("seeds")
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--cv-score", choices=("accuracy", "logloss"), default="accuracy",
                    help="what the \"cv\" rule compares (exploration; the library uses accuracy)")
    args = ap.parse_args()
    if args.cv_score == "logloss":
        _logloss_cv_score()

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
            "dataset": args.dataset, "spec": spec, "cv_score": args.cv_score, "seeds": list(seeds), "test": args.test,
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
        line = json.dumps(row)
        print(line, flush=True)
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "accuracy_small.jsonl", "a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()

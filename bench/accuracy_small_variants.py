"""Small images (issue 13, round 2): label-free variants of the default screened against it, paired by seed.

    python bench/accuracy_small_variants.py DATASET SEEDS SPEC[|VARIANT] ... [--test N] [--budget B]
    python bench/accuracy_small_variants.py neu_seg 0,1,2,3,4,5 default 'default|flip2' 'default|cw0.5' --test 30

Like bench/accuracy_small.py (corrective protocol, 3 training images per seed, same splits and clicks for
every spec, one process), but a spec may carry a VARIANT after ``|``: a monkeypatch of the library active
only while that spec runs (exploratory; nothing here is a supported API). The first spec is the reference:
each row also gives the per-seed paired difference (spec − first spec) of transfer defect IoU at 10 clicks.

Variants (they touch images whose short side is below the context stage's reach, 258 px, only — the same
rule that enlarges the context; larger images get the library's features unchanged):

- ``flip2`` / ``flip4``: test-time flip averaging, done on the feature maps: the deep (stride-4/8/16) and
  context maps of the padded image and of its horizontal (``flip4``: also vertical and both) flip, the
  flipped maps flipped back (the padded size is a multiple of 32, so every grid flips onto itself) and
  averaged. The head and the score smoothing are linear, so this is exactly averaging the deep logits of
  the flipped images; the filter block (colour, smoothed intensity, gradient magnitude, Laplacian, Hessian
  eigenvalues) is already flip-equivariant. Used at training and at prediction alike (the features of an
  image are one thing), so clicks and predictions stay consistent. Costs 2× / 4× a small image's extraction.
- ``copyfused``: for an enlarged-context model (``context_upscale_`` > 1), the stride-4/8/16 map also
  comes from the ×f copy (its fused stride-4 map average-pooled by f back to the native stride-4 grid):
  a finer-grained deep description of a 200-px image, replacing the native one.
- ``cwA``: the context block ×A after standardisation (a stronger L2 penalty on it for A < 1), only in
  models whose context is enlarged (``context_upscale_`` > 1).

The spec ``ensemble`` (no variant) is two models fitted on the same clicks, the default and
``efficientnet_lite0`` (no stride-32 stage), whose class probabilities are averaged (all images).

One JSON line per spec, appended to bench/results/accuracy_small.jsonl (``variant`` names the patch).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as TF

from _common import append_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))

import pointseg.features as F  # noqa: E402
import pointseg.segmenter as SG  # noqa: E402

REACH = 258  # efficientnet_lite0_s32's context reach (spec.context_reach): the "size" rule's threshold


def _small(self, rgb) -> bool:
    reach = getattr(self.spec, "context_reach", None) or REACH
    return min(rgb.shape[:2]) < reach


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def flip_variant(n_flips: int):
    orig = F.FeatureExtractor.compute_parts

    def compute_parts(self, rgb, progress=None):
        if not _small(self, rgb):
            return orig(self, rgb, progress)
        hp, wp = self.padded_size(rgb.shape[:2])
        padded = F._pad_reflect(rgb, hp, wp)  # padded once, so every flip sees the same pixels
        flips = [(), (1,), (0,), (0, 1)][:n_flips]  # image axes: 0 rows (vertical flip), 1 columns
        deep_sum, ctx_sum = None, None
        for axes in flips:
            img = np.ascontiguousarray(np.flip(padded, axes)) if axes else padded
            deep, ctx = orig(self, img, progress)
            map_axes = tuple(a + 1 for a in axes)  # maps are C x H x W
            deep = np.flip(np.asarray(deep, np.float32), map_axes) if axes else np.asarray(deep, np.float32)
            deep_sum = deep.copy() if deep_sum is None else deep_sum + deep
            if ctx is not None:
                ctx = np.flip(ctx, map_axes) if axes else ctx
                ctx_sum = ctx.copy() if ctx_sum is None else ctx_sum + ctx
        deep = np.ascontiguousarray(deep_sum / len(flips), dtype=F.deep_dtype(rgb.shape[:2]))
        ctx = None if ctx_sum is None else np.ascontiguousarray(ctx_sum / len(flips), dtype=np.float32)
        return deep, ctx

    with patched(F.FeatureExtractor, "compute_parts", compute_parts):
        yield


@contextlib.contextmanager
def copyfused_variant():
    orig = F.FeatureExtractor.compute_parts

    def compute_parts(self, rgb, progress=None):
        f = self.context_upscale
        if f == 1 or getattr(self.module, "context_start", None) is None or not _small(self, rgb):
            return orig(self, rgb, progress)
        hp, wp = self.padded_size(rgb.shape[:2])
        up = F.upscale_image(F._pad_reflect(rgb, hp, wp), f)
        fused_hw = (f * hp // 4, f * wp // 4)
        out: list = []

        def sink(box, fused):
            y0, y1, x0, x1 = box
            if not out:
                out.append(torch.empty((fused.shape[0],) + fused_hw, dtype=torch.float32))
            out[0][:, y0 // 4: y1 // 4, x0 // 4: x1 // 4] = fused.detach().float()

        _, context = self._context_passes(up, sink=sink, upscaled=False)
        deep = TF.avg_pool2d(out[0][None], f)[0]
        context = TF.avg_pool2d(context[None].float(), f)[0]
        if progress is not None:
            progress(1, 1)
        return (np.ascontiguousarray(deep.numpy(), dtype=F.deep_dtype(rgb.shape[:2])),
                np.ascontiguousarray(context.numpy(), dtype=np.float32))

    with patched(F.FeatureExtractor, "compute_parts", compute_parts):
        yield


@contextlib.contextmanager
def context_weight_variant(weight: float):
    """The context block ×weight after standardisation in models fitted with an enlarged context."""
    orig_fit_parts = SG.Segmenter._fit_parts

    def fit_parts(self, clf, parts, n_classes, standardizer, init):
        if getattr(self, "context_upscale_", 1) > 1 and parts:
            layout = parts[0].fmap.layout
            start = layout["deep"]
            stop = start + layout["context"]
            if layout["context"]:
                scale = standardizer.scale.copy()
                scale[start:stop] /= weight
                standardizer = type(standardizer)(standardizer.mean, scale)
        return orig_fit_parts(self, clf, parts, n_classes, standardizer, init)

    with patched(SG.Segmenter, "_fit_parts", fit_parts):
        yield


class EnsembleMethod:
    """The default and ``efficientnet_lite0`` (hybrid) fitted on the same clicks; probabilities averaged."""

    kind = "ensemble"
    spec = "ensemble"

    def __init__(self, classes, cache):
        from pointseg.evaluation.methods import build_method

        self.name = "ensemble"
        self.members = [build_method("default", classes, cache=cache),
                        build_method("efficientnet_lite0", classes, cache=cache)]
        self.segmenter = self.members[0].segmenter

    def describe(self) -> dict:
        return {"method": "ensemble", "members": [m.describe() for m in self.members]}

    def prepare(self, image, key) -> None:
        for m in self.members:
            m.prepare(image, key)

    def fit(self, images, points, keys, seed: int = 0) -> None:
        for m in self.members:
            m.fit(images, points, keys, seed)

    def predict(self, image, key):
        proba = sum(m.segmenter.predict_proba(image) for m in self.members)
        return np.asarray(proba.argmax(axis=0), dtype=np.int64)


def variant_context(variant: str | None):
    if not variant:
        return contextlib.nullcontext(), False
    if variant in ("flip2", "flip4"):
        return flip_variant(int(variant[-1])), True
    if variant == "copyfused":
        return copyfused_variant(), True
    if variant.startswith("cw"):
        return context_weight_variant(float(variant[2:])), False
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("seeds")
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--budget", type=int, default=10)
    args = ap.parse_args()

    from pointseg import FeatureCache
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    ds = load_dataset(SHARED / "datasets" / args.dataset)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = EvalConfig(protocols=("corrective",), seeds=seeds, train_images=3, test=args.test,
                        budget=args.budget, transfer_at=(10, args.budget))
    shared_cache = FeatureCache()
    reference = None
    for spec_variant in args.specs:
        spec, _, variant = spec_variant.partition("|")
        ctx, own_features = variant_context(variant or None)
        cache = FeatureCache() if own_features else shared_cache
        method = EnsembleMethod(ds.classes, cache) if spec == "ensemble" else build_method(spec, ds.classes, cache=cache)
        start = time.perf_counter()
        with ctx:
            result = evaluate(ds, [method], config)
        wall = time.perf_counter() - start
        per_seed = [next(c["transfer"]["fg_iou"] for c in run["curve"] if c["clicks"] == 10 and c["transfer"])
                    for run in result["runs"]]
        curve = result["summary"]["corrective"][method.name]["curve"]
        per_class = {name: round(statistics.mean(
            next(c["transfer"]["iou"][name] for c in run["curve"] if c["clicks"] == 10 and c["transfer"])
            for run in result["runs"]), 4) for name in ds.classes[1:]}
        row = {
            "dataset": args.dataset, "spec": spec, "variant": variant or None, "seeds": list(seeds),
            "test": args.test, "budget": args.budget,
            "transfer_fg10": round(statistics.mean(per_seed), 4),
            "transfer_fg10_sd": round(statistics.stdev(per_seed), 4) if len(per_seed) > 1 else 0.0,
            "transfer_fg10_per_seed": [round(v, 4) for v in per_seed],
            "transfer_iou10_per_class": per_class,
            "interactive_fg": round(curve["interactive"][str(args.budget)]["fg_iou"]["mean"], 4),
            "context_upscale": getattr(method.segmenter, "context_upscale_", None),
            "wall_s": round(wall, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": round(os.getloadavg()[0], 2),
        }
        if reference is None:
            reference = per_seed
        else:
            diffs = [a - b for a, b in zip(per_seed, reference)]
            row["paired_diff"] = round(statistics.mean(diffs), 4)
            row["paired_diff_sd"] = round(statistics.stdev(diffs), 4) if len(diffs) > 1 else 0.0
            row["paired_diff_per_seed"] = [round(d, 4) for d in diffs]
        append_jsonl("accuracy_small", row)
        print(spec_variant, row, flush=True)


if __name__ == "__main__":
    main()

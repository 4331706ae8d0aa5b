"""Where an enlarged context helps or hurts (issue 13, small images): the context block alone, per factor.

    python bench/context_diagnosis.py DATASET FACTORS [--seeds 0,1,2] [--test 10]
    python bench/context_diagnosis.py crackforest 1,2
    python bench/context_diagnosis.py neu_seg 1,2,4 --test 30

For each seed, 3 training images and TEST held-out ones (evenly spaced, as the harness picks them); pixels
sampled from the masks (up to 400 defect and 400 background per image); a logistic head trained on one
feature block of the training images' pixels; on the held-out images the defect-vs-background AUROC and
the defect IoU of its labels. Blocks: ``context`` (the stride-32 channels, upsampled to the grid as the
model sees them), ``deep`` (stride 4/8/16, which the factor does not change) and ``all`` (deep + context).
It separates what the context block itself transfers at a factor from what the full model does with it.
Also the receptive field of the context stage (``--receptive-field``): the side of the square window around a
stride-32 cell that holds 50/80/90/95/99 % of its input-gradient mass (random input, 768 px); and with
``--cost`` the extraction time of a small image natively and with the ×4 context.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def receptive_field(size: int = 768, trials: int = 3) -> dict:
    """Window sides (px) around the centre cell holding each share of |d output / d input| (stride 16 and 32)."""
    import torch

    from pointseg.features import FeatureExtractor

    trunk = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch").module
    out = {}
    for name, stride, fn in (("stride16", 16, lambda x: trunk.forward_base(x)[1]),
                             ("context", 32, lambda x: trunk.forward_context(trunk.forward_base(x)[1]))):
        grad = torch.zeros(size, size)
        for seed in range(trials):
            torch.manual_seed(seed)
            x = torch.randn(1, 3, size, size, requires_grad=True)
            y = fn(x)
            h, w = y.shape[2:]
            y[0, :, h // 2, w // 2].sum().backward()
            grad += x.grad[0].abs().sum(0)
        g = (grad / grad.sum()).numpy()
        yy, xx = np.mgrid[:size, :size]
        radius = np.maximum(np.abs(yy - ((h // 2) * stride + stride / 2)), np.abs(xx - ((w // 2) * stride + stride / 2)))
        sides = {}
        for share in (0.5, 0.8, 0.9, 0.95, 0.99):
            r = next(r for r in range(1, size) if g[radius <= r].sum() >= share)
            sides[f"{int(share * 100)}%"] = 2 * r
        out[name] = sides
    return out


def extraction_cost(repeat: int = 5) -> dict:
    """ms (best of ``repeat``) to extract a neu_seg and a magnetic-tile image natively and with the ×4 context
    (the default engine and precision, hybrid features)."""
    import time

    from PIL import Image

    from pointseg.features import FeatureExtractor

    base = FeatureExtractor(features="hybrid")
    out = {"extractor": base.id}
    for name, folder, index in (("neu_seg", "neu_seg", 0), ("magnetic_tile", "magnetic_tile", 5)):
        paths = sorted((SHARED / "datasets" / folder / "images").iterdir())
        image = np.asarray(Image.open(paths[index]).convert("RGB"))
        times = {}
        for factor in (1, 4, 1, 4):  # interleaved, the second round counts
            ext = base.with_context_upscale(factor)
            ext.compute_parts(image)
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                ext.compute_parts(image)
                best = min(best, time.perf_counter() - start)
            times[f"x{factor}_ms"] = round(best * 1000)
        out[name] = {"size": list(image.shape[:2]), **times}
    return out


def _pixels(mask: np.ndarray, rng, per_class: int = 400) -> np.ndarray:
    """(n, 3) [x, y, is_defect] sampled from a mask (defect = any class but 0)."""
    rows = []
    for label, where in ((1, mask > 0), (0, mask == 0)):
        ys, xs = np.nonzero(where)
        if len(ys):
            pick = rng.choice(len(ys), min(per_class, len(ys)), replace=False)
            rows.append(np.column_stack([xs[pick], ys[pick], np.full(len(pick), label)]))
    return np.concatenate(rows)


def _block(features: np.ndarray, layout: dict, block: str) -> np.ndarray:
    deep, context = layout["deep"], layout["context"]
    return {"context": features[:, deep: deep + context], "deep": features[:, :deep],
            "all": features[:, : deep + context]}[block]


def run(dataset: str, factors: list[int], seeds: list[int], test: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from pointseg.evaluation.datasets import choose_split, load_dataset
    from pointseg.evaluation.runner import ImageStore
    from pointseg.features import FeatureCache, FeatureExtractor

    ds = load_dataset(SHARED / "datasets" / dataset)
    present = ImageStore(ds).present
    cache = FeatureCache()
    base = FeatureExtractor("efficientnet_lite0_s32", cache=cache)
    rows = []
    for seed in seeds:
        split = choose_split(ds.stems, present, seed, 3, None, test)
        rng = np.random.default_rng(seed)
        samples = {stem: _pixels(ds.load_mask(stem), rng) for stem in (*split.train, *split.test)}
        for factor in factors:
            ext = base.with_context_upscale(factor)
            feats = {}
            for stem, pts in samples.items():
                fmap = ext.extract(ds.load_image(stem))
                feats[stem] = fmap.sample(pts[:, :2].astype(np.float64))[:, : fmap.deep_channels]
                layout = fmap.layout
            for block in ("context", "deep", "all"):
                X = np.concatenate([_block(feats[s], layout, block) for s in split.train])
                y = np.concatenate([samples[s][:, 2] for s in split.train])
                scaler = StandardScaler().fit(X)
                head = LogisticRegression(C=0.1, class_weight="balanced", max_iter=500).fit(scaler.transform(X), y)
                aucs, inter, union = [], 0, 0
                for s in split.test:
                    yt = samples[s][:, 2]
                    p = head.predict_proba(scaler.transform(_block(feats[s], layout, block)))[:, 1]
                    if 0 < yt.sum() < len(yt):
                        aucs.append(roc_auc_score(yt, p))
                    inter += int(((p > 0.5) & (yt == 1)).sum())
                    union += int(((p > 0.5) | (yt == 1)).sum())
                rows.append({"dataset": dataset, "seed": seed, "factor": factor, "block": block,
                             "auroc": round(float(np.mean(aucs)), 4) if aucs else None,
                             "defect_iou_on_samples": round(inter / max(union, 1), 4)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?")
    ap.add_argument("factors", nargs="?", default="1,2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--receptive-field", action="store_true")
    ap.add_argument("--cost", action="store_true", help="extraction time, native vs x4 context")
    args = ap.parse_args()
    if args.receptive_field:
        print(json.dumps(receptive_field()), flush=True)
    if args.cost:
        print(json.dumps({**extraction_cost(), "load": round(os.getloadavg()[0], 1)}), flush=True)
    if not args.dataset:
        return
    rows = run(args.dataset, [int(f) for f in args.factors.split(",")], [int(s) for s in args.seeds.split(",")],
               args.test)
    print("\nmean over seeds (auroc / defect IoU on the sampled pixels):")
    for factor in sorted({r["factor"] for r in rows}):
        cells = []
        for block in ("context", "deep", "all"):
            sel = [r for r in rows if r["factor"] == factor and r["block"] == block]
            cells.append(f"{block} {np.mean([r['auroc'] for r in sel]):.3f} / "
                         f"{np.mean([r['defect_iou_on_samples'] for r in sel]):.3f}")
        print(f"  x{factor}: " + "  ".join(cells))


if __name__ == "__main__":
    main()

"""Why cracks come out wide: where the default's crack logit comes from, and what a linear head can reach.

    python bench/thin_diagnosis.py [VARIANT]    # a variant of bench/accuracy_thin.py, e.g. dw0.01 (deep
                                                # block almost off), bw0.01 (fine block almost off)
    python bench/thin_diagnosis.py none autocontext=True --ceiling   # a Segmenter option, ceiling only

On CrackForest (the first 3 images train, the next 3 are looked at):

* **profile**: the head's crack-minus-background logit, split into its deep (stride-4 map, bilinearly
  upsampled) and fine (full-resolution filters) parts, averaged over pixels on the crack and at growing
  distances from it; trained on 25 crack and 40 background points per image drawn at random.
* **ceiling**: crack IoU on the training images themselves after fitting on 150 crack points, 150
  background points within 3 px of a crack and 150 further away per image (far more, and better placed,
  than 20 corrective clicks), with and without the near-crack points — what the features and a linear head
  can separate at all — with balanced and unweighted classes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_thin import SHARED, apply_variant  # noqa: E402


def draw(rng, mask, near: int):
    dist = ndi.distance_transform_edt(mask != 1)
    points = []
    for where, n, c in ((mask == 1, 150, 1), ((mask == 0) & (dist <= 3), near, 0), ((mask == 0) & (dist > 3), 150, 0)):
        ys, xs = np.nonzero(where)
        pick = rng.choice(len(xs), min(n, len(xs)), replace=False)
        points += [[xs[j], ys[j], c] for j in pick]
    return np.array(points, float).reshape(-1, 3)


def iou(seg, images, masks):
    inter = union = 0
    for image, mask in zip(images, masks):
        pred, truth = seg.predict(image) == 1, mask == 1
        inter, union = inter + (pred & truth).sum(), union + (pred | truth).sum()
    return inter / union


def main(variant: str, options: dict, ceiling_only: bool) -> None:
    apply_variant(variant)
    from pointseg import Segmenter
    from pointseg.evaluation.datasets import load_dataset

    ds = load_dataset(SHARED / "datasets" / "crackforest")
    train, look = ds.stems[:3], ds.stems[3:6]
    images, masks = [ds.load_image(s) for s in train], [ds.load_mask(s) for s in train]
    rng = np.random.default_rng(0)
    few = []
    for mask in masks:
        p = []
        for c, n in ((0, 40), (1, 25)):
            ys, xs = np.nonzero(mask == c)
            pick = rng.choice(len(xs), n, replace=False)
            p += [[xs[j], ys[j], c] for j in pick]
        few.append(np.array(p, float))
    if ceiling_only:
        return ceiling(Segmenter, ds, images, masks, variant, options)
    seg = Segmenter.preset("default", classes=ds.classes, smoothing=0).fit(images, few)
    print(f"[{variant}] crack logit by distance to the crack (px): on | <=1.5 | 1.5-3 | 3-6 | >6")
    rows = {"all": [], "deep": [], "fine": []}
    for stem in look:
        mask = ds.load_mask(stem)
        scores = seg.decision_grid(ds.load_image(stem))
        h, w = mask.shape
        deep, fine = scores.deep_logits(0, h, 0, w).numpy(), scores.fine_logits(0, h, 0, w).numpy()
        d, f = deep[1] - deep[0], fine[1] - fine[0]
        dist = ndi.distance_transform_edt(mask != 1)
        zones = [mask == 1] + [(dist > a) & (dist <= b) for a, b in ((0, 1.5), (1.5, 3), (3, 6), (6, np.inf))]
        for name, v in (("all", d + f), ("deep", d), ("fine", f)):
            rows[name].append([v[z].mean() for z in zones])
    for name, values in rows.items():
        print(f"  {name:5s}", " ".join(f"{v:6.2f}" for v in np.mean(values, axis=0)))
    ceiling(Segmenter, ds, images, masks, variant, options)


def ceiling(Segmenter, ds, images, masks, variant: str, options: dict) -> None:
    """Crack IoU on the training images after fitting on many well-placed points; with ``options`` also on
    three other images (a head that fits its own points better may not generalise)."""
    look = ds.stems[3:6]
    others, other_masks = [ds.load_image(s) for s in look], [ds.load_mask(s) for s in look]
    for near in (150, 0):
        rng = np.random.default_rng(0)
        points = [draw(rng, m, near) for m in masks]
        for label, opts in (("default", {}), ("class_weight=None", {"class_weight": None})):
            seg = Segmenter.preset("default", classes=ds.classes, **{**opts, **options}).fit(images, points)
            print(f"  [{variant} {options}] ceiling, {near} near-crack negatives/image, {label}: crack IoU "
                  f"{iou(seg, images, masks):.3f} (3 other images: {iou(seg, others, other_masks):.3f})", flush=True)


def _options(texts: list[str]) -> dict:
    import json

    out = {}
    for text in texts:
        key, value = text.split("=", 1)
        try:
            out[key] = json.loads(value.lower() if value in ("True", "False") else value)
        except ValueError:
            out[key] = value
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--ceiling"]
    main(args[0] if args else "none", _options(args[1:]), "--ceiling" in sys.argv)  # one per process

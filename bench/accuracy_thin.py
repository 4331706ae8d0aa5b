"""Thin structures and small images (issue 13): one variant of the default under the corrective protocol.

    python bench/accuracy_thin.py DATASET SEEDS VARIANT [SPEC] [--test N] [--budget B]
    python bench/accuracy_thin.py crackforest 0,1,2 none                       # the reference row
    python bench/accuracy_thin.py crackforest 0,1,2 sigmas=0.7,1,2,4           # another fine filter bank
    python bench/accuracy_thin.py neu_seg 0,1,2 none 'default:smoothing=1.0'   # a Segmenter option
    python bench/accuracy_thin.py crackforest 0,1,2 none 'default:autocontext=True'   # the auto-context head

Runs `pointseg evaluate`'s corrective protocol (the same splits and clicks: 3 training images per seed, up to
BUDGET clicks each, N held-out images evenly spaced) for one method spec, with VARIANT patched into the
library first, and prints one JSON line: interactive defect IoU at BUDGET clicks (the issue's crack target),
transfer defect IoU at 10 and BUDGET clicks (mean ± sd over seeds, as the BENCHMARKS tables give them),
NoC@85 and the wall time. VARIANT is "none" or an exploratory patch that is not (yet) a library option:

    sigmas=A,B,...   the fine filter bank's scales (pointseg.filters.SIGMAS)
    ridge            add line measures per scale (dark and bright ridges from the Hessian eigenvalues)
    tophatN          add black and white morphological top-hats of the grey image (N×N square)
    bwA / dwA        the fine (deep) block times A after standardisation (a weaker L2 penalty when A > 1)
    s2pA             auto-context (spec option autocontext=True): stage 2's penalty A times stage 1's
                     (pointseg.autocontext.STAGE2_PENALTY)
    s2unweighted     auto-context's stage 2 with unweighted classes (stage 1 stays balanced)
    oofpoints        auto-context's out-of-fold stage-1 heads by k-fold over the points, not by image
    ctxN             the stride-32 context map of an image whose context grid is under N cells on its short
                     side computed on a copy upscaled by a power of two, pooled back to its grid

Join several with "+". Results are appended to bench/results/accuracy_thin.jsonl.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from _common import append_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("POINTSEG_WEIGHTS_DIR", str(SHARED / "weights" / "resnet18-imagenet-trunk"))


def apply_variant(variant: str) -> None:
    import pointseg.filters as FL

    extra: list[int] = []
    ridges = squares = False
    for part in variant.split("+"):
        if part in ("", "none"):
            continue
        if part.startswith("sigmas="):
            FL.SIGMAS = tuple(float(s) for s in part.split("=", 1)[1].split(","))
        elif part == "ridge":
            ridges = True
        elif part == "squares":
            squares = True
        elif part.startswith("tophat"):
            extra.append(int(part[6:] or 5))
        elif part.startswith("bw"):
            _block_weight("fine", float(part[2:]))
        elif part.startswith("dw"):
            _block_weight("deep", float(part[2:]))
        elif part.startswith("rho_"):
            _within_image_weight(part[4:])
        elif part.startswith("s2p"):
            import pointseg.autocontext as AC

            AC.STAGE2_PENALTY = float(part[3:])
        elif part == "oofpoints":  # auto-context's out-of-fold heads by k-fold over points, not by image
            import pointseg.autocontext as AC

            AC.FOLDS = "points"
        elif part == "s2unweighted":  # auto-context's stage 2 with class_weight=None
            import pointseg.autocontext as AC

            AC.STAGE2_CLASS_WEIGHT = None
        elif part.startswith("ctxboth"):
            _context_upscaled(int(part[7:]), keep_original=True)
        elif part.startswith("ctx"):
            _context_upscaled(int(part[3:]))
        else:
            raise SystemExit(f"unknown variant {part!r}")
    FL.CHANNELS = 3 + len(FL.SIGMAS) * len(FL.PER_SIGMA)
    FL.HALO = int(math.ceil(4 * max(FL.SIGMAS))) + 2
    if ridges or extra or squares:
        _add_channels(FL, ridges, extra, squares)


def _block_weight(block: str, factor: float) -> None:
    """One block's standardised features times ``factor`` (a weaker L2 penalty on it when > 1)."""
    import pointseg.classifier as CL
    import pointseg.filters as FL

    orig = CL.Standardizer.from_moments.__func__

    def from_moments(cls, moments):
        st = orig(cls, moments)
        st.scale = st.scale.copy()
        n_fine = FL.CHANNELS if st.scale.shape[0] > FL.CHANNELS + 100 else 0
        if block == "fine":
            st.scale[st.scale.shape[0] - n_fine:] /= factor
        else:
            st.scale[: st.scale.shape[0] - n_fine] /= factor
        return st

    CL.Standardizer.from_moments = classmethod(from_moments)


def _within_image_weight(block: str) -> None:
    """Standardised channels times sqrt(within-image variance / total variance) over the training images.

    A channel that is nearly constant within each image (a stride-32 context cell covers most of a
    200-px image) can only tell the training images apart, which three images cannot teach; its weight
    shrinks with the share of its variance that lies within images. ``block``: ctx (the context block,
    one factor per channel), deep (deep and context), all.
    """
    import numpy as np

    import pointseg.classifier as CL
    import pointseg.filters as FL

    orig = CL.Standardizer.from_moments.__func__

    def from_moments(cls, moments):
        st = orig(cls, moments)
        count = sum(m[2] for m in moments)
        within = sum(m[1] - m[0] ** 2 / m[2] for m in moments) / count
        total = np.maximum(st.scale.astype(np.float64) ** 2, 1e-12)
        rho = np.clip(within / total, 1e-3, 1.0)
        n = st.scale.shape[0]
        n_fine = FL.CHANNELS if n > FL.CHANNELS + 100 else 0
        sel = np.zeros(n, bool)
        if block == "ctx" and n - n_fine == 368:
            sel[176:368] = True
        elif block == "deep":
            sel[: n - n_fine] = True
        elif block == "all":
            sel[:] = True
        st.scale = st.scale.copy()
        st.scale[sel] = (st.scale[sel] / np.sqrt(rho[sel])).astype(np.float32)
        return st

    CL.Standardizer.from_moments = classmethod(from_moments)


def _context_upscaled(min_cells: int, keep_original: bool = False) -> None:
    """The stride-32 context map of an image whose context grid is under ``min_cells`` on its short side
    computed on a copy upscaled by the power of two that brings it there, then average-pooled back to the
    image's stride-32 grid (so the map keeps its geometry). ``keep_original``: both maps side by side (the
    original twice where the rule does not trigger, so every image has the same channels)."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as TF

    import pointseg.features as F

    orig = F.FeatureExtractor.compute_parts

    def compute_parts(self, rgb, progress=None):
        data, context = orig(self, rgb, progress)
        if context is None:
            return data, context
        short = min(context.shape[1:])
        if short >= min_cells:
            return data, (np.concatenate([context, context]) if keep_original else context)
        f = 2 ** math.ceil(math.log2(min_cells / short))
        hp, wp = self.padded_size(rgb.shape[:2])
        padded = F._pad_reflect(rgb, hp, wp)
        t = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float()
        up = TF.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)
        up = up.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        _, ctx_up = orig(self, up)
        pooled = TF.avg_pool2d(torch.from_numpy(ctx_up)[None], f)[0].numpy()
        pooled = np.ascontiguousarray(pooled[:, : context.shape[1], : context.shape[2]])
        return data, (np.concatenate([context, pooled]) if keep_original else pooled)

    F.FeatureExtractor.compute_parts = compute_parts


def _add_channels(FL, ridges: bool, sizes: list[int], squares: bool = False) -> None:
    """Extra fine channels. Ridges: per scale, line measures from the Hessian eigenvalues (λmax ≥ λmin):
    dark = max(0, λmax − |λmin|), high across a dark line and near zero on blobs and flat ground, and its
    mirror for bright lines (the ratio Sato's and Frangi's vesselness build on), which a linear head cannot
    form from the eigenvalues. Top-hats of the grey image (square of each size): black (closing − image:
    dark lines and pits narrower than the square) and white (image − opening), the classic crack detector.
    Squares: every filter response squared (quadratic capacity for the linear head)."""
    from scipy import ndimage as ndi
    import numpy as np

    base, n_base, per = FL.low_level_features, FL.CHANNELS, len(FL.PER_SIGMA)

    def with_extra(rgb):
        out = base(rgb)[:n_base]  # the bank fills its first n_base channels of a CHANNELS-long array
        grey = out[:3].mean(axis=0)
        extra = []
        if ridges:
            for k in range(len(FL.SIGMAS)):
                lam_max, lam_min = out[3 + k * per + 3], out[3 + k * per + 4]
                extra.append(np.maximum(lam_max - np.abs(lam_min), 0))
                extra.append(np.maximum(-lam_min - np.abs(lam_max), 0))
        for size in sizes:
            extra.append(ndi.grey_closing(grey, size=size, mode="reflect") - grey)
            extra.append(grey - ndi.grey_opening(grey, size=size, mode="reflect"))
        if squares:
            extra += list(out[3:] ** 2)
        return np.concatenate([out, np.stack(extra).astype(np.float32)])

    FL.low_level_features = with_extra
    FL.CHANNELS += 2 * len(sizes) + (2 * len(FL.SIGMAS) if ridges else 0) + (n_base - 3 if squares else 0)
    FL.HALO = max([FL.HALO] + [size + 2 for size in sizes])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("seeds")
    ap.add_argument("variant")
    ap.add_argument("spec", nargs="?", default="default")
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    args = ap.parse_args()
    apply_variant(args.variant)

    from pointseg import FeatureCache
    from pointseg.evaluation.datasets import load_dataset
    from pointseg.evaluation.methods import build_method
    from pointseg.evaluation.runner import EvalConfig, evaluate

    ds = load_dataset(SHARED / "datasets" / args.dataset)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = EvalConfig(protocols=("corrective",), seeds=seeds, train_images=3, test=args.test,
                        budget=args.budget, transfer_at=(10, args.budget))
    method = build_method(args.spec, ds.classes, cache=FeatureCache())
    start = time.perf_counter()
    result = evaluate(ds, [method], config)
    wall = time.perf_counter() - start
    summary = result["summary"]["corrective"][method.name]
    curve = summary["curve"]

    def fg(split, k):
        stat = curve[split].get(str(k), {}).get("fg_iou")
        return None if stat is None else [round(stat["mean"], 4), round(stat["std"], 4)]

    per_seed = [next(c["transfer"]["fg_iou"] for c in run["curve"] if c["clicks"] == 10 and c["transfer"])
                for run in result["runs"]]
    per_seed_interactive = [next(c["interactive"]["fg_iou"] for c in run["curve"]
                                 if c["clicks"] == args.budget and c["interactive"]) for run in result["runs"]]
    row = {"dataset": args.dataset, "variant": args.variant, "spec": args.spec, "seeds": list(seeds),
           "test": args.test, "budget": args.budget,
           "interactive_fg": fg("interactive", args.budget),
           "interactive_fg_per_seed": [round(v, 4) for v in per_seed_interactive],
           "interactive_miou": round(curve["interactive"][str(args.budget)]["miou"]["mean"], 4),
           "transfer_fg10": fg("transfer", 10), "transfer_fg10_per_seed": [round(v, 4) for v in per_seed],
           "transfer_fg": fg("transfer", args.budget),
           "noc85": round(summary["noc"]["85"]["mean"], 2), "wall_s": round(wall, 1),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": round(os.getloadavg()[0], 2)}
    append_jsonl("accuracy_thin", row)


if __name__ == "__main__":
    main()

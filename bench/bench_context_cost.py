"""What the default ``context_upscale="size"`` costs on small images, against the default before it (×1).

    python bench/bench_context_cost.py [--repeat 5] [--folder 20] [--skip-predict]

1. Extraction of a 200 × 200 image (NEU-Seg) and a 250 × 250 one (a crop of a CrackForest image), by the
   default extractor (engine and precision as pointseg picks them, hybrid features): ``compute_parts`` (the
   backbone) and ``extract`` (what a new image costs: backbone + the fine filters' statistics, fresh cache),
   at ×1 (the default before), at ×4 as the previous session shipped it (the enlarged copy through the full
   base pass, its fused map dropped) and at ×4 now (the copy through the stride-16 stage only). Interleaved
   round by round, best of ``--repeat`` per round, best round, in wall time and in this process's CPU time
   (all threads: the work, less sensitive to other jobs on a shared machine than the wall clock); the ×4
   contexts of both mechanisms are checked to be identical.
2. ``pointseg predict MODEL FOLDER -o OUT`` (a subprocess, wall time with start-up) on ``--folder`` NEU-Seg
   images, with a model trained on 3 other NEU-Seg images by the default (which fits ×4 there) and the same
   clicks with ``context_upscale=1``; alternated, ``--cli-rounds`` rounds, best. Images/s, and per image
   after start-up (the slope from a 1-image run). Before it, the library loop the command runs per image
   (``predict_full`` of a new image), the two models alternated image by image, wall and CPU time.
3. ``--first-view``: the app's first view of a new NEU-Seg image once a model exists (coarse view, features,
   exact view), default vs ``context_upscale=1`` (one-off, not a timed test).

Times on a shared machine: the ratios, measured side by side, are the figures; the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402


def _images() -> dict[str, np.ndarray]:
    from PIL import Image

    neu = sorted((SHARED / "datasets" / "neu_seg" / "images").iterdir())[0]
    crack = sorted((SHARED / "datasets" / "crackforest" / "images").iterdir())[0]
    a = np.asarray(Image.open(neu).convert("RGB"))
    b = np.asarray(Image.open(crack).convert("RGB"))[:250, :250]
    return {f"{a.shape[0]}x{a.shape[1]}": np.ascontiguousarray(a), f"{b.shape[0]}x{b.shape[1]}": np.ascontiguousarray(b)}


def extraction(repeat: int, rounds: int = 3) -> dict:
    from pointseg import FeatureCache
    from pointseg.features import FeatureExtractor, upscale_image

    base = FeatureExtractor(features="hybrid")
    x4 = base.with_context_upscale(4)

    class Previous(type(x4)):
        """×4 as shipped before: the enlarged copy's full base pass, its fused maps dropped."""

        def _upscaled_context(self, padded):
            import torch.nn.functional as F

            up = upscale_image(padded, 4)
            _, context = self._context_passes(up, sink=lambda box, fused: None, upscaled=False)
            return F.avg_pool2d(context[None], 4)[0]

    previous = Previous.__new__(Previous)
    previous.__dict__.update(x4.__dict__)
    ways = {"x1 (before)": base, "x4 previous": previous, "x4 now": x4}
    out = {"extractor": base.id}
    for name, image in _images().items():
        ctx = {k: ext.compute_parts(image)[1] for k, ext in ways.items()}  # warm-up, and the check
        same = float(np.abs(ctx["x4 previous"] - ctx["x4 now"]).max())
        best = {(k, what, clock): float("inf") for k in ways for what in ("compute_parts", "extract")
                for clock in ("wall", "cpu")}

        def timed(k, what, fn):
            t, c = time.perf_counter(), time.process_time()
            fn()
            best[k, what, "wall"] = min(best[k, what, "wall"], time.perf_counter() - t)
            best[k, what, "cpu"] = min(best[k, what, "cpu"], time.process_time() - c)

        for _ in range(rounds):
            for k, ext in ways.items():
                for _ in range(repeat):
                    timed(k, "compute_parts", lambda: ext.compute_parts(image))
                for _ in range(max(2, repeat // 2)):
                    ext.cache = FeatureCache()
                    timed(k, "extract", lambda: ext.extract(image))
        row = {f"{k} {what} {clock} ms": round(v * 1000, 1) for (k, what, clock), v in best.items()}
        for what in ("compute_parts", "extract"):
            for clock in ("wall", "cpu"):
                ref = best["x1 (before)", what, clock]
                row[f"{what} {clock} x4 now / x1"] = round(best["x4 now", what, clock] / ref, 2)
                row[f"{what} {clock} x4 previous / x1"] = round(best["x4 previous", what, clock] / ref, 2)
        out[name] = {"x4 contexts max |diff|": same, **row, "load": round(os.getloadavg()[0], 1)}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def predict_throughput(n_images: int, rounds: int = 2) -> dict:
    from PIL import Image

    from pointseg import Segmenter

    paths = sorted((SHARED / "datasets" / "neu_seg" / "images").iterdir())
    masks = SHARED / "datasets" / "neu_seg" / "masks"
    train, folder_paths = paths[:3], paths[3: 3 + n_images]
    rng = np.random.default_rng(0)
    images, points = [], []
    for p in train:
        images.append(np.asarray(Image.open(p).convert("RGB")))
        mask = np.asarray(Image.open(next(masks.glob(p.stem + ".*"))))
        mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0  # defect (any class) vs background
        pts = []
        for c in (0, 1):
            ys, xs = np.nonzero(mask == c)
            pick = rng.choice(len(ys), min(10, len(ys)), replace=False)
            pts += [[xs[i], ys[i], int(c)] for i in pick]
        points.append(np.array(pts, dtype=np.float64))
    classes = ["background", "defect"]
    tmp = Path(tempfile.mkdtemp(prefix="ctxcost-"))
    try:
        models = {}
        for label, params in (("x1 (before)", {"context_upscale": 1}), ("default", {})):
            seg = Segmenter(classes=classes, cross_validate=False, **params).fit(images, points)
            models[label] = (tmp / f"{label.split()[0]}.pointseg", seg.context_upscale_)
            seg.save(models[label][0])
        for sub, chosen in (("one", folder_paths[:1]), ("many", folder_paths)):
            (tmp / sub).mkdir()
            for p in chosen:
                shutil.copy(p, tmp / sub / p.name)
        # the library loop `pointseg predict` runs per image (features of a new image + predict_full), the two
        # models alternated image by image: the per-image cost without start-up, in wall and CPU time
        loop = {label: {"wall": 0.0, "cpu": 0.0} for label in models}
        loaded = {label: Segmenter.load(path) for label, (path, _) in models.items()}
        for p in folder_paths:
            image = np.asarray(Image.open(p).convert("RGB"))
            for label, seg in loaded.items():
                t, c = time.perf_counter(), time.process_time()
                seg.predict_full(image, probabilities=False)
                loop[label]["wall"] += time.perf_counter() - t
                loop[label]["cpu"] += time.process_time() - c
        best = {}
        for _ in range(rounds):
            for label, (model, _) in models.items():
                for sub in ("one", "many"):
                    out = tmp / f"out-{sub}"
                    shutil.rmtree(out, ignore_errors=True)
                    t = time.perf_counter()
                    r = subprocess.run([sys.executable, "-m", "pointseg.cli", "predict", str(model), str(tmp / sub),
                                        "-o", str(out)], capture_output=True, text=True)
                    wall = time.perf_counter() - t
                    if r.returncode:
                        raise SystemExit(r.stderr[-2000:])
                    best[label, sub] = min(best.get((label, sub), float("inf")), wall)
        result = {"images": len(folder_paths), "size": list(images[0].shape[:2])}
        for label, (_, factor) in models.items():
            many, one = best[label, "many"], best[label, "one"]
            result[label] = {"factor": factor, "wall_s": round(many, 2), "images_per_s": round(len(folder_paths) / many, 2),
                             "s_per_image_after_start": round((many - one) / (len(folder_paths) - 1), 3),
                             "one_image_wall_s": round(one, 2)}
        for label in models:
            result[label]["library_loop_ms_per_image"] = {k: round(v * 1000 / len(folder_paths)) for k, v in loop[label].items()}
        result["library_loop_ratio"] = {k: round(loop["default"][k] / loop["x1 (before)"][k], 2) for k in ("wall", "cpu")}
        result["cli_wall_ratio"] = round(best["default", "many"] / best["x1 (before)", "many"], 2)
        result["load"] = round(os.getloadavg()[0], 1)
        print(json.dumps({"predict": result}), flush=True)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def first_view() -> dict:
    """The app's first view of a new 200-px image once a model exists (one-off, in-process: the real store,
    feature store and model service, as ``pointseg serve`` runs them): the first view (for an image no larger
    than its 512-px preview, the exact prediction from the shared feature map: features included), then the
    image's features and the exact view (cache hits once the first view made them)."""
    from PIL import Image

    from pointseg.server.model_service import FeatureStore, ModelService, ModelState
    from pointseg.server.store import ProjectStore

    paths = sorted((SHARED / "datasets" / "neu_seg" / "images").iterdir())
    masks = SHARED / "datasets" / "neu_seg" / "masks"
    out = {}
    for label, factor in (("x1 (before)", 1), ("default", None)):
        tmp = Path(tempfile.mkdtemp(prefix="ctxview-"))
        try:
            store = ProjectStore(tmp / "p")
            classes = [store.add_class(n) for n in ("background", "defect")]
            ids = []
            rng = np.random.default_rng(0)
            for p in paths[:4]:
                h, w = Image.open(p).size[::-1]
                img, _ = store.add_image(sha256=p.stem.ljust(64, "0"), name=p.name, width=w, height=h, n_bytes=1,
                                         source_path=str(p))
                ids.append(img["id"])
            for image_id, p in zip(ids[:3], paths[:3]):
                mask = np.asarray(Image.open(next(masks.glob(p.stem + ".*"))))
                mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
                items = []
                for c in (0, 1):
                    ys, xs = np.nonzero(mask == c)
                    for i in rng.choice(len(ys), min(10, len(ys)), replace=False):
                        items.append({"kind": "point", "class_id": classes[c]["id"], "x": float(xs[i]), "y": float(ys[i])})
                store.add_annotations(image_id, items)
            features = FeatureStore(store, backbone="efficientnet_lite0_s32")
            if factor is not None:
                features.base.set_params(context_upscale=factor)
            service = ModelService(store, features)
            features.warm()
            model = service.fit(store.training_set(), ModelState(), lambda: False)
            new = ids[3]
            t = time.perf_counter()
            coarse = service.predict_coarse(model, new)
            t_coarse = time.perf_counter() - t
            t = time.perf_counter()
            features.get(new)
            t_features = time.perf_counter() - t
            t = time.perf_counter()
            service.predict(model, new)
            t_exact = time.perf_counter() - t
            out[label] = {"factor": model.segmenter.context_upscale_, "coarse_view_ms": round(t_coarse * 1000),
                          "coarse_model_ms": coarse.timings.get("model_ms"), "features_ms": round(t_features * 1000),
                          "exact_view_ms": round(t_exact * 1000),
                          "first_exact_view_ms": round((t_coarse + t_features + t_exact) * 1000)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out["load"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"first_view": out}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--folder", type=int, default=20)
    ap.add_argument("--cli-rounds", type=int, default=2)
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--first-view", action="store_true", help="only the app's first view of a new image")
    args = ap.parse_args()
    print(json.dumps({"start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                      "load": [round(v, 1) for v in os.getloadavg()]}), flush=True)
    if args.first_view:
        first_view()
        return
    extraction(args.repeat)
    if not args.skip_predict:
        predict_throughput(args.folder, args.cli_rounds)


if __name__ == "__main__":
    main()

"""Run the simulated-user protocols for several methods and seeds on one dataset.

:func:`evaluate` returns a plain, JSON-serialisable dict (``report.py`` turns it into tables, CSV and plots):

``runs`` holds one entry per (method, seed, protocol):

* random: ``{"protocol": "random", "points": [{"clicks": N, "interactive": {...}, "transfer": {...}}, ...]}``
* corrective: ``{"protocol": "corrective", "curve": [{"clicks": k, "interactive": {...}, "transfer": {...} | None}],
  "noc": {"80": .., "85": .., "90": ..}, "per_image": {stem: {"curve": [[clicks, mIoU], ...], "noc": {...}}}}``

where each ``{...}`` is ``{"miou", "fg_iou", "iou": {class: IoU}, "n_images"}`` accumulated over the images,
plus, with ``EvalConfig.tolerance`` (pixels, default 2), the foreground's tolerant ``"fg_f1_tol"``,
``"fg_precision_tol"``, ``"fg_recall_tol"`` and ``"tolerance_px"`` (:func:`.metrics.tolerance_counts`: the
measure crack-detection papers report; strict IoU stays the headline).

Corrective protocol, precisely: every training image starts with one click per class present (deepest point of
the class's largest region); the method is trained on all clicks. Then, for a target k = k0+1 … budget
(k0 = the smallest initial count), the training images take turns: an image with fewer than k clicks gets one
corrective click computed from the current prediction, and the method is retrained after every click. After
each round the training images are predicted ("interactive", the curve at k clicks per image) and, at the
``transfer_at`` counts, the held-out images ("transfer"). An image whose prediction has no error left gets no
more clicks. NoC@t of an image = the clicks it had when its mIoU first reached t (budget if never).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from pointseg.errors import PointsegError

from .datasets import SegmentationDataset, Split, choose_split, classes_present
from .methods import Method
from .metrics import IoUAccumulator, image_miou, mean_std, number_of_clicks
from .protocols import corrective_click, initial_clicks, random_clicks

PROTOCOLS = ("random", "corrective")


@dataclass
class EvalConfig:
    """Everything that defines an evaluation besides the dataset and the methods."""

    protocols: tuple[str, ...] = PROTOCOLS
    seeds: tuple[int, ...] = (0,)
    train_images: int = 3
    train_stems: tuple[str, ...] | None = None
    test: int | None = None
    clicks: tuple[int, ...] = (2, 5, 10, 20)
    budget: int = 20
    margin: int = 2
    transfer_at: tuple[int, ...] | None = (5, 10, 20)   # None: after every corrective round
    noc_thresholds: tuple[float, ...] = (0.80, 0.85, 0.90)
    report_at: tuple[int, ...] = (5, 10, 20)
    tolerance: float | None = 2.0   # px: the tolerant foreground F1 beside the IoU (None: not computed)

    def check(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise PointsegError(f"unknown protocol {bad[0] if bad else ''!r}; use random, corrective or both")
        if not self.seeds:
            raise PointsegError("give at least one seed")
        if any(n < 1 for n in self.clicks) or not self.clicks:
            raise PointsegError("--clicks must be positive counts, e.g. 2,5,10,20")
        if self.budget < 1:
            raise PointsegError("--budget must be at least 1")


class ImageStore:
    """Images and masks of a dataset, each read once per run."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset
        self._images: dict[str, np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}
        self.present = {s: classes_present(self.mask(s), dataset.n_classes) for s in dataset.stems}

    def image(self, stem: str) -> np.ndarray:
        if stem not in self._images:
            self._images[stem] = self.dataset.load_image(stem)
            mask = self.mask(stem)
            if mask.shape != self._images[stem].shape[:2]:
                raise PointsegError(
                    f"{stem}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f"{self._images[stem].shape[1]}x{self._images[stem].shape[0]}; they must match"
                )
        return self._images[stem]

    def mask(self, stem: str) -> np.ndarray:
        if stem not in self._masks:
            self._masks[stem] = self.dataset.load_mask(stem)
        return self._masks[stem]


@dataclass
class _Timer:
    prepare_calls: int = 0
    prepare_s: float = 0.0
    prepare_mp: float = 0.0
    fit_calls: int = 0
    fit_s: float = 0.0
    predict_calls: int = 0
    predict_s: float = 0.0
    predict_mp: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["features_ms_per_mp"] = 1000 * self.prepare_s / self.prepare_mp if self.prepare_mp else None
        d["fit_ms_mean"] = 1000 * self.fit_s / self.fit_calls if self.fit_calls else None
        d["predict_ms_per_mp"] = 1000 * self.predict_s / self.predict_mp if self.predict_mp else None
        return d


class _Driver:
    """Wraps a method with timing and a per-image prediction cache keyed by the training version."""

    def __init__(self, method: Method, store: ImageStore, timer: _Timer, prepared: set):
        self.method, self.store, self.timer = method, store, timer
        self.version = 0
        self._preds: dict[str, tuple[int, np.ndarray]] = {}
        self._prepared = prepared

    def image(self, stem) -> np.ndarray:
        """The image, with the method's per-image work (features) done and timed on first use."""
        image = self.store.image(stem)
        if stem not in self._prepared:
            t = time.perf_counter()
            self.method.prepare(image, stem)
            self.timer.prepare_s += time.perf_counter() - t
            self.timer.prepare_calls += 1
            self.timer.prepare_mp += image.shape[0] * image.shape[1] / 1e6
            self._prepared.add(stem)
        return image

    def fit(self, stems, points, seed):
        images = [self.image(s) for s in stems]
        t = time.perf_counter()
        self.method.fit(images, [np.asarray(p) for p in points], list(stems), seed=seed)
        self.timer.fit_s += time.perf_counter() - t
        self.timer.fit_calls += 1
        self.version += 1

    def predict(self, stem) -> np.ndarray:
        hit = self._preds.get(stem)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        image = self.image(stem)
        t = time.perf_counter()
        pred = np.asarray(self.method.predict(image, stem))
        self.timer.predict_s += time.perf_counter() - t
        self.timer.predict_calls += 1
        self.timer.predict_mp += image.shape[0] * image.shape[1] / 1e6
        if pred.shape != image.shape[:2]:
            raise RuntimeError(f"{self.method.name}: prediction {pred.shape} for a {image.shape[:2]} image")
        self._preds[stem] = (self.version, pred)
        return pred

    def accumulate(self, stems, tolerance: float | None = None) -> IoUAccumulator:
        acc = IoUAccumulator(self.store.dataset.n_classes, tolerance)
        for s in stems:
            acc.add(self.store.mask(s), self.predict(s))
        return acc


def _check_trainable(points, what):
    classes = set()
    for p in points:
        classes.update(int(c) for c in np.asarray(p).reshape(-1, 3)[:, 2])
    if len(classes) < 2:
        raise PointsegError(
            f"{what}: the training images contain only class(es) {sorted(classes)}; a classifier needs two - "
            "choose other --train images or more --train-images"
        )


def run_random(driver: _Driver, split: Split, seed: int, config: EvalConfig, names, tick=lambda: None) -> dict:
    store = driver.store
    K = store.dataset.n_classes
    sets = [random_clicks(store.mask(s), K, config.clicks, seed, s, config.margin) for s in split.train]
    points = []
    for n in sorted(set(config.clicks)):
        pts = [st[n] for st in sets]
        _check_trainable(pts, f"seed {seed}")
        driver.fit(split.train, pts, seed)
        inter = driver.accumulate(split.train, config.tolerance)
        trans = driver.accumulate(split.test, config.tolerance) if split.test else None
        points.append({
            "clicks": n,
            "n_points": int(sum(len(p) for p in pts)),
            "interactive": inter.as_dict(names),
            "transfer": trans.as_dict(names) if trans else None,
        })
        tick()
    return {"protocol": "random", "points": points}


def run_corrective(driver: _Driver, split: Split, seed: int, config: EvalConfig, names, tick=lambda: None) -> dict:
    store = driver.store
    K = store.dataset.n_classes
    stems = list(split.train)
    masks = [store.mask(s) for s in stems]
    clicks = [initial_clicks(m, K) for m in masks]
    _check_trainable(clicks, f"seed {seed}")
    k0 = max(1, min(len(c) for c in clicks))
    done = [False] * len(stems)
    image_curves: dict[str, list[list[float]]] = {s: [] for s in stems}
    curve = []
    transfer_at = None if config.transfer_at is None else set(config.transfer_at) | {config.budget}
    last_transfer: tuple[int, dict] | None = None

    driver.fit(stems, clicks, seed)
    for _ in range(1, k0):
        tick()
    for k in range(k0, max(k0, config.budget) + 1):
        if k > k0:
            for i, stem in enumerate(stems):
                if done[i] or len(clicks[i]) >= min(k, config.budget):
                    continue
                click = corrective_click(driver.predict(stem), masks[i], clicks[i])
                if click is None:
                    done[i] = True
                    continue
                clicks[i] = np.vstack([clicks[i], click[None]])
                driver.fit(stems, clicks, seed)
        inter = IoUAccumulator(K, config.tolerance)
        for i, stem in enumerate(stems):
            pred = driver.predict(stem)
            inter.add(masks[i], pred)
            image_curves[stem].append([int(len(clicks[i])), image_miou(masks[i], pred, K)])
        trans = None
        if split.test and (transfer_at is None or k in transfer_at):
            if last_transfer is not None and last_transfer[0] == driver.version:
                trans = last_transfer[1]
            else:
                trans = driver.accumulate(split.test, config.tolerance).as_dict(names)
                last_transfer = (driver.version, trans)
        curve.append({
            "clicks": k,
            "total_clicks": int(sum(len(c) for c in clicks)),
            "interactive": inter.as_dict(names),
            "transfer": trans,
        })
        tick()
    per_image = {}
    for s in stems:
        per_image[s] = {
            "curve": image_curves[s],
            "noc": {_pct(t): number_of_clicks(image_curves[s], t, config.budget) for t in config.noc_thresholds},
            "clicks": np.asarray(clicks[stems.index(s)]).tolist(),
        }
    noc = {_pct(t): float(np.mean([per_image[s]["noc"][_pct(t)] for s in stems])) for t in config.noc_thresholds}
    return {"protocol": "corrective", "k0": k0, "curve": curve, "noc": noc, "per_image": per_image}


def _pct(t: float) -> str:
    return str(int(round(t * 100)))


def progress_units(config: EvalConfig, n_methods: int) -> int:
    per = 0
    if "random" in config.protocols:
        per += len(set(config.clicks))
    if "corrective" in config.protocols:
        per += config.budget
    return per * len(config.seeds) * n_methods


def evaluate(
    dataset: SegmentationDataset,
    methods: list[Method],
    config: EvalConfig,
    on_progress=None,
) -> dict:
    """Run ``config.protocols`` for every method and seed; return the results dict (see module docstring).

    ``on_progress(advance, description)`` is called as work completes (``progress_units`` gives the total).
    """
    config.check()
    names = list(dataset.classes)
    store = ImageStore(dataset)
    splits = {
        seed: choose_split(dataset.stems, store.present, seed, config.train_images, config.train_stems, config.test)
        for seed in config.seeds
    }
    for seed, split in splits.items():
        if not split.train:
            raise PointsegError("no training images")
    runs = []
    timings = {}
    seen = set()
    for method in methods:
        if method.name in seen:
            raise PointsegError(f"method {method.name!r} given twice; add @label to tell them apart")
        seen.add(method.name)
        timer = _Timer()
        prepared: set = set()
        start = time.perf_counter()
        for seed in config.seeds:
            split = splits[seed]
            for protocol in config.protocols:
                desc = f"{dataset.name} · {method.name} · seed {seed} · {protocol}"

                def tick(desc=desc):
                    if on_progress:
                        on_progress(1, desc)

                if on_progress:
                    on_progress(0, desc)
                driver = _Driver(method, store, timer, prepared)
                fn = run_random if protocol == "random" else run_corrective
                result = fn(driver, split, seed, config, names, tick)
                result.update({"method": method.name, "seed": seed})
                runs.append(result)
        timer.wall_s = time.perf_counter() - start
        timings[method.name] = timer.as_dict()
    return {
        "dataset": {
            "name": dataset.name,
            "root": str(dataset.root),
            "classes": names,
            "n_images": len(dataset.stems),
            "ignore_index": dataset.ignore_index,
            "max_megapixels": dataset.max_megapixels,
        },
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "methods": {m.name: {**m.describe(), "spec": m.spec or m.name} for m in methods},
        "splits": {str(seed): {"train": list(sp.train), "test": list(sp.test)} for seed, sp in splits.items()},
        "runs": runs,
        "timings": timings,
        "summary": summarize(runs, config),
    }


def _stat(values) -> dict:
    mean, std = mean_std(values)
    return {"mean": _clean(mean), "std": _clean(std), "n": int(sum(1 for v in values if v is not None and not _isnan(v)))}


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _clean(v):
    return None if v is None or _isnan(v) else float(v)


def summarize(runs: list[dict], config: EvalConfig) -> dict:
    """Mean and spread over seeds.

    Returns ``{"random": {method: {split: {N: {"miou": stat, "fg_iou": stat, "iou": {class: stat}}}}},
    "corrective": {method: {"curve": {split: {k: ...}}, "noc": {"85": stat, ...}}}}`` with
    ``stat = {"mean", "std", "n"}``.
    """
    out: dict = {"random": {}, "corrective": {}}
    by: dict = {}
    for r in runs:
        by.setdefault((r["protocol"], r["method"]), []).append(r)
    for (protocol, method), group in by.items():
        if protocol == "random":
            table: dict = {}
            for split in ("interactive", "transfer"):
                table[split] = {}
                for n in sorted(set(config.clicks)):
                    entries = [p[split] for r in group for p in r["points"] if p["clicks"] == n and p[split]]
                    if entries:
                        table[split][str(n)] = _stats_of(entries)
            out["random"][method] = table
        else:
            curve: dict = {"interactive": {}, "transfer": {}}
            ks = sorted({c["clicks"] for r in group for c in r["curve"]})
            for split in ("interactive", "transfer"):
                for k in ks:
                    entries = [c[split] for r in group for c in r["curve"] if c["clicks"] == k and c[split]]
                    if entries:
                        curve[split][str(k)] = _stats_of(entries)
            noc = {_pct(t): _stat([r["noc"][_pct(t)] for r in group]) for t in config.noc_thresholds}
            out["corrective"][method] = {"curve": curve, "noc": noc}
    return out


#: the tolerant foreground scores an entry may carry (EvalConfig.tolerance)
TOLERANT_KEYS = ("fg_f1_tol", "fg_precision_tol", "fg_recall_tol")


def _stats_of(entries: list[dict]) -> dict:
    names = list(entries[0]["iou"])
    out = {
        "miou": _stat([e["miou"] for e in entries]),
        "fg_iou": _stat([e["fg_iou"] for e in entries]),
        "iou": {n: _stat([e["iou"][n] for e in entries]) for n in names},
    }
    for key in TOLERANT_KEYS:
        if all(key in e for e in entries):
            out[key] = _stat([e[key] for e in entries])
    if all("tolerance_px" in e for e in entries):
        out["tolerance_px"] = entries[0]["tolerance_px"]
    return out

"""The app's model work as plain calls that return values: fit, predict, cross-validate, save.

Nothing here starts a thread, waits, resolves a future or publishes an event — that is
:mod:`pointseg.server.scheduler`'s job, which calls these from its model thread. Each call takes the state
it needs (a :class:`~pointseg.server.store.TrainingSet`, a :class:`ModelState`) and returns a new value, so
the calls are testable one by one and the scheduler decides what to do with a result that came too late.

Models are made with :meth:`pointseg.Segmenter.clone` from one template that owns the loaded network
(:class:`FeatureStore`), so every model shares one network and one feature cache; refits after a click
start from the last solution (``warm_start``). After a restart the saved model of the same training set is
served again instead of refitted (:meth:`ModelService.restore_current`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pointseg.errors import PointsegError
from pointseg.fileio import atomic_write_bytes
from pointseg.lru import ByteLRU
from pointseg.server.guards import public_message, scrub_paths
from pointseg.server.media import PREVIEW_SIDE, PreviewCache
from pointseg.server.store import ProjectStore, TrainingSet

log = logging.getLogger("pointseg.server")

#: the project's sub-folder "predict all" writes into (through pointseg.batch)
BATCH_FOLDER = "predictions"

#: what a user sees before there is anything to train on
NO_MODEL_MESSAGE = "Add two classes and click points of both to train."


class NoModel(Exception):
    """There is no usable model (the message says why); the API answers 409."""


@dataclass
class ModelState:
    """The model the server predicts with, trained on the annotations at revision ``rev``."""

    rev: int = -1
    version: int = 0            # bumps on every real refit (predictions are cached per version)
    status: str = "none"        # none | ok | insufficient | error
    message: str = NO_MODEL_MESSAGE
    segmenter: object | None = None
    classes: list[str] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    background: int = 0
    settings: dict = field(default_factory=dict)
    signature: str = ""
    report: dict | None = None
    timings: dict = field(default_factory=dict)
    cv_done: bool = False
    saved: bool = False
    recorded: bool = False

    def public(self) -> dict:
        return {"rev": self.rev, "version": self.version, "status": self.status, "message": self.message,
                "classes": self.classes, "colors": self.colors, "background": self.background,
                "signature": self.signature, "report": self.report, "timings": self.timings,
                "cv_done": self.cv_done}

    def require(self) -> "ModelState":
        if self.status != "ok" or self.segmenter is None:
            raise NoModel(self.message)
        return self


#: long side of the downscaled image a new image's first, coarse overlay is predicted from: its preview's
COARSE_SIDE = PREVIEW_SIDE
#: images whose Scores are kept (per image the latest model version's): the viewed one and the one before
SCORES_KEPT = 2


@dataclass
class Result:
    """One image (or a box of it) predicted by one model version; the API encodes views of it on demand.

    ``box`` is ``(y0, y1, x0, x1)`` in image pixels (None: the whole image) and ``scale`` the output pixels
    per image pixel (1: full resolution; below 1 a screen-resolution preview or the coarse first view).
    """

    image_id: int
    rev: int
    version: int
    labels: np.ndarray              # (H, W) uint8
    proba: np.ndarray               # (K, H, W) float32
    uncertainty: np.ndarray         # (H, W) float32
    colors: list[str]
    classes: list[str]
    background: int
    timings: dict
    encoded: dict = field(default_factory=dict)   # (view, class) -> PNG bytes
    box: tuple[int, int, int, int] | None = None
    scale: float = 1.0
    coarse: bool = False

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.proba.nbytes + self.uncertainty.nbytes


class FeatureStore:
    """Feature maps by image id, on top of the core's FeatureCache (memory LRU + float16 on disk).

    ``base`` is the template Segmenter that owns the loaded network; models are its clones. Changing the
    project's ``features`` setting swaps the template (same backbone and cache, another feature kind).

    Large images (above ``pointseg.limits.PAGED_DEEP_ABOVE_PIXELS``) keep their deep map paged from a nameless
    file in the project's ``features/`` folder rather than in memory, so a map here costs its pixels and
    small parts in resident memory; ``max_bytes`` counts the paged bytes too, which bounds those files.
    """

    def __init__(self, store: ProjectStore, *, backbone: str, weights=None, precision: str = "auto",
                 max_bytes: int = 3_000_000_000, features: str | None = None):
        from pointseg import FeatureCache, Segmenter

        self.store = store
        self.cache = FeatureCache(max_bytes=max_bytes, disk_dir=store.dir / "features")
        # the default preset, so the app follows whatever pointseg's default method is
        self.base = Segmenter.preset("default", backbone=backbone, weights=weights, precision=precision,
                                     cache=self.cache, cross_validate=False)
        if features is not None:
            self.base.set_params(features=features)
        # the context factor (Segmenter.context_upscale_) the current model's features are made at; None
        # before the first fit (then each image gets what the base's rule gives it alone)
        self.factor: int | None = None
        self._keys: dict[tuple[int, int], str] = {}   # (image id, context factor) -> cache key
        self._pinned: dict[int, object] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self.compute_ms: dict[int, float] = {}

    @property
    def kind(self) -> str:
        return self.base.features_

    def use_kind(self, kind: str) -> None:
        """Switch the feature kind (``deep`` | ``hybrid``); maps of the other kind stay in the cache."""
        if kind == self.kind:
            return
        with self._guard:
            self.base = self.base.clone(features=kind)
            self._keys.clear()
            self._pinned = {}

    def warm(self) -> None:
        """Load the network and run one tiny extraction, fit and prediction, so the first click is fast."""
        self.base.extractor  # noqa: B018 - the property loads the network
        rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        fmap = self.base.extract_features(rgb)          # a ~100 kB entry in the cache, reused next start
        seg = self.base.clone(classes=["a", "b"], colors=None)
        seg.fit([fmap], [np.array([[5, 5, 0], [50, 50, 1], [10, 5, 0], [55, 50, 1]], dtype=np.float64)])
        seg.predict_full(fmap, probabilities=True)

    def use_factor(self, factor: int) -> None:
        """Make features at context factor ``factor`` from now on (the factor of the model being fitted);
        maps at other factors stay in the cache, and a model asks for its own (``get(..., factor=)``)."""
        self.factor = int(factor)

    def factor_for(self, image_id: int, factor: int | None = None) -> int:
        """``factor``, else the current model's, else the base's rule for this image's size alone."""
        if factor is not None:
            return int(factor)
        if self.factor is not None:
            return self.factor
        img = self.store.image(image_id)
        return self.base.context_factor_for([(img["height"], img["width"])])

    def ready(self, image_id: int, factor: int | None = None) -> bool:
        factor = self.factor_for(image_id, factor)
        if self._pinned_map(image_id, factor) is not None:
            return True
        key = self._keys.get((image_id, factor))
        return key is not None and key in self.cache

    def _pinned_map(self, image_id: int, factor: int):
        fmap = self._pinned.get(image_id)
        if fmap is not None and fmap.extractor_id == self.base.extractor.with_context_upscale(factor).id:
            return fmap
        return None

    def get(self, image_id: int, progress: Callable[[int, int], None] | None = None, factor: int | None = None):
        """The FeatureMap of an image at context factor ``factor`` (default :meth:`factor_for`): from memory,
        from disk, or computed now (``progress(done, total)`` is called as the backbone's tiles finish, for
        the page's progress bar)."""
        factor = self.factor_for(image_id, factor)
        fmap = self._pinned_map(image_id, factor)
        if fmap is not None:
            return fmap
        key = self._keys.get((image_id, factor))
        if key is not None and (fmap := self.cache.get(key)) is not None:
            return fmap
        with self._guard:
            lock = self._locks.setdefault(image_id, threading.Lock())
        with lock:
            key = self._keys.get((image_id, factor))
            if key is not None and (fmap := self.cache.get(key)) is not None:
                return fmap
            path = self.store.image_file(image_id)
            start = time.perf_counter()
            fmap = self.base.extractor.with_context_upscale(factor).extract(str(path), progress=progress)
            self.compute_ms[image_id] = (time.perf_counter() - start) * 1000
            self._keys[(image_id, factor)] = fmap.key
            return fmap

    def pin(self, image_ids: list[int], fmaps: list) -> None:
        """Keep the training images' maps in memory (their moments are memoised on the objects)."""
        self._pinned = dict(zip(image_ids, fmaps))

    def forget(self, image_id: int) -> None:
        self._pinned.pop(image_id, None)
        for key in [k for k in self._keys if k[0] == image_id]:
            self._keys.pop(key, None)


def context_factor(model) -> int | None:
    """The context factor of ``model``'s features (a ModelState or Segmenter), for ``FeatureStore.get``:
    a model predicts from maps made at the factor it was trained at, even when a newer fit changed it."""
    seg = getattr(model, "segmenter", model)
    return getattr(seg, "context_upscale_", None)


def classes_with_marks(ts: TrainingSet) -> set[int]:
    return {c for pts in ts.points for *_, c in pts} | {s["class"] for ss in ts.scribbles for s in ss}


def insufficiency(ts: TrainingSet) -> str | None:
    """Why ``ts`` cannot train a model (what to do about it), or None when it can. An image marked OK
    teaches the background class as clicks on it would."""
    if len(ts.classes) < 2:
        return "Add at least two classes."
    marked = classes_with_marks(ts) | ({ts.background} if any(ts.ok) else set())
    if len(marked) < 2:
        return ("Click points of at least two classes (or mark a defect-free image OK with K and click a "
                "defect) to train.")
    return None


def _points(ts: TrainingSet) -> list[np.ndarray]:
    return [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in ts.points]


class ModelService:
    """Fit / predict / cross-validate / save for one project (called from the scheduler's model thread)."""

    def __init__(self, store: ProjectStore, features: FeatureStore, *, cache_results: int = 6,
                 result_bytes: int = 600_000_000, previews: PreviewCache | None = None):
        self.store = store
        self.features = features
        self.previews = previews or PreviewCache(store)
        # bounded by count and by bytes (a 12 MP result holds ~160 MB of labels and probabilities)
        self.results: ByteLRU[Result] = ByteLRU(result_bytes, size=lambda r: r.nbytes, max_items=cache_results)
        # image id -> (model version, Scores): the head applied to the image once per version, so every
        # region and tile of the viewed image after a click reuses it
        self._scores: dict[int, tuple[int, object]] = {}
        self._scores_lock = threading.Lock()

    # ------------------------------------------------------------------ fit
    def fit(self, ts: TrainingSet, previous: ModelState, is_stale: Callable[[], bool]) -> ModelState | None:
        """A new model for ``ts``; ``None`` when ``is_stale()`` says the annotations changed meanwhile (the
        fit is dropped: nothing is ever predicted with a model of overtaken annotations)."""
        sig = ts.signature()
        version = previous.version + 1
        common = dict(rev=ts.rev, version=version, classes=list(ts.classes), colors=list(ts.colors),
                      background=ts.background, settings=dict(ts.settings), signature=sig)
        msg = insufficiency(ts)
        if msg is not None:
            return ModelState(status="insufficient", message=msg, cv_done=True, saved=True, recorded=True,
                              **common)
        t0 = time.perf_counter()
        try:
            self.features.use_kind(ts.settings.get("features") or self.features.kind)
            seg = self._estimator(ts, previous)
            # the context factor the fit will choose (the "size" rule reads the images' sizes only), so the
            # training images are extracted once, at it, and the views after the fit find their maps ready
            self.features.use_factor(self._context_factor(seg, ts))
            fmaps = [self.features.get(i) for i in ts.image_ids]
        except Exception as exc:  # noqa: BLE001 - shown to the user as the model's state
            return self._error(common, f"cannot compute features: {exc}")
        t1 = time.perf_counter()
        if is_stale():
            return None
        self.features.pin(ts.image_ids, fmaps)
        try:
            seg.fit(fmaps, _points(ts), ts.scribbles, ok=ts.ok or None)
        except PointsegError as exc:
            return self._error(common, str(exc))
        # the project's NG setting goes with the model: its file records it, and `pointseg predict`, the
        # deploy runner and "predict all" apply it (pointseg.batch.tasks.ng_area_for)
        seg.ng_area_ = ts.settings.get("ng_area")
        t2 = time.perf_counter()
        if is_stale():
            return None
        return ModelState(status="ok", message="", segmenter=seg, report=seg.training_report_.as_dict(),
                          timings={"features_ms": round((t1 - t0) * 1000, 1),
                                   "fit_ms": round((t2 - t1) * 1000, 1)}, **common)

    def _context_factor(self, seg, ts: TrainingSet) -> int:
        """The context factor ``seg``'s fit on ``ts`` gets (from the stored image sizes, no pixels read)."""
        sizes = [(img["height"], img["width"]) for img in map(self.store.image, ts.image_ids)]
        return seg.context_factor_for(sizes)

    def _estimator(self, ts: TrainingSet, previous: ModelState):
        """An unfitted model for ``ts``: a clone of the last one when the classes are the same (so the fit
        starts from its solution), else of the template."""
        prev = previous.segmenter
        same = prev is not None and previous.classes == list(ts.classes) and \
            getattr(prev, "features_", None) == self.features.kind
        params = self._params(ts)
        return (prev if same else self.features.base).clone(**params)

    def _params(self, ts: TrainingSet, **extra) -> dict:
        s = ts.settings
        params = dict(classes=list(ts.classes), colors=list(ts.colors), cross_validate=False, warm_start=True,
                      smoothing=s.get("smoothing"), C=s.get("C"), min_region=int(s.get("min_region") or 0),
                      features=s.get("features") or self.features.kind, **extra)
        if "background" in self.features.base.get_params():   # once the library knows the background class
            params["background"] = ts.background
        if params["features"] == self.features.kind:
            del params["features"]                              # keep sharing the loaded extractor
        return params

    @staticmethod
    def _error(common: dict, message: str) -> ModelState:
        return ModelState(status="error", message=message, cv_done=True, saved=True, recorded=True, **common)

    # ------------------------------------------------------------------ predict
    def predict(self, model: ModelState, image_id: int) -> Result:
        """Predict one image with ``model`` (cached per model version)."""
        model.require()
        key = (image_id, model.version)
        hit = self.results.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        fmap = self.features.get(image_id, factor=context_factor(model))
        t1 = time.perf_counter()
        pred = model.segmenter.predict_full(fmap, probabilities=True)
        t2 = time.perf_counter()
        res = self._result(model, image_id, pred, timings={"predict_ms": round((t2 - t1) * 1000, 1),
                                                           "features_wait_ms": round((t1 - t0) * 1000, 1)})
        self.results.put(key, res)
        return res

    def scores(self, model: ModelState, image_id: int):
        """The :class:`~pointseg.features.Scores` of ``image_id`` under ``model`` (kept per model version)."""
        with self._scores_lock:
            hit = self._scores.get(image_id)
        if hit is not None and hit[0] == model.version:
            return hit[1]
        scores = model.segmenter.decision_grid(self.features.get(image_id, factor=context_factor(model)))
        with self._scores_lock:
            self._scores.pop(image_id, None)
            self._scores[image_id] = (model.version, scores)
            while len(self._scores) > SCORES_KEPT:        # oldest first (dicts keep insertion order)
                self._scores.pop(next(iter(self._scores)))
        return scores

    def predict_region(self, model: ModelState, image_id: int, box: tuple[int, int, int, int],
                       scale: float = 1.0) -> Result:
        """The pixel box ``(y0, y1, x0, x1)`` of one image at ``scale``: at scale 1 equal to the same crop of
        :meth:`predict` (the library's :meth:`~pointseg.Segmenter.predict_region`), in time proportional to
        the box. The whole image at scale 1 is :meth:`predict` itself (cached, shared with stats)."""
        model.require()
        img = self.store.image(image_id)
        if scale == 1 and tuple(box) == (0, img["height"], 0, img["width"]):
            return self.predict(model, image_id)
        t0 = time.perf_counter()
        scores = self.scores(model, image_id)
        t1 = time.perf_counter()
        pred = model.segmenter.predict_region(scores, box, scale=scale, probabilities=True)
        t2 = time.perf_counter()
        return self._result(model, image_id, pred, box=tuple(box), scale=scale,
                            timings={"predict_ms": round((t2 - t1) * 1000, 1),
                                     "features_wait_ms": round((t1 - t0) * 1000, 1)})

    def predict_coarse(self, model: ModelState, image_id: int) -> Result:
        """A new image's first view before its features exist: the whole method on the image's preview
        (:class:`~pointseg.server.media.PreviewCache`: read from ``thumbs/``, or made now from the file when
        the background has not made it yet) via :meth:`~pointseg.Segmenter.predict_coarse`, at that size.
        Timings say which (``preview``: ``cached`` | ``decoded``) and what it cost (``read_ms``,
        ``model_ms``).

        An image no larger than the preview *is* its preview: its first view is then its exact prediction,
        from the feature map the exact view reads (made once, shared with the features thread) — a separate
        coarse pass would cost as much as those features (small images get the ×4 context) and be thrown
        away."""
        from pointseg.imageio import coarse_scale

        model.require()
        img = self.store.image(image_id)
        size = (img["height"], img["width"])
        if max(size) <= COARSE_SIDE:
            return self.predict(model, image_id)
        t0 = time.perf_counter()
        pixels, cached = self.previews.get(image_id)
        t1 = time.perf_counter()
        pred = model.segmenter.predict_coarse(pixels, max_side=COARSE_SIDE, probabilities=True, image_size=size)
        t2 = time.perf_counter()
        timings = {"preview": "cached" if cached else "decoded", "read_ms": round((t1 - t0) * 1000, 1),
                   "model_ms": round((t2 - t1) * 1000, 1), "predict_ms": round((t2 - t0) * 1000, 1)}
        return self._result(model, image_id, pred, box=(0, size[0], 0, size[1]),
                            scale=coarse_scale(size, COARSE_SIDE), coarse=True, timings=timings)

    @staticmethod
    def _result(model: ModelState, image_id: int, pred, timings: dict, **where) -> Result:
        return Result(image_id=image_id, rev=model.rev, version=model.version,
                      labels=pred.labels.astype(np.uint8), proba=pred.probabilities, uncertainty=pred.uncertainty,
                      colors=list(model.colors), classes=list(model.classes), background=model.background,
                      timings={**model.timings, **timings}, **where)

    # ------------------------------------------------------------------ predict all (pointseg.batch)
    def batch_folder(self) -> Path:
        """Where "predict all" writes, as ``pointseg predict -o`` would: ``<id>.png`` label PNGs, the run
        manifest (what resume reads) and ``summary.csv``."""
        return self.store.dir / BATCH_FOLDER

    def plan_batch(self, model: ModelState, image_ids: list[int],
                   feature_error: Callable[[int], str | None] = lambda image_id: None):
        """The "predict all" run of ``image_ids`` with ``model``: a :class:`pointseg.batch.BatchRun`, the
        CLI's engine in this process, resumed from its manifest (images this very model predicted, whose
        files are unchanged, are taken over). It predicts from the feature maps the features thread made
        (``feature_error(id)``: that thread's message for an image it could not read). ``None`` when no
        image is left (deleted meanwhile)."""
        from pointseg.batch import BatchRun, InputItem

        names = {img["id"]: img["name"] for img in self.store.list_images()}
        items = []
        for image_id in image_ids:
            if image_id in names:
                items.append(InputItem(str(self.store.image_file(image_id)), names[image_id], str(image_id)))
        if not items:
            return None
        return BatchRun(model.require().segmenter, items, str(self.batch_folder()), resume=True,
                        reader=self._batch_reader(feature_error, context_factor(model)))

    def _batch_reader(self, feature_error: Callable[[int], str | None], factor: int | None = None):
        """The engine's reader for the app: the image's cached FeatureMap (never the network again), and
        the file's fingerprint for the manifest."""
        from pointseg.batch.manifest import fingerprint

        def read(item) -> dict:
            image_id = int(item.stem)
            error = feature_error(image_id)
            if error is not None:
                raise PointsegError(error)
            try:
                fmap = self.features.get(image_id, factor=factor)
            except Exception as exc:  # noqa: BLE001 - an unreadable image: a one-line error without paths
                raise PointsegError(public_message(exc)) from None
            try:
                fp = fingerprint(item.location)
            except (OSError, ValueError, PointsegError):
                fp = {}  # no fingerprint: the image is simply not resumable
            return {"image": fmap, "fingerprint": fp}
        return read

    def store_batch_result(self, model: ModelState, image_id: int, result) -> str | None:
        """Record one engine result in the store (the label PNG and the engine's summary row, which the
        page's badges and the exported summary.csv read); returns the error of a failed image."""
        if result.ok:
            label = next(o for o in result.outputs if o.endswith(".png"))
            self.store.set_prediction(image_id, model.rev, "ok", f"{BATCH_FOLDER}/{label}", result.measures,
                                      model_sig=model.signature)
            self.store.set_image_error(image_id, None)
            return None
        error = scrub_paths(result.error or "prediction failed")
        self.store.set_image_error(image_id, error)
        self.store.set_prediction(image_id, model.rev, "failed", None, {"error": error}, model_sig=model.signature)
        return error

    def forget_image(self, image_id: int) -> None:
        self.features.forget(image_id)
        with self._scores_lock:
            self._scores.pop(image_id, None)
        self.results.discard_where(lambda key: key[0] == image_id)

    # ------------------------------------------------------------------ cross-validation
    def cross_validate(self, model: ModelState, ts: TrainingSet, should_stop: Callable[[], bool]) -> dict | None:
        """The library's one protocol (:func:`pointseg.classifier.cross_validate`) on ``model``'s training
        set, checking ``should_stop()`` between folds: the report entries, or ``None`` when interrupted.
        Raises nothing for a training set that changed: the caller compares signatures first.

        With images marked OK the fit goes on past the estimate to learn the per-part NG rule from them, as
        ``pointseg train`` does (``ng_rule``: the caller puts it on the model, so the saved file and
        "predict all" decide OK / NG with it; the report gets its ``part_confusion``)."""
        from pointseg.classifier import (CrossValidationFinished, CrossValidationInterrupted,
                                         cross_validation_context)

        start = time.perf_counter()
        seg = self._estimator(ts, ModelState()).set_params(cross_validate=True, warm_start=False)
        factor = self._context_factor(seg, ts)
        fmaps = [self.features.get(i, factor=factor) for i in ts.image_ids]
        learn_rule = any(ts.ok)
        res, rule, confusion = None, None, None
        try:
            # without OK images only the estimate is wanted: the fit ends right after it (no final head, no
            # NG-rule predictions)
            with cross_validation_context(should_stop, only_estimate=not learn_rule) as ctx:
                seg.fit(fmaps, _points(ts), ts.scribbles, ok=ts.ok or None)
            res, rule, confusion = ctx.result, seg.ng_rule_, seg.training_report_.part_confusion
        except CrossValidationFinished as done:
            res = done.result
        except CrossValidationInterrupted:
            return None
        except PointsegError:
            pass
        report = {"cv_accuracy": res.accuracy if res else None, "cv_method": res.method if res else None,
                  "cv_points": res.n_scored if res else 0,
                  "cv_protocol": "pointseg.classifier.cross_validate (held-out marks scored by the "
                                 "head on their features)"}
        if rule is not None:
            report.update(ng_rule=rule.as_dict(), part_confusion=confusion)
        return {"report": report, "ng_rule": rule, "cv_ms": round((time.perf_counter() - start) * 1000, 1)}

    # ------------------------------------------------------------------ persistence
    def record(self, model: ModelState) -> None:
        self.store.add_model_version(model.rev, model.classes, model.report or {}, model.timings)

    def save(self, model: ModelState, path: Path) -> Path:
        """Write ``model`` as a ``.pointseg`` file at ``path`` (atomically); returns the path."""
        model.require().segmenter.save(path)
        return path

    def save_current(self, model: ModelState) -> None:
        """The project's ``models/current.pointseg`` (+ a small JSON of what it was trained on)."""
        path = self.store.dir / "models" / "current.pointseg"
        self.save(model, path)
        meta = {"rev": model.rev, "classes": model.classes, "background": model.background,
                "settings": model.settings, "signature": model.signature, "version": model.version,
                "report": model.report}
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta).encode())

    def restore_current(self, ts: TrainingSet, previous: ModelState) -> ModelState | None:
        """The model the project saved last (``models/current.pointseg``) when it was trained on exactly
        ``ts`` (same signature: annotations, OK marks, classes, settings), else ``None``.

        Why: after a restart the user gets the model they had, at once and bit for bit, instead of a refit
        that differs in the last digits (a chain of warm-started refits does not end where one fit from
        scratch does) — so "predict all" resumes the images that model already predicted, and the NG rule
        its cross-validation learned is there without running it again. The model is put on the template's
        network (:meth:`_on_template`), as every other model of the app is."""
        from pointseg import Segmenter

        path = self.store.dir / "models" / "current.pointseg"
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("signature") != ts.signature() or not path.is_file():
            return None
        base = self.features.base
        try:
            loaded = Segmenter.load(path, weights=base.weights, cache=base.cache)
        except (PointsegError, OSError, ValueError) as exc:
            log.warning("the saved model is not used (%s); training again", public_message(exc))
            return None
        if loaded.backbone != base.backbone or loaded.features_ != self.features.kind \
                or list(loaded.classes_) != list(ts.classes):
            return None
        seg = self._on_template(loaded)
        self.features.use_factor(getattr(seg, "context_upscale_", 1))   # views find its maps, as after a fit
        report = meta.get("report") if isinstance(meta.get("report"), dict) else seg.training_report_.as_dict()
        return ModelState(status="ok", message="", segmenter=seg, report=report, timings={"restored": True},
                          rev=ts.rev, version=previous.version + 1, classes=list(ts.classes),
                          colors=list(ts.colors), background=ts.background, settings=dict(ts.settings),
                          signature=ts.signature(), cv_done=True, recorded=True, saved=True)

    #: modelling parameters a saved model carries over to its copy on the template (the rest are the
    #: template's: network, cache, the ``context_upscale`` rule — its fitted factor comes with the state)
    _CARRIED_PARAMS = ("C", "class_weight", "smoothing", "prior_correction", "min_region", "background",
                       "autocontext", "ng_rule")

    def _on_template(self, loaded):
        """``loaded``'s fitted state (every public attribute ending in ``_``, scikit-learn's convention) on
        a clone of the template, so it shares the loaded network instead of holding a second one."""
        seg = self.features.base.clone(classes=list(loaded.classes_), colors=list(loaded.colors_),
                                       cross_validate=False, warm_start=True)
        for name in self._CARRIED_PARAMS:
            setattr(seg, name, getattr(loaded, name))
        for name, value in vars(loaded).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(seg, name, value)
        return seg

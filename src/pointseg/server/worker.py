"""Training and prediction off the request thread.

Two daemon threads do all heavy work so request handlers only read the store and wait on futures:

* the **features thread** computes feature maps (the one expensive step) for images as they are first
  viewed, for the neighbours of the viewed image, and ahead of "predict all"; results go to the core's
  :class:`~pointseg.features.FeatureCache`, whose disk layer lives in ``PROJECT_DIR/features`` so a
  restarted server never recomputes them;
* the **model thread** retrains after edits (debounced; a fit whose annotations changed meanwhile is
  dropped, i.e. cancelled, before anything is predicted with it), answers prediction requests for the
  images clients are looking at, fills in the cross-validated accuracy when idle, and runs "predict all"
  one image at a time (cancellable, and interleaved with interactive work so clicks stay fast).

Retraining uses :meth:`pointseg.Segmenter.fit` on :class:`~pointseg.features.FeatureMap` objects from
:meth:`~pointseg.Segmenter.extract_features`, so a click never runs the network.
"""
from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pointseg.errors import PointsegError
from pointseg.annotations import atomic_write_bytes
from pointseg.server.store import ProjectStore, TrainingSet

log = logging.getLogger("pointseg.server")

#: above this many pixels per image, cross-validation uses the core's one-call CV (see _cross_validate)
CV_FOLD_PIXELS = 4_000_000

#: priorities of feature jobs (lower runs first)
PRIO_VIEW, PRIO_TRAIN, PRIO_PREFETCH, PRIO_BATCH = 0, 1, 2, 3


@dataclass
class ModelState:
    """The model the server predicts with, at annotation revision ``rev``."""

    rev: int = -1
    version: int = 0            # bumps on every real refit (predictions are cached per version)
    status: str = "none"        # none | ok | insufficient | error
    message: str = "Add two classes and click points of both to train."
    segmenter: object | None = None
    classes: list[str] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    signature: str = ""
    report: dict | None = None
    timings: dict = field(default_factory=dict)
    cv_done: bool = False
    saved: bool = False
    recorded: bool = False

    def public(self) -> dict:
        return {"rev": self.rev, "version": self.version, "status": self.status, "message": self.message,
                "classes": self.classes, "colors": self.colors, "report": self.report,
                "timings": self.timings, "cv_done": self.cv_done}


@dataclass
class Result:
    """One image predicted by one model version; the API encodes views of it on demand."""

    image_id: int
    rev: int
    version: int
    labels: np.ndarray              # (H, W) uint8
    proba: np.ndarray               # (K, H, W) float32
    uncertainty: np.ndarray         # (H, W) float32
    colors: list[str]
    classes: list[str]
    timings: dict
    encoded: dict = field(default_factory=dict)   # (view, class) -> PNG bytes

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.proba.nbytes + self.uncertainty.nbytes


class NoModel(Exception):
    """Raised into a prediction future when there is no usable model (the message says why)."""


class EventHub:
    """Fan-out of JSON-able events to any number of listeners (the SSE stream); thread-safe."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[dict], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[dict], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)
        return unsubscribe

    def publish(self, event: dict) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # a dead listener must not break the worker
                log.exception("event listener failed")


class FeatureStore:
    """Feature maps by image id, on top of the core's FeatureCache (memory LRU + float16 on disk)."""

    def __init__(self, store: ProjectStore, *, backbone: str, weights=None, precision: str = "auto",
                 max_bytes: int = 3_000_000_000):
        from pointseg import FeatureCache, Segmenter

        self.store = store
        self.cache = FeatureCache(max_bytes=max_bytes, disk_dir=store.dir / "features")
        # A template Segmenter that owns the feature extractor; models are shallow copies of it, so they
        # all share one loaded network and one cache.
        # the default preset, so the app follows whatever pointseg's default method is
        self.base = Segmenter.preset("default", backbone=backbone, weights=weights, precision=precision,
                                     cache=self.cache, cross_validate=False)
        self._keys: dict[int, str] = {}
        self._pinned: dict[int, object] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self.compute_ms: dict[int, float] = {}

    def warm(self) -> None:
        """Load the network and run one tiny extraction, fit and prediction, so the first click is fast."""
        self.base.extractor  # noqa: B018 - the property loads the network
        rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        fmap = self.base.extract_features(rgb)          # a ~100 kB entry in the cache, reused next start
        seg = copy.copy(self.base)
        seg.classes = ["a", "b"]
        seg.fit([fmap], [np.array([[5, 5, 0], [50, 50, 1], [10, 5, 0], [55, 50, 1]], dtype=np.float64)])
        seg.predict_full(fmap, probabilities=True)

    def ready(self, image_id: int) -> bool:
        key = self._keys.get(image_id)
        return image_id in self._pinned or (key is not None and key in self.cache)

    def get(self, image_id: int):
        """The FeatureMap of an image: from memory, from disk, or computed now."""
        fmap = self._pinned.get(image_id)
        if fmap is not None:
            return fmap
        key = self._keys.get(image_id)
        if key is not None:
            fmap = self.cache.get(key)
            if fmap is not None:
                return fmap
        with self._guard:
            lock = self._locks.setdefault(image_id, threading.Lock())
        with lock:
            key = self._keys.get(image_id)
            if key is not None and (fmap := self.cache.get(key)) is not None:
                return fmap
            path = self.store.image_file(image_id)
            start = time.perf_counter()
            fmap = self.base.extract_features(str(path))
            self.compute_ms[image_id] = (time.perf_counter() - start) * 1000
            self._keys[image_id] = fmap.key
            return fmap

    def pin(self, image_ids: list[int], fmaps: list) -> None:
        """Keep the training images' maps in memory (their moments are memoised on the objects)."""
        self._pinned = dict(zip(image_ids, fmaps))

    def forget(self, image_id: int) -> None:
        self._pinned.pop(image_id, None)
        self._keys.pop(image_id, None)


def _cv_folds(ts: TrainingSet) -> tuple[list[tuple[dict, dict]], str | None]:
    """Folds as ``(train, test)``: train maps image id → (points, scribbles); test maps image id → marks
    ``(x, y, class)`` (points, and up to five vertices of each scribble)."""
    def marks_of(points, scribbles):
        out = [tuple(p) for p in points]
        for sc in scribbles:
            verts = sc["points"]
            step = max(1, len(verts) // 5)
            out += [(x, y, sc["class"]) for x, y in verts[::step][:5]]
        return out

    if len(ts.image_ids) >= 2:
        folds = []
        for k, held in enumerate(ts.image_ids):
            train = {i: (ts.points[j], ts.scribbles[j]) for j, i in enumerate(ts.image_ids) if j != k}
            folds.append((train, {held: marks_of(ts.points[k], ts.scribbles[k])}))
        return folds, "leave-one-image-out"
    if not ts.image_ids:
        return [], None
    image_id = ts.image_ids[0]
    units = [("p", p, p[2]) for p in ts.points[0]] + [("s", sc, sc["class"]) for sc in ts.scribbles[0]]
    by_class: dict[int, list] = {}
    for u in units:
        by_class.setdefault(u[2], []).append(u)
    if len(by_class) < 2:
        return [], None
    k = min(5, min(len(v) for v in by_class.values()))
    if k < 2:
        return [], None
    assign = {}
    for members in by_class.values():
        for n, u in enumerate(members):
            assign[id(u)] = n % k
    folds = []
    for f in range(k):
        tr = [u for u in units if assign[id(u)] != f]
        te = [u for u in units if assign[id(u)] == f]
        train = {image_id: ([u[1] for u in tr if u[0] == "p"], [u[1] for u in tr if u[0] == "s"])}
        test = {image_id: marks_of([u[1] for u in te if u[0] == "p"], [u[1] for u in te if u[0] == "s"])}
        folds.append((train, test))
    return folds, f"{k}-fold"


def _signature(ts: TrainingSet) -> str:
    raw = json.dumps([ts.classes, ts.colors, ts.image_ids, ts.points, ts.scribbles], sort_keys=True)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


class Worker:
    """Owns the model, the feature jobs and "predict all" for one project."""

    def __init__(self, store: ProjectStore, features: FeatureStore, events: EventHub | None = None,
                 *, debounce_s: float = 0.01, idle_s: float = 1.0, cache_results: int = 6,
                 result_bytes: int = 600_000_000):
        self.store = store
        self.features = features
        self.events = events or EventHub()
        self.debounce_s = debounce_s
        # cross-validation (several fits) and bookkeeping wait until the user pauses this long, so they
        # never sit between a click and its overlay
        self.idle_s = idle_s
        self._prev_edit = 0.0
        self.model = ModelState()
        self._cond = threading.Condition()
        self._edit_rev = store.rev()
        self._last_edit = 0.0
        self._requests: list[tuple[int, int, Future]] = []      # (image_id, min_rev, future)
        self._results: OrderedDict[tuple[int, int], Result] = OrderedDict()
        self._cache_results = cache_results
        self.result_bytes = result_bytes
        self._fjobs: list[tuple[int, int, int]] = []             # heap of (prio, seq, image_id)
        self._fqueued: dict[int, int] = {}
        self._fcond = threading.Condition()
        self._seq = itertools.count()
        self._stop = False
        self._warmed = threading.Event()
        # "id" numbers the runs, so a client can tell a late copy of a run's start from its progress
        self.batch: dict = {"id": 0, "running": False, "done": 0, "total": 0, "failed": 0, "rev": None,
                            "cancelled": False, "seconds": 0.0}
        self._batch_queue: list[int] = []
        self._batch_cancel = False
        self._batch_started = 0.0
        self.cancelled_fits = 0
        self._threads = [threading.Thread(target=self._model_loop, name="pointseg-model", daemon=True),
                         threading.Thread(target=self._feature_loop, name="pointseg-features", daemon=True)]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for t in self._threads:
            t.start()
        # train at once if the project already has annotations (e.g. after a restart)
        self.notify_edit(self.store.rev())

    def stop(self) -> None:
        self._stop = True
        with self._cond:
            self._cond.notify_all()
        with self._fcond:
            self._fcond.notify_all()
        # a fit or a feature computation in flight is not waited for: the threads are daemons and
        # every state change they make is one SQLite transaction, so stopping mid-way is safe
        for t in self._threads:
            t.join(timeout=0.5)

    # ------------------------------------------------------------------ called by request handlers
    def notify_edit(self, rev: int) -> None:
        with self._cond:
            self._edit_rev = max(self._edit_rev, rev)
            self._prev_edit, self._last_edit = self._last_edit, time.monotonic()
            self._cond.notify_all()

    def request_features(self, image_id: int, prio: int = PRIO_VIEW) -> bool:
        """Queue a feature computation; returns True when the features are already there."""
        if self.features.ready(image_id):
            return True
        with self._fcond:
            if prio == PRIO_VIEW:
                # the user has moved on: images viewed before become guesses, done when the user pauses
                for other, p in list(self._fqueued.items()):
                    if p == PRIO_VIEW and other != image_id:
                        self._fqueued[other] = PRIO_PREFETCH
                        heapq.heappush(self._fjobs, (PRIO_PREFETCH, next(self._seq), other))
            old = self._fqueued.get(image_id)
            if old is None or prio < old:
                self._fqueued[image_id] = prio
                # the image viewed last comes first (the user flipped past the others); prefetch and
                # batch jobs keep their order
                seq = next(self._seq)
                heapq.heappush(self._fjobs, (prio, -seq if prio == PRIO_VIEW else seq, image_id))
                self._fcond.notify_all()
        return False

    def request_prediction(self, image_id: int, min_rev: int | None = None) -> Future:
        """A future that resolves to a :class:`Result` of this image with a model at ``rev >= min_rev``
        (default: the current revision), or raises :class:`NoModel`."""
        fut: Future = Future()
        if min_rev is None:
            min_rev = self.store.rev()
        with self._cond:
            m = self.model
            if m.rev >= min_rev and self._edit_rev <= m.rev:
                if m.status != "ok":
                    fut.set_exception(NoModel(m.message))
                    return fut
                hit = self._results.get((image_id, m.version))
                if hit is not None:
                    self._results.move_to_end((image_id, m.version))
                    fut.set_result(hit)
                    return fut
            self._requests.append((image_id, min_rev, fut))
            self._cond.notify_all()
        return fut

    def latest_result(self, image_id: int) -> Result | None:
        with self._cond:
            hit = self._results.get((image_id, self.model.version))
            return hit

    def start_batch(self, image_ids: list[int]) -> dict:
        with self._cond:
            if self.model.status != "ok":
                raise NoModel(self.model.message)
            self._batch_queue = list(image_ids)
            self._batch_cancel = False
            self._batch_started = time.monotonic()
            self.batch = {"id": self.batch["id"] + 1, "running": True, "done": 0, "total": len(image_ids),
                          "failed": 0, "rev": self.model.rev, "cancelled": False, "seconds": 0.0}
            self._cond.notify_all()
        for i in image_ids[:2]:
            self.request_features(i, PRIO_BATCH)
        self.events.publish({"type": "batch", **self.batch})
        return dict(self.batch)

    def cancel_batch(self) -> dict:
        with self._cond:
            if self.batch["running"]:
                self._batch_cancel = True
                self._cond.notify_all()
            return dict(self.batch)

    def forget_image(self, image_id: int) -> None:
        self.features.forget(image_id)
        with self._cond:
            for key in [k for k in self._results if k[0] == image_id]:
                del self._results[key]

    def status(self) -> dict:
        with self._cond:
            return {"model": self.model.public(), "batch": dict(self.batch),
                    "training": self._edit_rev > self.model.rev, "edit_rev": self._edit_rev,
                    "cancelled_fits": self.cancelled_fits,
                    "features": {"cache_hits": self.features.cache.hits,
                                 "cache_misses": self.features.cache.misses}}

    # ------------------------------------------------------------------ feature thread
    def _feature_loop(self) -> None:
        try:
            self.features.warm()
        except Exception as exc:  # weights missing etc.: the model thread reports it on training
            log.error("warm-up failed: %s", exc)
        finally:
            self._warmed.set()
        while not self._stop:
            with self._fcond:
                job = None
                while job is None and not self._stop:
                    if not self._fjobs:
                        self._fcond.wait()
                        continue
                    prio, _, image_id = self._fjobs[0]
                    if self._fqueued.get(image_id) != prio:
                        heapq.heappop(self._fjobs)   # superseded by a higher-priority entry
                        continue
                    if prio == PRIO_PREFETCH:
                        # guesses about the next image wait until the user pauses: a network run would
                        # take the cores from the fit and prediction of a click
                        quiet = time.monotonic() - self._last_edit
                        if quiet < self.idle_s or self._edit_rev > self.model.rev or self._requests:
                            self._fcond.wait(max(0.05, self.idle_s - quiet))
                            continue
                    heapq.heappop(self._fjobs)
                    del self._fqueued[image_id]
                    job = image_id
                if self._stop:
                    return
            start = time.perf_counter()
            try:
                self.features.get(image_id).moments()   # memoised: the first fit with it stays fast
                status, message = "ready", None
            except PointsegError as exc:
                status, message = "error", str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the page, never kills the thread
                log.exception("features of image %s failed", image_id)
                status, message = "error", f"{type(exc).__name__}: {exc}"
            ms = (time.perf_counter() - start) * 1000
            self.events.publish({"type": "features", "image_id": image_id, "status": status,
                                 "message": message, "ms": round(ms, 1)})
            with self._cond:
                self._cond.notify_all()   # a batch may be waiting for these

    # ------------------------------------------------------------------ model thread
    def _model_loop(self) -> None:
        # a first fit racing the warm-up would run cold code on contended cores: let the warm-up finish
        self._warmed.wait(60)
        while not self._stop:
            try:
                task = self._next_task()
                if task is not None:
                    task()
            except Exception:  # noqa: BLE001 - never let the model thread die
                log.exception("model thread error")
                time.sleep(0.05)

    def _next_task(self):
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                if self._edit_rev > self.model.rev:
                    # debounce on the trailing edge only within a burst: the first edit after a pause
                    # trains at once, edits in quick succession are coalesced into one fit
                    burst = self._last_edit - self._prev_edit < self.debounce_s
                    wait = self._last_edit + self.debounce_s - now
                    if burst and wait > 0:
                        self._cond.wait(wait)
                        continue
                    return self._train
                if self._requests:
                    return self._serve_requests
                if self.batch["running"]:
                    return self._batch_step
                idle = now - self._last_edit
                if self.model.status == "ok" and not (self.model.cv_done and self.model.recorded
                                                      and self.model.saved):
                    if idle < self.idle_s:
                        self._cond.wait(self.idle_s - idle)
                        continue
                    if not self.model.cv_done:
                        return self._cross_validate
                    if not self.model.recorded:
                        return self._record
                    return self._save_model
                self._cond.wait(1.0)
            return None

    def _fail_requests(self, message: str) -> None:
        with self._cond:
            keep = []
            for image_id, min_rev, fut in self._requests:
                if min_rev <= self.model.rev:
                    if not fut.done():
                        fut.set_exception(NoModel(message))
                else:
                    keep.append((image_id, min_rev, fut))
            self._requests = keep

    def _train(self) -> None:
        ts = self.store.training_set()
        sig = _signature(ts)
        if sig == self.model.signature and self.model.status in ("ok", "insufficient"):
            with self._cond:
                self.model.rev = max(self.model.rev, ts.rev)   # nothing that training sees changed
            if self.model.status != "ok":
                self._fail_requests(self.model.message)
            return
        with_points = {c for pts in ts.points for *_, c in pts} | {s["class"] for ss in ts.scribbles for s in ss}
        if len(ts.classes) < 2 or len(with_points) < 2:
            msg = ("Add at least two classes." if len(ts.classes) < 2 else
                   "Click points of at least two classes to train.")
            with self._cond:
                self.model = ModelState(rev=ts.rev, version=self.model.version + 1, status="insufficient",
                                        message=msg, classes=ts.classes, colors=ts.colors, signature=sig,
                                        cv_done=True, saved=True, recorded=True)
            self._fail_requests(msg)
            self.events.publish({"type": "model", **self.model.public()})
            return
        t0 = time.perf_counter()
        try:
            fmaps = [self.features.get(i) for i in ts.image_ids]
        except Exception as exc:  # noqa: BLE001
            self._set_error(ts, sig, f"cannot compute features: {exc}")
            return
        t1 = time.perf_counter()
        if self.store.rev() > ts.rev and _signature(self.store.training_set()) != sig:
            # annotations changed while features were computed: start over with the newer ones
            self.cancelled_fits += 1
            return
        self.features.pin(ts.image_ids, fmaps)
        previous = self.model.segmenter
        same_classes = previous is not None and getattr(previous, "classes_", None) == list(ts.classes)
        # refits after a click start from the last solution (the core's warm start): far fewer iterations
        seg = copy.copy(previous if same_classes else self.features.base)
        seg.classes, seg.colors, seg.cross_validate = list(ts.classes), list(ts.colors), False
        seg.warm_start = True
        try:
            seg.fit(fmaps, [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in ts.points],
                    ts.scribbles)
        except PointsegError as exc:
            self._set_error(ts, sig, str(exc))
            return
        t2 = time.perf_counter()
        if self.store.rev() > ts.rev and _signature(self.store.training_set()) != sig:
            # cancelled: annotations changed during the fit; never predict with a stale model
            self.cancelled_fits += 1
            return
        report = seg.training_report_.as_dict()
        with self._cond:
            self.model = ModelState(
                rev=ts.rev, version=self.model.version + 1, status="ok", message="", segmenter=seg,
                classes=list(ts.classes), colors=list(ts.colors), signature=sig, report=report,
                timings={"features_ms": round((t1 - t0) * 1000, 1), "fit_ms": round((t2 - t1) * 1000, 1)})
        self.events.publish({"type": "model", **self.model.public()})

    def _set_error(self, ts: TrainingSet, sig: str, message: str) -> None:
        with self._cond:
            self.model = ModelState(rev=ts.rev, version=self.model.version + 1, status="error",
                                    message=message, classes=ts.classes, colors=ts.colors,
                                    signature=sig, cv_done=True, saved=True, recorded=True)
        self._fail_requests(message)
        self.events.publish({"type": "model", **self.model.public()})

    def predict(self, image_id: int) -> Result:
        """Predict one image with the current model (model thread only)."""
        m = self.model
        key = (image_id, m.version)
        hit = self._results.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        fmap = self.features.get(image_id)
        t1 = time.perf_counter()
        pred = m.segmenter.predict_full(fmap, probabilities=True)
        labels = pred.labels.astype(np.uint8)
        t2 = time.perf_counter()
        res = Result(image_id=image_id, rev=m.rev, version=m.version, labels=labels,
                     proba=pred.probabilities, uncertainty=pred.uncertainty, colors=list(m.colors),
                     classes=list(m.classes),
                     timings={**m.timings, "predict_ms": round((t2 - t1) * 1000, 1),
                              "features_wait_ms": round((t1 - t0) * 1000, 1)})
        with self._cond:
            self._results[key] = res
            # bounded by count and by bytes (a 12 MP result holds ~160 MB of labels and probabilities)
            while len(self._results) > 1 and (
                    len(self._results) > self._cache_results
                    or sum(r.nbytes for r in self._results.values()) > self.result_bytes):
                self._results.popitem(last=False)
        return res

    def _serve_requests(self) -> None:
        with self._cond:
            m = self.model
            if self._edit_rev > m.rev:
                return  # retrain first
            ready = [r for r in self._requests if r[1] <= m.rev]
            self._requests = [r for r in self._requests if r[1] > m.rev]
        if m.status != "ok":
            for _, _, fut in ready:
                if not fut.done():
                    fut.set_exception(NoModel(m.message))
            return
        # most recent request first: that is the image the user is looking at now
        done: dict[int, Result | Exception] = {}
        for image_id, _, fut in reversed(ready):
            if image_id not in done:
                try:
                    done[image_id] = self.predict(image_id)
                except Exception as exc:  # noqa: BLE001
                    log.exception("prediction of image %s failed", image_id)
                    done[image_id] = exc
                    # fall through: the future gets the exception
            out = done[image_id]
            if fut.done():
                continue
            if isinstance(out, Exception):
                fut.set_exception(out)
            else:
                fut.set_result(out)
            with self._cond:
                if self._edit_rev > self.model.rev:
                    # a new edit arrived: retrain before predicting more images
                    pend = [(i, r, f) for i, r, f in reversed(ready) if not f.done() and i not in done]
                    self._requests = pend + self._requests
                    return

    def _cross_validate(self) -> None:
        """Cross-validated accuracy for the status line, one fold at a time through ``fit``/``predict``.

        The core's ``fit(cross_validate=True)`` runs every fold in one call; a click arriving meanwhile would
        wait for all of them (several fits). Fold by fold, an edit or a prediction request stops the
        estimate after the current fold, and it is started again the next time the user pauses. Protocol as
        in the core: leave-one-image-out when two or more images are annotated, else stratified k-fold
        (k ≤ 5) over the marks; held-out marks are scored by the model's label at their pixel.
        """
        m = self.model
        ts = self.store.training_set()
        if _signature(ts) != m.signature:
            with self._cond:
                m.cv_done = True   # stale: the next fit starts over
            return
        folds, method = _cv_folds(ts)
        start = time.perf_counter()
        correct = total = 0
        fmaps = {i: self.features.get(i) for i in ts.image_ids}
        if max((np.prod(f.image_size) for f in fmaps.values()), default=0) > CV_FOLD_PIXELS:
            # scoring a fold means predicting its held-out image: on large images the core's own CV
            # (scored on sampled features, a few fits in one call) is the cheaper interruption
            self._core_cross_validate(m, ts, fmaps, start)
            return
        for train, test in folds:
            with self._cond:
                if self._stop or self.model is not m or self._edit_rev > m.rev or self._requests \
                        or self.batch["running"]:
                    return   # interrupted: cv_done stays False, so it runs again at the next pause
            ids = [i for i in train if train[i][0] or train[i][1]]
            present = {c for i in ids for *_, c in train[i][0]} | {sc["class"] for i in ids for sc in train[i][1]}
            if len(present) < 2:
                continue
            seg = copy.copy(self.features.base)
            seg.classes, seg.colors, seg.cross_validate = list(ts.classes), list(ts.colors), False
            try:
                seg.fit([fmaps[i] for i in ids], [np.asarray(train[i][0], np.float64).reshape(-1, 3) for i in ids],
                        [train[i][1] for i in ids])
            except PointsegError:
                continue
            for image_id, marks in test.items():
                if not marks:
                    continue
                labels = seg.predict_full(fmaps[image_id], probabilities=False).labels
                h, w = labels.shape
                for x, y, c in marks:
                    correct += int(labels[min(h - 1, max(0, int(y))), min(w - 1, max(0, int(x)))] == c)
                    total += 1
        cv_ms = (time.perf_counter() - start) * 1000
        with self._cond:
            if self.model is not m:
                return
            m.report = {**(m.report or {}), "cv_accuracy": correct / total if total else None,
                        "cv_method": method if total else None}
            m.timings = {**m.timings, "cv_ms": round(cv_ms, 1)}
            m.cv_done = True
        self.events.publish({"type": "model", **m.public()})

    def _core_cross_validate(self, m: ModelState, ts: TrainingSet, fmaps: dict, start: float) -> None:
        seg = copy.copy(self.features.base)
        seg.classes, seg.colors, seg.cross_validate = list(ts.classes), list(ts.colors), True
        try:
            seg.fit([fmaps[i] for i in ts.image_ids],
                    [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in ts.points], ts.scribbles)
        except PointsegError:
            with self._cond:
                m.cv_done = True
            return
        with self._cond:
            if self.model is not m:
                return
            m.report = {**(m.report or {}), "cv_accuracy": seg.training_report_.cv_accuracy,
                        "cv_method": seg.training_report_.cv_method}
            m.timings = {**m.timings, "cv_ms": round((time.perf_counter() - start) * 1000, 1)}
            m.cv_done = True
        self.events.publish({"type": "model", **m.public()})

    def _record(self) -> None:
        m = self.model
        self.store.add_model_version(m.rev, m.classes, m.report or {}, m.timings)
        m.recorded = True

    def _save_model(self) -> None:
        m = self.model
        path = self.store.dir / "models" / "current.pointseg"
        tmp = path.with_name(".current.tmp.pointseg")
        m.segmenter.save(tmp)
        tmp.replace(path)
        meta = {"rev": m.rev, "classes": m.classes}
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta).encode())
        m.saved = True

    def save_model_now(self, path: Path) -> None:
        """Write the current model file (called from a request thread for export)."""
        m = self.model
        if m.status != "ok" or m.segmenter is None:
            raise NoModel(m.message)
        m.segmenter.save(path)

    # ------------------------------------------------------------------ predict all
    def _batch_step(self) -> None:
        with self._cond:
            if self._batch_cancel or not self._batch_queue:
                self.batch.update(running=False, cancelled=self._batch_cancel,
                                  seconds=round(time.monotonic() - self._batch_started, 2))
                self._batch_queue = []
                event = {"type": "batch", **self.batch}
            else:
                event = None
                image_id = self._batch_queue[0]
        if event is not None:
            self.events.publish(event)
            return
        if not self.features.ready(image_id):
            self.request_features(image_id, PRIO_BATCH)
            with self._cond:
                self._cond.wait(0.2)   # the feature thread notifies when done
            return
        for nxt in self._batch_queue[1:3]:
            self.request_features(nxt, PRIO_BATCH)
        from pointseg.server.render import label_png, label_stats

        try:
            res = self.predict(image_id)
            data = label_png(res.labels, res.colors)
            rel = f"predictions/{image_id}.png"
            atomic_write_bytes(self.store.dir / rel, data)
            self.store.set_prediction(image_id, res.rev, "ok", rel, label_stats(res.labels, res.classes))
            ok = True
        except Exception as exc:  # noqa: BLE001
            log.warning("predict all: image %s failed: %s", image_id, exc)
            self.store.set_prediction(image_id, self.model.rev, "error", None, {"error": str(exc)})
            ok = False
        with self._cond:
            if self._batch_queue and self._batch_queue[0] == image_id:
                self._batch_queue.pop(0)
            self.batch["done"] += 1
            self.batch["failed"] += 0 if ok else 1
            self.batch["seconds"] = round(time.monotonic() - self._batch_started, 2)
            event = {"type": "batch", "image_id": image_id, **self.batch}
        self.events.publish(event)

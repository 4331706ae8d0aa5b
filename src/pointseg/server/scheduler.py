"""Threads, priorities, debounce, futures and events — and nothing else.

Two daemon threads do all heavy work, so request handlers only read the store and wait on futures:

* the **features thread** computes feature maps (the one expensive step) for images as they are first
  viewed, for the neighbours of the viewed image, and ahead of "predict all", in priority order
  (:data:`PRIO_VIEW` first), publishing tiles done / total as it goes; it runs PyTorch on every core;
* the **previews thread** makes the small previews first views and thumbnails read
  (:class:`~pointseg.server.media.PreviewCache`) for images that have none — after the project opens and
  after images are added — at the lowest priority: at the OS's lowest (nice 19), and only while the user
  is idle and the features thread has no job, so a preview's decode neither slows a click nor adds to the
  memory of a feature extraction;
* the **model thread** runs PyTorch on one thread (set once when it starts: small matrix products gain
  nothing from a pool, and the features thread keeps the other core busy). In priority order it retrains
  after edits (debounced within a burst; a fit whose annotations changed meanwhile is dropped), answers
  prediction requests (coarse first views, then the regions viewers show, then whole images; the most
  recent first; one whose image's features are being computed waits without holding the thread), runs jobs (exports), steps "predict all" one image at a
  time, and when the user pauses fills in the cross-validated accuracy fold by fold (an edit or a request
  interrupts it after the current fold), records and saves the model.

The work itself is :class:`~pointseg.server.model_service.ModelService`'s; this module is the only place
that resolves futures and publishes events.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, NamedTuple

from pointseg.server.guards import public_message
from pointseg.server.model_service import ModelService, ModelState, NoModel, Result, insufficiency

log = logging.getLogger("pointseg.server")

#: priorities of feature jobs (lower runs first)
PRIO_VIEW, PRIO_TRAIN, PRIO_PREFETCH, PRIO_BATCH = 0, 1, 2, 3


@dataclass(frozen=True)
class Want:
    """What a prediction request asks for: the ``whole`` image, a ``region`` (``box`` = (y0, y1, x0, x1)
    at ``scale``), or the ``coarse`` first view of an image whose features are not there yet."""

    kind: str = "whole"
    box: tuple[int, int, int, int] | None = None
    scale: float = 1.0

    @property
    def order(self) -> int:
        """Serving order: the coarse first view (quick, and it is all the user has), regions (what the user
        sees, tens of ms), whole images (stats, suggestions: the longest)."""
        return {"coarse": 0, "region": 1}.get(self.kind, 2)


WHOLE = Want()


class _Request(NamedTuple):
    image_id: int
    min_rev: int
    fut: Future
    want: Want

    @property
    def key(self) -> tuple:
        return self.image_id, self.want


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
            except Exception:  # a dead listener must not break the scheduler
                log.exception("event listener failed")


def _torch_threads(n: int) -> None:
    """Set this thread's PyTorch thread count (per thread once the thread has used PyTorch)."""
    try:
        import torch

        torch.get_num_threads()          # initialise this thread's own count first
        torch.set_num_threads(max(1, n))
    except Exception:  # noqa: BLE001 - a stand-in without torch in tests
        pass


def _lowest_os_priority() -> None:
    """Make the calling thread the OS's lowest-priority one (Linux nices threads one by one): what it does
    runs only on cores nothing else wants."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # another OS: the idle checks alone keep it out of the way
        pass


class Scheduler:
    """Owns the model state, the feature jobs, the jobs queue and "predict all" for one project."""

    def __init__(self, service: ModelService, events: EventHub | None = None, *, debounce_s: float = 0.01,
                 idle_s: float = 1.0):
        self.service = service
        self.store = service.store
        self.features = service.features
        self.events = events or EventHub()
        self.debounce_s = debounce_s
        # cross-validation (several fits) and bookkeeping wait until the user pauses this long, so they
        # never sit between a click and its overlay
        self.idle_s = idle_s
        self.model = ModelState()
        self._cond = threading.Condition()
        self._edit_rev = self.store.rev()
        self._last_edit = self._prev_edit = 0.0
        self._requests: list[_Request] = []
        self._jobs: list[tuple[Callable[[ModelState], object], Future]] = []
        self._fjobs: list[tuple[int, int, int]] = []             # heap of (prio, seq, image_id)
        self._fqueued: dict[int, int] = {}
        self._fcurrent: int | None = None                        # the image the features thread is on
        self.previews = service.previews
        self._previews_wanted = threading.Event()                # a scan for images without a preview
        self._previews_pending = len(self.store.list_images())   # until the first scan says how many
        self._feature_errors: dict[int, str] = {}
        self._fcond = threading.Condition()
        self._seq = itertools.count()
        self._stop = False
        self._warmed = threading.Event()
        self._model_thread_ready = threading.Event()
        # "id" numbers the runs, so a client can tell a late copy of a run's start from its progress
        self.batch: dict = {"id": 0, "running": False, "waiting": False, "done": 0, "skipped": 0,
                            "resumed": False, "total": 0,
                            "failed": 0, "rev": None, "cancelled": False, "seconds": 0.0, "message": None}
        self._batch_queue: list[int] = []      # ids the run has still to predict, in its order
        self._batch_cancel = False
        self._batch_started = 0.0
        # the run (pointseg.batch.BatchRun) planned for the model it was planned with; its results are drawn
        # one per step on the model thread only (_batch_results belongs to that thread)
        self._batch_run = None
        self._batch_run_model: ModelState | None = None
        self._batch_results = None
        self._batch_results_of = None
        self.cancelled_fits = 0
        self._threads = [threading.Thread(target=self._model_loop, name="pointseg-model", daemon=True),
                         threading.Thread(target=self._feature_loop, name="pointseg-features", daemon=True),
                         threading.Thread(target=self._preview_loop, name="pointseg-previews", daemon=True)]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        # the model thread sets its one PyTorch thread first, then the features thread all cores: threads
        # started later (request handlers) inherit the last value set, i.e. the default
        self._threads[0].start()
        self._model_thread_ready.wait(10)
        self._threads[1].start()
        self._previews_wanted.set()
        self._threads[2].start()
        # train at once if the project already has annotations (e.g. after a restart)
        self.notify_edit(self.store.rev())

    def stop(self) -> None:
        self._stop = True
        self._previews_wanted.set()
        with self._cond:
            self._cond.notify_all()
        with self._fcond:
            self._fcond.notify_all()
        # a fit or a feature computation in flight is not waited for: the threads are daemons and
        # every state change they make is one SQLite transaction, so stopping mid-way is safe
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=0.5)

    # ------------------------------------------------------------------ called by request handlers
    def notify_edit(self, rev: int) -> None:
        with self._cond:
            self._edit_rev = max(self._edit_rev, rev)
            self._prev_edit, self._last_edit = self._last_edit, time.monotonic()
            self._cond.notify_all()

    def publish(self, event: dict) -> None:
        self.events.publish(event)

    def changed(self, rev: int, **extra) -> None:
        """The project changed at ``rev`` (an edit, a class, a setting): retrain and tell every page."""
        self.notify_edit(rev)
        if extra.get("what") == "images":
            self._previews_wanted.set()            # uploads come with theirs; anything else is made
        self.events.publish({"type": "changed", "rev": rev, **extra})

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

    def request_prediction(self, image_id: int, min_rev: int | None = None, want: Want = WHOLE) -> Future:
        """A future that resolves to a :class:`Result` of this image (``want``: the whole image, a region or
        the coarse first view) with a model at ``rev >= min_rev`` (default: the current revision), or raises
        :class:`NoModel`.

        A request whose image's features are being computed waits for them without holding the model thread
        (other images' requests, the coarse view and clicks go on meanwhile)."""
        fut: Future = Future()
        if min_rev is None:
            min_rev = self.store.rev()
        if want.kind != "coarse" and not self.features.ready(image_id):
            self.request_features(image_id, PRIO_VIEW)
        with self._cond:
            m = self.model
            if m.rev >= min_rev and self._edit_rev <= m.rev:
                if m.status != "ok":
                    fut.set_exception(NoModel(m.message))
                    return fut
                hit = self.service.results.get((image_id, m.version)) if want.kind == "whole" else None
                if hit is not None:
                    fut.set_result(hit)
                    return fut
            self._requests.append(_Request(image_id, min_rev, fut, want))
            self._cond.notify_all()
        return fut

    def _waits_for_features(self, r: _Request) -> bool:
        """True while ``r``'s image is queued on, or in, the features thread (the model thread skips it)."""
        if r.want.kind == "coarse" or self.features.ready(r.image_id):
            return False
        with self._fcond:
            return r.image_id in self._fqueued or self._fcurrent == r.image_id

    def _servable(self) -> list[_Request]:
        return [r for r in self._requests if not self._waits_for_features(r)]

    def submit(self, job: Callable[[ModelState], object]) -> Future:
        """Run ``job(model)`` on the model thread once the model is up to date (exports); its value or
        exception resolves the returned future."""
        fut: Future = Future()
        with self._cond:
            self._jobs.append((job, fut))
            self._cond.notify_all()
        return fut

    def start_batch(self, image_ids: list[int]) -> dict:
        """Start "predict all" over ``image_ids`` through :mod:`pointseg.batch` (the CLI's engine). Images
        the current model has predicted already (the run's manifest says so, and their files are unchanged)
        are skipped, so a run after Stop resumes; while the model is (re)training the run waits for it."""
        with self._cond:
            m = self.model
            training = self._edit_rev > m.rev or m.status == "none"
            if training:
                # (re)training, e.g. right after a restart: wait for it, unless it cannot give a model
                why = insufficiency(self.store.training_set())
                if why is not None:
                    raise NoModel(why)
            elif m.status != "ok":
                raise NoModel(m.message)
        # planned here (reads the manifest, hashes the inputs it lists) so the reply shows the resumed
        # progress; while a model is pending, the first step plans with the model it gets
        run = None if training else self.service.plan_batch(m, image_ids, self._feature_error)
        resumed = [] if run is None else self._take_over(m, run)
        with self._cond:
            self._batch_run, self._batch_run_model = run, (None if run is None else m)
            todo = set(image_ids) if run is None else {int(item.stem) for item in run.todo}
            self._batch_queue = [i for i in image_ids if i in todo]
            skipped = len(resumed)
            self._batch_cancel = False
            self._batch_started = time.monotonic()
            self.batch = {"id": self.batch["id"] + 1, "running": True, "waiting": training, "done": skipped,
                          "skipped": skipped, "resumed": skipped > 0, "total": len(image_ids),
                          "failed": 0, "rev": m.rev, "cancelled": False, "seconds": 0.0, "message": None}
            self._cond.notify_all()
            event = {"type": "batch", **self.batch}
        for i in self._batch_queue[:2]:
            self.request_features(i, PRIO_BATCH)
        self.events.publish(event)
        return dict(self.batch)

    def _take_over(self, m: ModelState, run) -> list[int]:
        """Ids of the images ``run`` resumes; their store rows follow the manifest (a run killed between
        its manifest line and its store row left the row behind)."""
        ids = [int(r.item.stem) for r in run.resumed]
        current = self._current_predictions(m)
        for r in run.resumed:
            if int(r.item.stem) not in current:
                self.service.store_batch_result(m, int(r.item.stem), r)
        return ids

    def _feature_error(self, image_id: int) -> str | None:
        with self._fcond:
            return self._feature_errors.get(image_id)

    def cancel_batch(self) -> dict:
        with self._cond:
            if self.batch["running"]:
                self._batch_cancel = True
                self._cond.notify_all()
            return dict(self.batch)

    def forget_image(self, image_id: int) -> None:
        self.service.forget_image(image_id)
        with self._fcond:
            self._feature_errors.pop(image_id, None)

    def status(self) -> dict:
        with self._cond:
            cache = self.features.cache
            return {"model": self.model.public(), "batch": dict(self.batch),
                    "training": self._edit_rev > self.model.rev, "edit_rev": self._edit_rev,
                    "cancelled_fits": self.cancelled_fits,
                    "features": {"cache_hits": cache.hits, "cache_misses": cache.misses},
                    "previews": {"pending": self._previews_pending}}

    # ------------------------------------------------------------------ previews thread
    def _preview_loop(self) -> None:
        _lowest_os_priority()
        while not self._stop:
            self._previews_wanted.wait()
            self._previews_wanted.clear()
            if self._stop:
                return
            todo = [i["id"] for i in self.store.list_images() if not self.previews.has(i["id"])]
            self._previews_pending = len(todo)
            for image_id in todo:
                if not self._wait_until_idle():
                    return
                try:
                    self.previews.make(image_id)
                except Exception as exc:  # noqa: BLE001 - unreadable or deleted: the features thread reports it
                    log.debug("preview of image %s not made: %s", image_id, public_message(exc))
                self._previews_pending -= 1

    def _wait_until_idle(self) -> bool:
        """Wait until nobody needs the cores (no request, no edit for ``idle_s``, no fit pending, the
        features thread without a job); False when the scheduler stops meanwhile."""
        while not self._stop:
            with self._cond:
                quiet = time.monotonic() - self._last_edit
                busy = bool(self._requests) or self._edit_rev > self.model.rev or quiet < self.idle_s
            with self._fcond:
                busy = busy or self._fcurrent is not None or bool(self._fqueued)
            if not busy:
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------ features thread
    def _feature_loop(self) -> None:
        _torch_threads(os.cpu_count() or 1)
        try:
            self.features.base.extractor  # noqa: B018 - load the network before the first view needs it
        except Exception as exc:  # weights missing etc.: the model thread reports it on training
            log.error("loading the network failed: %s", exc)
        finally:
            self._warmed.set()
        while not self._stop:
            image_id = self._next_feature_job()
            if image_id is None:
                return
            start = time.perf_counter()
            try:
                self.features.get(image_id, progress=self._progress_reporter(image_id)).moments()  # memoised
                status, message = "ready", None
            except Exception as exc:  # noqa: BLE001 - reported to the page, never kills the thread
                if not isinstance(exc, (OSError, ValueError)) and type(exc).__module__.split(".")[0] != "pointseg":
                    log.exception("features of image %s failed", image_id)
                status, message = "error", public_message(exc)
            ms = (time.perf_counter() - start) * 1000
            with self._fcond:
                self._fcurrent = None
                if message is None:
                    self._feature_errors.pop(image_id, None)
                else:
                    self._feature_errors[image_id] = message
            if self._mark_failed(image_id, message):
                self.events.publish({"type": "image", "image_id": image_id,
                                     "status": "failed" if message else "ok", "error": message})
            self.events.publish({"type": "features", "image_id": image_id, "status": status,
                                 "message": message, "ms": round(ms, 1)})
            with self._cond:
                self._cond.notify_all()   # a batch may be waiting for these

    def _progress_reporter(self, image_id: int) -> Callable[[int, int], None]:
        """``progress(done, total)`` for the extractor: a ``features`` event with ``status="running"`` per
        backbone tile, so the page shows real progress (tiles done / total) of the image's features."""
        def progress(done: int, total: int) -> None:
            self.events.publish({"type": "features", "image_id": image_id, "status": "running",
                                 "done": done, "total": total})
        return progress

    def _mark_failed(self, image_id: int, message: str | None) -> bool:
        try:
            return self.store.set_image_error(image_id, message)
        except Exception:  # noqa: BLE001 - deleted meanwhile, or the disk is full: the event still goes out
            return False

    def _next_feature_job(self) -> int | None:
        with self._fcond:
            while not self._stop:
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
                self._fcurrent = image_id
                return image_id
        return None

    # ------------------------------------------------------------------ model thread
    def _model_loop(self) -> None:
        _torch_threads(1)
        self._model_thread_ready.set()
        # a first fit racing the network's loading would run cold code on contended cores: wait for it
        self._warmed.wait(60)
        try:
            self.features.warm()      # one tiny fit and prediction, so the first click is fast
        except Exception as exc:  # noqa: BLE001
            log.error("warm-up failed: %s", exc)
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
                if self._servable():
                    return self._serve_requests
                if self._jobs:
                    return self._run_job
                if self.batch["running"]:
                    return self._batch_step
                m = self.model
                if m.status == "ok" and not (m.cv_done and m.recorded and m.saved):
                    idle = now - self._last_edit
                    if idle < self.idle_s:
                        self._cond.wait(self.idle_s - idle)
                        continue
                    if not m.cv_done:
                        return self._cross_validate
                    if not m.recorded:
                        return self._record
                    return self._save_model
                self._cond.wait(1.0)
            return None

    def _set_model(self, model: ModelState) -> None:
        with self._cond:
            self.model = model
        if model.status != "ok":
            self._fail_requests(model.message)
        self.events.publish({"type": "model", **model.public()})

    def _fail_requests(self, message: str) -> None:
        with self._cond:
            keep = []
            for r in self._requests:
                if r.min_rev <= self.model.rev:
                    if not r.fut.done():
                        r.fut.set_exception(NoModel(message))
                else:
                    keep.append(r)
            self._requests = keep

    def _train(self) -> None:
        ts = self.store.training_set()
        sig = ts.signature()
        m = self.model
        if sig == m.signature and m.status in ("ok", "insufficient"):
            with self._cond:
                m.rev = max(m.rev, ts.rev)   # nothing that training sees changed
            if m.status != "ok":
                self._fail_requests(m.message)
            return

        def stale() -> bool:
            return self.store.rev() > ts.rev and self.store.training_set().signature() != sig

        new = self.service.restore_current(ts, m) if m.status == "none" else None   # after a restart
        if new is None:
            new = self.service.fit(ts, m, stale)
        if new is None:
            # cancelled: annotations changed during the fit; never predict with a stale model
            self.cancelled_fits += 1
            return
        self._set_model(new)

    def _serve_requests(self) -> None:
        with self._cond:
            m = self.model
            if self._edit_rev > m.rev:
                return  # retrain first
            servable = set(map(id, self._servable()))
            ready = [r for r in self._requests if r.min_rev <= m.rev and id(r) in servable]
            self._requests = [r for r in self._requests if id(r) not in set(map(id, ready))]
        if m.status != "ok":
            for r in ready:
                if not r.fut.done():
                    r.fut.set_exception(NoModel(m.message))
            return
        # coarse views, then regions, then whole images; within each the most recent request first: that is
        # what the user is looking at now
        order = sorted(reversed(ready), key=lambda r: r.want.order)
        done: dict[tuple, Result | Exception] = {}
        for r in order:
            if r.key not in done:
                done[r.key] = self._predict(m, r)
            out = done[r.key]
            if not r.fut.done():
                if isinstance(out, Exception):
                    r.fut.set_exception(out)
                else:
                    r.fut.set_result(out)
            with self._cond:
                if self._edit_rev > self.model.rev:
                    # a new edit arrived: retrain before predicting more
                    pend = [p for p in order if not p.fut.done() and p.key not in done]
                    self._requests = pend + self._requests
                    return

    def _predict(self, m: ModelState, r: _Request) -> Result | Exception:
        try:
            if r.want.kind == "coarse":
                return self.service.predict_coarse(m, r.image_id)
            if r.want.kind == "region":
                return self.service.predict_region(m, r.image_id, r.want.box, r.want.scale)
            return self.service.predict(m, r.image_id)
        except Exception as exc:  # noqa: BLE001 - the future carries it to the request
            log.warning("prediction of image %s failed: %s", r.image_id, exc)
            return exc

    def _run_job(self) -> None:
        with self._cond:
            job, fut = self._jobs.pop(0)
            m = self.model
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(job(m))
        except BaseException as exc:  # noqa: BLE001 - the request that submitted it reports it
            fut.set_exception(exc)

    def _cross_validate(self) -> None:
        m = self.model
        ts = self.store.training_set()
        if ts.signature() != m.signature:
            with self._cond:
                m.cv_done = True   # stale: the next fit starts over
            return

        def interrupted() -> bool:
            with self._cond:
                return (self._stop or self.model is not m or self._edit_rev > m.rev or bool(self._servable())
                        or bool(self._jobs) or self.batch["running"])

        out = self.service.cross_validate(m, ts, interrupted)
        if out is None:
            return   # interrupted: cv_done stays False, so it runs again at the next pause
        with self._cond:
            if self.model is not m:
                return
            m.report = {**(m.report or {}), **out["report"]}
            if out.get("ng_rule") is not None:       # learned from the OK images: the saved model decides with it
                m.segmenter.ng_rule_ = out["ng_rule"]
            m.timings = {**m.timings, "cv_ms": out["cv_ms"]}
            m.cv_done = True
        self.events.publish({"type": "model", **m.public()})

    def _record(self) -> None:
        m = self.model
        self.service.record(m)
        m.recorded = True

    def _save_model(self) -> None:
        m = self.model
        try:
            self.service.save_current(m)
        finally:
            m.saved = True        # a full disk must not make the thread retry forever

    # ------------------------------------------------------------------ predict all
    def _batch_step(self) -> None:
        """One image of "predict all" (then the model thread looks at clicks again): plan the run with the
        current model if it changed, wait for the image's features, draw the engine's next result."""
        with self._cond:
            m = self.model
            run_id = self.batch["id"]
            finished = self._batch_cancel or not self._batch_queue
            if not finished and m.status != "ok":
                if self._edit_rev > m.rev or m.status == "none":
                    self.batch["waiting"] = True       # retraining (e.g. right after a restart): wait
                    self._cond.wait(0.2)
                    return
                self.batch["message"] = m.message
                finished = True
            if finished:
                self.batch.update(running=False, waiting=False, cancelled=self._batch_cancel,
                                  seconds=round(time.monotonic() - self._batch_started, 2))
                self._batch_queue = []
                ended = self._batch_run
                self._batch_run = self._batch_run_model = None
                self._cond.notify_all()
                event = {"type": "batch", **self.batch}
            else:
                self.batch.update(waiting=False, rev=m.rev)
                event = None
                image_id = self._batch_queue[0]
                run, planned_with = self._batch_run, self._batch_run_model
        if event is not None:
            complete = not event["cancelled"] and event["message"] is None
            self._close_batch_results(ended if complete else None)
            self.events.publish(event)
            return
        if run is None or planned_with is not m:
            self._replan_batch(m, run_id)          # a new model: the images left, with it
            return
        with self._fcond:
            error = self._feature_errors.get(image_id)
        if error is None and not self.features.ready(image_id):
            self.request_features(image_id, PRIO_BATCH)
            with self._cond:
                self._cond.wait(0.2)   # the feature thread notifies when done (or failed)
            return
        for nxt in self._batch_queue[1:3]:
            self.request_features(nxt, PRIO_BATCH)
        result = self._next_batch_result(run)
        if result is None or int(result.item.stem) != image_id:
            if not self._batch_cancel:              # (a Stop just now ends the run at the next step)
                log.error("predict all: the run lost its place at image %s", image_id)   # a bug
                with self._cond:
                    self._batch_run = None          # plan again over what is left
            return
        try:
            error = self.service.store_batch_result(m, image_id, result)
        except Exception as exc:  # noqa: BLE001 - e.g. the disk is full: the image counts as failed
            error = public_message(exc)
        if error is not None:
            log.warning("predict all: image %s failed: %s", image_id, error)
        self._batch_advance(image_id, "failed" if error is not None else "done", error, run_id)

    def _replan_batch(self, m: ModelState, run_id: int) -> None:
        with self._cond:
            ids = list(self._batch_queue)
        try:
            run = self.service.plan_batch(m, ids, self._feature_error)
        except Exception as exc:  # noqa: BLE001 - e.g. the project folder is read-only: say so, stop
            with self._cond:
                if self.batch["id"] == run_id:
                    self.batch["message"] = public_message(exc)
                    self._batch_queue = []
            return
        resumed = [] if run is None else self._take_over(m, run)
        with self._cond:
            if self.batch["id"] != run_id:
                return                              # a new run started meanwhile
            self._batch_run, self._batch_run_model = run, m
            todo = set() if run is None else {int(item.stem) for item in run.todo}
            self._batch_queue = [i for i in ids if i in todo]
        for image_id in resumed:
            self._batch_advance(image_id, "skipped", None, run_id)
        for image_id in set(ids) - todo - set(resumed):
            self._batch_advance(image_id, "failed", "the image was deleted", run_id)

    def _next_batch_result(self, run):
        """The engine's next result for an image it predicts (results it resumes were counted when the run
        was planned); the results iterator lives on this, the model thread."""
        if self._batch_results_of is not run:
            self._close_batch_results()
            self._batch_results = run.results(cancel=lambda: self._batch_cancel)
            self._batch_results_of = run
        for result in self._batch_results:
            if not result.resumed:
                return result
        self._close_batch_results()                 # exhausted: summary.csv written
        return None

    def _close_batch_results(self, finished=None) -> None:
        """End the engine's results iterator. ``finished``: the run that just predicted its last image; its
        remaining (resumed) results are taken first, so the engine writes its summary.csv and manifest as
        `pointseg predict` does. Closing early keeps every finished manifest line."""
        if finished is not None:
            if self._batch_results_of is not finished:     # everything was resumed: nothing drawn yet
                self._close_batch_results()
                self._batch_results, self._batch_results_of = finished.results(), finished
            for _ in self._batch_results:                   # only resumed results are left: no work
                pass
        if self._batch_results is not None:
            self._batch_results.close()
        self._batch_results = self._batch_results_of = None

    def _current_predictions(self, m: ModelState) -> set[int]:
        """Ids of the images whose stored prediction is from model ``m`` (one query)."""
        return {i["id"] for i in self.store.list_images(model_sig=m.signature)
                if i["prediction"] is not None and i["prediction"]["status"] == "ok" and not i["prediction_stale"]}

    def _batch_advance(self, image_id: int, outcome: str, error: str | None = None,
                       run_id: int | None = None) -> None:
        with self._cond:
            if run_id is not None and self.batch["id"] != run_id:
                return                              # a result of a run that was replaced
            if self._batch_queue and self._batch_queue[0] == image_id:
                self._batch_queue.pop(0)
            self.batch["done"] += 1
            self.batch["failed"] += outcome == "failed"
            self.batch["skipped"] += outcome == "skipped"
            self.batch["seconds"] = round(time.monotonic() - self._batch_started, 2)
            event = {"type": "batch", "image_id": image_id, "outcome": outcome, "error": error, **self.batch}
        self.events.publish(event)

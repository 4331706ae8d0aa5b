"""The app's "next image to annotate": unannotated images ordered by how much annotating them should help.

The order is :func:`pointseg.decision.rank_images_for_annotation` with the current model — the same function
the folder protocol of ``pointseg evaluate`` measures against a random order (BENCHMARKS.md).

Scoring an image is one prediction of it. Each image is scored by its own scheduler job on the model thread
(:meth:`~pointseg.server.scheduler.Scheduler.submit`), and the model thread takes a refit after an edit and
an overlay request before any job, so a click waits at most for one image's prediction, never for a whole
folder's ranking. Scores are kept per model version: after a refit, only images asked about again are
rescored.

Images whose features are not computed yet are not scored: their features cost about a second per
megapixel each, and a folder may hold thousands. They follow the scored images (in list order, marked
``pending``), and each ranking request queues a few of them (:data:`PREFETCH`) at prefetch priority, which
the features thread runs only while the user pauses, so the ranking fills in as the user works.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from pydantic import BaseModel

from pointseg.decision import DEFAULT_RANKING, PER_IMAGE_RANKINGS, rank_images_for_annotation
from pointseg.errors import PointsegError
from pointseg.server.model_service import NoModel
from pointseg.server.scheduler import PRIO_PREFETCH

#: feature computations queued (at prefetch priority) per request for images that cannot be scored yet
PREFETCH = 8


class RankedImage(BaseModel):
    id: int
    name: str
    priority: float
    current: bool            # scored by the current model (else by an earlier one, being rescored)


class RankingOut(BaseModel):
    """Unannotated images, most useful to annotate first (``ranked``), then those not scored yet
    (``pending``); ``complete`` when every one is scored by the current model."""

    kind: str
    model_rev: int
    model_version: int
    ranked: list[RankedImage]
    pending: list[int]
    complete: bool
    annotated: int


def is_annotated(img: dict) -> bool:
    return img["n_points"] + img["n_scribbles"] > 0 or bool(img.get("ok"))


class AnnotationRanking:
    """Per-image priorities for the current model, computed as scheduler jobs and kept per model version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scores: dict[tuple[int, str], tuple[int, float]] = {}     # (image, kind) -> (version, priority)
        self._inflight: dict[tuple[int, str], Future] = {}

    def rank(self, services, kind: str = DEFAULT_RANKING, wait_s: float = 2.0) -> dict:
        """The ranking of the project's unannotated images (waits up to ``wait_s`` for scores to come in)."""
        if kind not in PER_IMAGE_RANKINGS:
            raise PointsegError(f"unknown ranking {kind!r}; choose one of: {', '.join(PER_IMAGE_RANKINGS)}")
        scheduler, features = services.scheduler, services.features
        model = scheduler.model
        if model.status != "ok":
            raise NoModel(model.message)
        images = services.store.list_images()
        todo = [i for i in images if not is_annotated(i) and i["status"] != "failed"]
        futures, missing = [], []
        for img in todo:
            key = (img["id"], kind)
            with self._lock:
                have = self._scores.get(key)
                if have is not None and have[0] == model.version:
                    continue
                fut = self._inflight.get(key)
            if fut is None or fut.done():
                if not features.ready(img["id"]):
                    missing.append(img["id"])
                    continue
                fut = scheduler.submit(lambda m, image_id=img["id"]: self._score(m, image_id, kind, features))
                with self._lock:
                    self._inflight[key] = fut
            futures.append(fut)
        for image_id in missing[:PREFETCH]:
            scheduler.request_features(image_id, PRIO_PREFETCH)
        if futures and wait_s > 0:
            wait_futures(futures, timeout=wait_s)
        return self._answer(scheduler.model, todo, kind, len(images) - len(todo))

    def _score(self, model, image_id: int, kind: str, features) -> float | None:
        """One image's priority with ``model`` (on the model thread); None when it cannot be scored now."""
        if model.status != "ok" or model.segmenter is None or not features.ready(image_id):
            return None    # no model, or the features were evicted meanwhile: never compute them here
        priority = rank_images_for_annotation(model.segmenter, [features.get(image_id)], kind)[0][1]
        with self._lock:
            self._scores[(image_id, kind)] = (model.version, priority)
        return priority

    def _answer(self, model, todo: list[dict], kind: str, n_annotated: int) -> dict:
        """Images scored by the current model first, then those scored by an earlier one (the best guess
        while they are rescored: the list does not jump back to name order after each click), then the
        rest; by priority within each group (stable: ties keep the list's order)."""
        ranked, pending = [], []
        with self._lock:
            for img in todo:
                have = self._scores.get((img["id"], kind))
                if have is None:
                    pending.append(img["id"])
                else:
                    ranked.append({"id": img["id"], "name": img["name"], "priority": have[1],
                                   "current": have[0] == model.version})
        ranked.sort(key=lambda r: (not r["current"], -r["priority"]))
        return {"kind": kind, "model_rev": model.rev, "model_version": model.version, "ranked": ranked,
                "pending": pending, "complete": not pending and all(r["current"] for r in ranked),
                "annotated": n_annotated}

    def forget_image(self, image_id: int) -> None:
        with self._lock:
            for key in [k for k in self._scores if k[0] == image_id]:
                del self._scores[key]

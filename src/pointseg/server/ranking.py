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

import numpy as np

from pointseg.decision import (DEFAULT_RANKING, PER_IMAGE_RANKINGS, committee_disagreement,
                               coverage_clusters, diversity_from_descriptors, fit_committee, image_descriptor,
                               rank_images_for_annotation)
from pointseg.errors import PointsegError
from pointseg.features import tiles_without_eviction
from pointseg.server.model_service import NoModel, context_factor
from pointseg.server.scheduler import PRIO_PREFETCH

#: what the app offers: the per-image rankings, "diversity" (from per-image feature means, which do not
#: depend on the model: they are kept across refits, and only the annotated set changes the order), and the
#: committee's disagreement (a bootstrap committee fitted once per model version, then image by image)
APP_RANKINGS = PER_IMAGE_RANKINGS + ("diversity", "uncertain_diverse", "committee", "committee_diverse",
                                     "committee_coverage")
DESCRIPTOR = "descriptor"
COMMITTEE = "committee"
#: what each app ranking multiplies: per-image priorities of the model, and the diversity of descriptors
NEEDS = {"diversity": (DESCRIPTOR,), "uncertain_diverse": ("uncertainty", DESCRIPTOR),
         "committee": (COMMITTEE,), "committee_diverse": (COMMITTEE, DESCRIPTOR),
         "committee_coverage": (COMMITTEE, DESCRIPTOR)}
#: rankings whose descriptors decide coverage (an image of a kind no annotated image shows comes first) rather
#: than multiplying the priority by the distance from the annotated images
COVERAGE = ("committee_coverage",)

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
    """Per-image values (a priority, or a feature descriptor for "diversity") computed as scheduler jobs
    and kept with what they depend on (the model version, or the feature kind and context factor)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[int, str], tuple[object, object]] = {}   # (image, what) -> (stamp, value)
        self._inflight: dict[tuple[int, str], Future] = {}
        self._committee: tuple[int, list] | None = None    # (model version, members), made on the model thread
        self._coverage: tuple[tuple, set] | None = None     # (what it was computed from, uncovered image ids)

    def rank(self, services, kind: str = DEFAULT_RANKING, wait_s: float = 2.0) -> dict:
        """The ranking of the project's unannotated images (waits up to ``wait_s`` for scores to come in)."""
        if kind not in APP_RANKINGS:
            raise PointsegError(f"unknown ranking {kind!r}; choose one of: {', '.join(APP_RANKINGS)}")
        scheduler, features = services.scheduler, services.features
        model = scheduler.model
        if model.status != "ok":
            raise NoModel(model.message)
        images = services.store.list_images()
        todo = [i for i in images if not is_annotated(i) and i["status"] != "failed"]
        needs = NEEDS.get(kind, (kind,))
        annotated_ids = list(services.store.training_set().image_ids) if DESCRIPTOR in needs else []
        jobs = [(i["id"], what) for i in todo for what in needs] + [(i, DESCRIPTOR) for i in annotated_ids]
        futures, missing = [], []
        for image_id, what in jobs:
            fut = self._request(services, image_id, what, self._stamp(what, model, features), context_factor(model))
            if fut is False:
                missing.append(image_id)
            elif fut is not None:
                futures.append(fut)
        for image_id in list(dict.fromkeys(missing))[:PREFETCH]:
            scheduler.request_features(image_id, PRIO_PREFETCH)
        if futures and wait_s > 0:
            wait_futures(futures, timeout=wait_s)
        return self._answer(scheduler.model, features, todo, annotated_ids, kind, len(images) - len(todo))

    @staticmethod
    def _stamp(what: str, model, features):
        """What a value depends on: a descriptor on the feature kind and the context factor its map was made
        at (a model refitted at another factor describes images differently), a score on the model."""
        if what == DESCRIPTOR:
            return ("features", features.kind, context_factor(model))
        return ("model", model.version)

    def _request(self, services, image_id: int, what: str, stamp, factor: int | None):
        """A future for the image's value, None when it is there already, False when its features (at the
        model's context ``factor``) are not."""
        scheduler, features = services.scheduler, services.features
        key = (image_id, what)
        with self._lock:
            have = self._values.get(key)
            if have is not None and have[0] == stamp:
                return None
            fut = self._inflight.get(key)
        if fut is not None and not fut.done():
            return fut
        if not features.ready(image_id, factor=factor):
            return False
        fut = scheduler.submit(lambda m: self._compute(m, image_id, what, services))
        with self._lock:
            self._inflight[key] = fut
        return fut

    def _compute(self, model, image_id: int, what: str, services):
        """One image's value with ``model`` (on the model thread); None when it cannot be computed now."""
        features = services.features
        factor = context_factor(model)
        if model.status != "ok" or model.segmenter is None or not features.ready(image_id, factor=factor):
            return None    # no model, or the features were evicted meanwhile: never compute them here
        fmap = features.get(image_id, factor=factor)
        with tiles_without_eviction():   # scoring the folder must not evict the tiles of the image in use
            if what == DESCRIPTOR:
                value = image_descriptor(model.segmenter, fmap)
            elif what == COMMITTEE:
                committee = self._committee_of(model, services)
                if committee is None:
                    return None
                value = committee_disagreement(committee, fmap)
            else:
                value = rank_images_for_annotation(model.segmenter, [fmap], what)[0][1]
        with self._lock:
            self._values[(image_id, what)] = (self._stamp(what, model, features), value)
        return value

    def _committee_of(self, model, services) -> list | None:
        """The bootstrap committee of ``model`` (:func:`pointseg.decision.fit_committee`), fitted once per
        model version from the annotations it was trained on; None when they have changed since (the next
        model's ranking asks again) or a training image's features are gone."""
        with self._lock:
            if self._committee is not None and self._committee[0] == model.version:
                return self._committee[1]
        ts = services.store.training_set()
        factor = context_factor(model)
        if ts.signature() != model.signature or \
                not all(services.features.ready(i, factor=factor) for i in ts.image_ids):
            return None
        fmaps = [services.features.get(i, factor=factor) for i in ts.image_ids]
        points = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in ts.points]
        committee = fit_committee(model.segmenter, fmaps, points, ts.scribbles, ts.ok or None)
        with self._lock:
            self._committee = (model.version, committee)
        return committee

    def _answer(self, model, features, todo: list[dict], annotated_ids: list[int], kind: str,
                n_annotated: int) -> dict:
        """Images scored by the current model first, then those scored by an earlier one (the best guess
        while they are rescored: the list does not jump back to name order after each click), then the
        rest; by priority within each group (stable: ties keep the list's order). Diversity-based kinds
        compare each image's descriptor with the annotated images'."""
        needs = NEEDS.get(kind, (kind,))
        model_stamp, feature_stamp = ("model", model.version), self._stamp(DESCRIPTOR, model, features)
        with self._lock:
            values = {key: self._values.get(key) for key in
                      [(i["id"], w) for i in todo for w in needs] + [(i, DESCRIPTOR) for i in annotated_ids]}
        def desc(image_id):
            have = values.get((image_id, DESCRIPTOR))
            return have[1] if have is not None and have[0] == feature_stamp else None

        seen = [d for d in map(desc, annotated_ids) if d is not None]
        far: dict[int, float] = {}
        have_desc = [(i["id"], desc(i["id"])) for i in todo] if DESCRIPTOR in needs and seen else []
        have_desc = [(i, d) for i, d in have_desc if d is not None]
        fresh: set[int] = set()
        if have_desc and kind in COVERAGE:
            fresh = self._uncovered(have_desc, seen, (feature_stamp, tuple(annotated_ids), len(seen)))
            far = {i: 1.0 for i, _ in have_desc}
        elif have_desc:   # one call: the channels are standardised over all of them, as in the library
            dist = diversity_from_descriptors(np.stack([d for _, d in have_desc]), np.stack(seen))
            far = {i: float(v) for (i, _), v in zip(have_desc, dist)}
        rows, pending = [], []
        for img in todo:
            priority, current = 1.0, True
            for what in needs:
                if what == DESCRIPTOR:
                    if img["id"] not in far:
                        break
                    priority *= far[img["id"]]
                else:
                    have = values.get((img["id"], what))
                    if have is None:
                        break
                    priority *= float(have[1])
                    current = current and have[0] == model_stamp
            else:
                rows.append({"id": img["id"], "name": img["name"], "priority": priority, "current": current})
                continue
            pending.append(img["id"])
        if fresh and rows:   # every image of an uncovered kind ahead of every other, as in the library
            lift = max(r["priority"] for r in rows) + 1.0
            for r in rows:
                r["priority"] += lift if r["id"] in fresh else 0.0
        rows.sort(key=lambda r: (not r["current"], -r["priority"]))
        return {"kind": kind, "model_rev": model.rev, "model_version": model.version, "ranked": rows,
                "pending": pending, "complete": not pending and all(r["current"] for r in rows),
                "annotated": n_annotated}

    def _uncovered(self, have_desc: list, seen: list, basis: tuple) -> set[int]:
        """The images of ``have_desc`` in a descriptor cluster with no annotated image (as the library: one
        cluster more than the annotated images); kept while the same images are described, since the page asks
        every few seconds and k-means over thousands of images takes a second."""
        key = (basis, tuple(i for i, _ in have_desc))
        with self._lock:
            if self._coverage is not None and self._coverage[0] == key:
                return self._coverage[1]
        flags = coverage_clusters(np.stack([d for _, d in have_desc]), np.stack(seen), len(seen) + 1)
        fresh = {i for (i, _), f in zip(have_desc, flags) if f}
        with self._lock:
            self._coverage = (key, fresh)
        return fresh

    def forget_image(self, image_id: int) -> None:
        with self._lock:
            for key in [k for k in self._values if k[0] == image_id]:
                del self._values[key]


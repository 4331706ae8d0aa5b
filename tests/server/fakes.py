"""Stand-ins for the model (a slow, recorded Segmenter) and the feature maps, for scheduler and in-process
route tests where timing must be deterministic and no network should load. Everything else they meet — the
store, the scheduler, the model service, the library's cross-validation protocol — is real."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np

from pointseg.classifier import LinearHead, Standardizer, cross_validate
from pointseg.server.model_service import ModelService
from pointseg.server.scheduler import Scheduler


class SlowClassifier:
    """The library's protocol calls ``fit`` once per fold; each takes ``delay`` seconds and is recorded."""

    def __init__(self, events: list, delay: float):
        self.events, self.delay = events, delay

    def fit(self, X, y, n_classes, standardizer, init=None):
        self.events.append(("start", len(X), time.monotonic()))
        time.sleep(self.delay)
        return LinearHead(np.zeros((n_classes, X.shape[1]), np.float32), np.zeros(n_classes, np.float32),
                          standardizer)


class SlowSegmenter:
    """Records every fit; a fit takes ``delay`` seconds and learns "class = number of points % K"."""

    def __init__(self, log: list, delay: float, started: threading.Event, events: list | None = None, **params):
        self.log, self.delay, self.started = log, delay, started
        self.events: list = [] if events is None else events
        self.params = {"classes": None, "colors": None, "cross_validate": False, "warm_start": False,
                       "smoothing": None, "C": None, "min_region": 0, "features": "hybrid", **params}

    def get_params(self):
        return dict(self.params)

    def set_params(self, **params):
        self.params.update(params)
        return self

    def clone(self, **params):
        return SlowSegmenter(self.log, self.delay, self.started, self.events, **{**self.params, **params})

    extractor = None      # nothing to load

    def context_factor_for(self, image_sizes):   # Segmenter's: no enlarged context here
        return 1

    @property
    def features_(self):
        return self.params["features"]

    def fit(self, fmaps, points, scribbles=None, ok=None):      # Segmenter.fit's signature
        n = sum(len(p) for p in points)
        k = len(self.params["classes"])
        if self.params["cross_validate"]:
            X = np.random.default_rng(0).normal(size=(n, 3))
            y = np.concatenate([np.asarray(p)[:, 2] for p in points]).astype(int)
            groups = np.concatenate([np.full(len(p), i) for i, p in enumerate(points)])
            cross_validate(SlowClassifier(self.events, self.delay), X, y, groups, k,
                           Standardizer(np.zeros(3, np.float32), np.ones(3, np.float32)))
            return self
        self.started.set()
        self.events.append(("start", n, time.monotonic()))
        time.sleep(self.delay)
        self.log.append(n)
        self.n_ = n
        self.classes_, self.colors_ = list(self.params["classes"]), list(self.params["colors"])
        self.training_report_ = SimpleNamespace(
            as_dict=lambda: {"n_points": n, "point_accuracy": 1.0}, cv_accuracy=None, cv_method=None)
        return self

    def predict_full(self, fmap, probabilities=True):
        h, w = fmap.image_size
        k = len(self.params["classes"])
        labels = np.full((h, w), self.n_ % k, dtype=np.int64)
        proba = np.zeros((k, h, w), dtype=np.float32)
        return SimpleNamespace(labels=labels, probabilities=proba, uncertainty=np.zeros((h, w), np.float32))

    def save(self, path):
        open(path, "wb").write(b"model")


class FakeFeatures:
    """Feature maps by image id. With a ``store`` the image file is really read (so a missing or damaged
    file fails as it would), else every image is 10 x 8 and always ready."""

    def __init__(self, base, store=None, delay: float = 0.0):
        self.base = base
        self.store = store
        self.delay = delay
        self.kind = "hybrid"
        self.cache = SimpleNamespace(hits=0, misses=0)
        self.compute_ms = {}
        self._maps: dict[int, object] = {}

    def use_kind(self, kind):
        self.kind = kind

    def warm(self):
        pass

    def use_factor(self, factor):
        self.factor = factor

    def ready(self, image_id, factor=None):
        return self.store is None or image_id in self._maps

    def get(self, image_id, progress=None, factor=None):
        if self.store is None:
            return SimpleNamespace(image_size=(8, 10), moments=lambda: None)
        if image_id not in self._maps:
            from pointseg.imageio import read_image

            time.sleep(self.delay)
            h, w = read_image(self.store.image_file(image_id)).shape[:2]
            if progress is not None:
                progress(1, 1)                  # one "tile", as the real extractor reports it
            self._maps[image_id] = SimpleNamespace(image_size=(h, w), moments=lambda: None)
        return self._maps[image_id]

    def pin(self, ids, fmaps):
        pass

    def forget(self, image_id):
        self._maps.pop(image_id, None)


def make_scheduler(store, seg, *, read_files: bool = False, **kw) -> Scheduler:
    return Scheduler(ModelService(store, FakeFeatures(seg, store if read_files else None)), **kw)

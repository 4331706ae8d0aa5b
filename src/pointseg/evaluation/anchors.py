"""The scikit-image anchor: trainable segmentation as scikit-image's documentation shows it.

``skimage.feature.multiscale_basic_features`` (intensity + texture at σ 1…16, ``edges=False``, as in the
"Trainable segmentation using local features and random forests" gallery example) and
``skimage.future.fit_segmenter`` / ``predict_segmenter`` with a ``RandomForestClassifier(n_estimators=50,
max_depth=10)`` - the filter-bank + random-forest recipe of ilastik, Labkit and Weka.

Two deliberate choices, both in the anchor's favour:

* ``max_samples``: the gallery uses ``max_samples=0.05`` because it trains on thousands of scribbled pixels;
  with a few dozen clicks that would give each tree one or two samples, so the full bootstrap is used.
* grey images stored as RGB (all channels equal) are filtered as one channel, as a user would load them.

The filter features of an image are computed once per run and kept in a bounded LRU cache (float32, which
is what scikit-learn's forest uses internally anyway).
"""
from __future__ import annotations

import numpy as np

from pointseg.lru import ByteLRU

from .methods import Method

SKIMAGE_FEATURES = dict(intensity=True, edges=False, texture=True, sigma_min=1, sigma_max=16)
FOREST = dict(n_estimators=50, max_depth=10, max_samples=None)


def filter_features(image: np.ndarray) -> np.ndarray:
    """``multiscale_basic_features`` of an HxW or HxWxC image as an HxWxF float32 array."""
    from skimage.feature import multiscale_basic_features

    if image.ndim == 3 and image.shape[2] >= 3 and _is_grey(image):
        image = image[..., 0]
    if image.ndim == 3:
        feats = multiscale_basic_features(image[..., :3], channel_axis=-1, **SKIMAGE_FEATURES)
    else:
        feats = multiscale_basic_features(image, **SKIMAGE_FEATURES)
    return np.ascontiguousarray(feats, dtype=np.float32)


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


class SkimageRF(Method):
    """scikit-image's trainable segmentation behind the harness's :class:`Method` interface."""

    kind = "skimage-rf"

    def __init__(self, classes, name: str = "skimage-rf", max_cache_bytes: int = 1_500_000_000, n_jobs: int = -1,
                 forest: dict | None = None):
        self.name = name
        self.classes = tuple(classes)
        self.n_jobs = n_jobs
        self.forest = {**FOREST, **(forest or {})}
        self._cache: ByteLRU[np.ndarray] = ByteLRU(max_cache_bytes, size=lambda a: a.nbytes)
        self.clf_ = None

    def describe(self) -> dict:
        return {"method": self.kind, "features": "skimage.feature.multiscale_basic_features",
                "feature_params": SKIMAGE_FEATURES, "classifier": "RandomForestClassifier", "forest": dict(self.forest)}

    def prepare(self, image: np.ndarray, key: str) -> None:
        self.features(image, key)

    def features(self, image: np.ndarray, key: str) -> np.ndarray:
        cache_key = f"{key}:{image.shape}"
        features = self._cache.get(cache_key)
        if features is None:
            features = filter_features(image)
            self._cache.put(cache_key, features)
        return features

    def fit(self, images, points, keys, seed: int = 0) -> None:
        from skimage.future import fit_segmenter
        from sklearn.ensemble import RandomForestClassifier

        rows, labels = [], []
        for image, pts, key in zip(images, points, keys):
            pts = np.asarray(pts, dtype=np.int64).reshape(-1, 3)
            if not len(pts):
                continue
            feats = self.features(image, key)
            rows.append(feats[pts[:, 1], pts[:, 0]])
            labels.append(pts[:, 2] + 1)   # fit_segmenter: 0 = unlabelled, class c -> c + 1
        if not rows:
            raise ValueError("no clicks to train on")
        # fit_segmenter takes one label image and its features; the clicked pixels of all training images
        # are stacked into an (n, 1) "image" so it trains on exactly those pixels.
        train_feats = np.concatenate(rows)[:, None, :]
        train_labels = np.concatenate(labels)[:, None]
        clf = RandomForestClassifier(**{"n_jobs": self.n_jobs, **self.forest, "random_state": seed})
        self.clf_ = fit_segmenter(train_labels, train_feats, clf)

    def predict(self, image: np.ndarray, key: str) -> np.ndarray:
        from skimage.future import predict_segmenter

        if self.clf_ is None:
            raise RuntimeError("fit first")
        return predict_segmenter(self.features(image, key), self.clf_).astype(np.int64) - 1

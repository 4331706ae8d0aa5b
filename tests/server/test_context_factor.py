"""The app with the default ``context_upscale="size"``: its features are made at the factor the model is
trained at (x4 for small images), once, and every view predicts from them.

Real store, feature store and model service (no scheduler thread), on two small synthetic images.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pointseg import Segmenter
from pointseg.features import FeatureExtractor
from pointseg.server.model_service import FeatureStore, ModelService, ModelState
from pointseg.server.store import ProjectStore
from synthetic import points_from_truth, two_texture_image


def _project(tmp_path, h: int, w: int):
    store = ProjectStore(tmp_path / "p")
    classes = [store.add_class(name) for name in ("left", "right", "disc")]
    ids, images = [], []
    for seed in range(2):
        image, truth = two_texture_image(h=h, w=w, seed=seed)
        path = tmp_path / f"{seed}.png"
        Image.fromarray(image).save(path)
        img, _ = store.add_image(sha256=f"{seed}" * 64, name=path.name, width=w, height=h, n_bytes=1,
                                 source_path=str(path))
        ids.append(img["id"])
        images.append(image)
        items = [{"kind": "point", "class_id": classes[int(k)]["id"], "x": float(x), "y": float(y)}
                 for x, y, k in points_from_truth(truth, 6, seed=seed)]
        store.add_annotations(img["id"], items)
    return store, ids, images


@pytest.fixture
def passes(monkeypatch):
    """The context factor of every backbone pass over an image (enlarged copies are not counted)."""
    calls = []
    original = FeatureExtractor.compute_parts
    monkeypatch.setattr(FeatureExtractor, "compute_parts",
                        lambda self, rgb, **kw: calls.append(self.context_upscale) or original(self, rgb, **kw))
    return calls


@pytest.mark.parametrize("kind", ["hybrid", "deep"])  # deep maps keep no image: only the right factor works
def test_a_small_image_project_trains_and_predicts_at_the_enlarged_factor_once(tmp_path, passes, kind):
    store, ids, images = _project(tmp_path, 150, 190)
    store.update_settings({"features": kind})       # the project's setting decides the feature kind
    features = FeatureStore(store, backbone="efficientnet_lite0_s32", precision="fp32", features=kind)
    service = ModelService(store, features)
    assert features.factor_for(ids[0]) == 4        # before any model: the rule on the image's own size
    features.get(ids[1])                            # the features thread, ahead of the first fit
    model = service.fit(store.training_set(), ModelState(), lambda: False)
    assert model.status == "ok", model.message
    assert model.segmenter.context_upscale_ == 4 and features.factor == 4
    assert passes == [4, 4]                         # each image extracted once, at the model's factor
    for image_id, image in zip(ids, images):
        view = service.predict(model, image_id)
        np.testing.assert_array_equal(view.labels, model.segmenter.predict(image))
    assert passes == [4, 4]
    path = service.save(model, tmp_path / "m.pointseg")
    assert Segmenter.load(path, precision="fp32").context_upscale_ == 4


def test_a_project_of_large_images_stays_native(tmp_path, passes):
    store, ids, _ = _project(tmp_path, 260, 300)
    features = FeatureStore(store, backbone="efficientnet_lite0_s32", precision="fp32")
    model = ModelService(store, features).fit(store.training_set(), ModelState(), lambda: False)
    assert model.status == "ok", model.message
    assert model.segmenter.context_upscale_ == 1 and features.factor == 1 and passes == [1, 1]

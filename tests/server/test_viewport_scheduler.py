"""The scheduler's prediction requests for the viewer: a request whose image's features are being computed
waits for them without holding the model thread, and the coarse first view goes first.

A stand-in Segmenter and feature maps that take ``delay`` seconds to compute make the timing deterministic
(see fakes.py); the store, the scheduler and the model service are the real ones.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fakes import FakeFeatures, SlowSegmenter
from pointseg.server.model_service import ModelService
from pointseg.server.scheduler import Scheduler, Want
from pointseg.server.store import ProjectStore

FEATURE_S = 1.5


@pytest.fixture
def setup(tmp_path):
    store = ProjectStore(tmp_path / "p")
    ids = []
    for name in ("a.png", "b.png"):
        path = tmp_path / name
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(path)
        img, _ = store.add_image(sha256=name * 32, name=name, width=10, height=8, n_bytes=1, source_path=str(path))
        ids.append(img["id"])
    classes = [store.add_class("a"), store.add_class("b")]
    events: list[dict] = []
    seg = SlowSegmenter([], delay=0.3, started=threading.Event())
    features = FakeFeatures(seg, store, delay=FEATURE_S)
    worker = Scheduler(ModelService(store, features), debounce_s=0.0, idle_s=5.0)
    worker.events.subscribe(events.append)
    worker.start()
    yield SimpleNamespace(store=store, worker=worker, ids=ids, classes=classes, events=events)
    worker.stop()


def test_a_request_waiting_for_features_does_not_hold_the_model_thread(setup):
    s = setup
    a, b = s.ids
    items = [{"kind": "point", "class_id": c["id"], "x": 1.0 + k, "y": 1.0} for k, c in enumerate(s.classes)]
    s.worker.features.get(a)                         # a's features are there (1.5 s); b's are not
    _, rev = s.store.add_annotations(a, items)
    s.worker.notify_edit(rev)                        # a fit of 0.3 s starts
    time.sleep(0.1)
    t0 = time.monotonic()
    fut_a = s.worker.request_prediction(a, min_rev=rev)
    fut_b = s.worker.request_prediction(b, min_rev=rev)   # newest first, but its features are not there yet
    res_a = fut_a.result(timeout=20)
    t_a = time.monotonic()
    assert not fut_b.done()                          # still waiting for b's features…
    res_b = fut_b.result(timeout=20)
    t_b = time.monotonic()
    assert res_a.image_id == a and res_b.image_id == b and res_a.rev >= rev
    # …computed by the features thread meanwhile: a was answered right after its fit, not after b's features
    assert t_a - t0 < FEATURE_S - 0.5 and t_b - t0 >= FEATURE_S - 0.2
    ran = [e for e in s.events if e["type"] == "features" and e["image_id"] == b]
    assert [e["status"] for e in ran] == ["running", "ready"] and ran[0]["done"] == ran[0]["total"] == 1


def test_requests_are_served_coarse_then_regions_then_whole():
    order = sorted([Want(), Want("region", (0, 1, 0, 1)), Want("coarse"), Want("region", (0, 2, 0, 2), 0.5)],
                   key=lambda w: w.order)
    assert [w.kind for w in order] == ["coarse", "region", "region", "whole"]

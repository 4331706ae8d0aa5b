"""The scheduler and model service on their own: stale fits are dropped, bursts are coalesced, predict-all
stops and resumes, cross-validation yields to a click.

A stand-in Segmenter with a slow, recorded ``fit`` makes the timing deterministic; the store, the scheduler,
the model service and the library's cross-validation protocol are the real ones.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fakes import SlowSegmenter, make_scheduler
from pointseg.server.model_service import NoModel
from pointseg.server.store import ProjectStore


@pytest.fixture
def setup(tmp_path):
    store = ProjectStore(tmp_path / "p")
    img, _ = store.add_image(sha256="x" * 64, name="x.png", width=10, height=8, n_bytes=1, source_path="/x")
    a, b = store.add_class("a"), store.add_class("b")
    log: list[int] = []
    started = threading.Event()
    seg = SlowSegmenter(log, delay=0.3, started=started)
    worker = make_scheduler(store, seg, debounce_s=0.05, idle_s=5.0)
    worker.start()
    yield SimpleNamespace(store=store, worker=worker, img=img, a=a, b=b, log=log, started=started)
    worker.stop()


def _point(s, cls, x=1.0):
    _, rev = s.store.add_annotations(s.img["id"], [{"kind": "point", "class_id": cls["id"], "x": x, "y": 1.0}])
    s.worker.notify_edit(rev)
    return rev


def test_a_fit_overtaken_by_an_edit_is_dropped(setup):
    s = setup
    _point(s, s.a)
    r1 = _point(s, s.b, 2.0)                         # 2 points: a fit starts
    assert s.started.wait(5)
    r2 = _point(s, s.b, 3.0)                         # arrives during that fit
    res = s.worker.request_prediction(s.img["id"], min_rev=r1).result(timeout=10)
    assert res.rev >= r2                              # never the model of the overtaken fit
    assert res.labels[0, 0] == 3 % 2                  # trained on all three points
    assert s.worker.cancelled_fits >= 1


def test_a_burst_of_edits_is_one_fit(setup):
    s = setup
    _point(s, s.a)
    for k in range(6):                               # six edits well inside the 50 ms debounce
        rev = _point(s, s.b, 2.0 + k)
    res = s.worker.request_prediction(s.img["id"], min_rev=rev).result(timeout=10)
    assert res.rev == rev and s.log[-1] == 7
    assert len(s.log) <= 2                           # the first edit may train at once; the rest coalesce


def test_no_model_says_why(setup):
    s = setup
    rev = _point(s, s.a)
    with pytest.raises(NoModel, match="two classes"):
        s.worker.request_prediction(s.img["id"], min_rev=rev).result(timeout=10)


def test_predict_all_can_be_stopped(setup, tmp_path):
    s = setup
    ids = [s.img["id"]]
    for k in range(30):
        img, _ = s.store.add_image(sha256=f"{k:064d}", name=f"{k}.png", width=10, height=8, n_bytes=1,
                                   source_path=f"/{k}")
        ids.append(img["id"])
    _point(s, s.a)
    rev = _point(s, s.b, 2.0)
    s.worker.request_prediction(s.img["id"], min_rev=rev).result(timeout=10)
    s.worker.start_batch(ids)
    s.worker.cancel_batch()
    deadline = time.monotonic() + 10
    while s.worker.status()["batch"]["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    b = s.worker.status()["batch"]
    assert not b["running"] and b["cancelled"] and b["done"] < len(ids)


def test_cross_validation_yields_to_a_click(tmp_path):
    """CV runs fold by fold when the user pauses; an edit stops it after the current fold."""
    store = ProjectStore(tmp_path / "p")
    a, b = store.add_class("a"), store.add_class("b")
    ids = []
    for k in range(4):
        img, _ = store.add_image(sha256=f"{k:064d}", name=f"{k}.png", width=10, height=8, n_bytes=1,
                                 source_path=f"/{k}")
        store.add_annotations(img["id"], [{"kind": "point", "class_id": a["id"], "x": 1.0, "y": 1.0},
                                          {"kind": "point", "class_id": b["id"], "x": 8.0, "y": 6.0}])
        ids.append(img["id"])
    seg = SlowSegmenter([], delay=0.25, started=threading.Event())
    worker = make_scheduler(store, seg, debounce_s=0.0, idle_s=0.2)
    worker.start()
    try:
        worker.request_prediction(ids[0]).result(timeout=10)         # the 8-point model
        deadline = time.monotonic() + 10
        while not any(e[:2] == ("start", 6) for e in seg.events) and time.monotonic() < deadline:
            time.sleep(0.01)                                          # a leave-one-image-out fold began
        _, rev = store.add_annotations(ids[1], [{"kind": "point", "class_id": b["id"], "x": 7.0, "y": 7.0}])
        t_edit = time.monotonic()
        worker.notify_edit(rev)
        res = worker.request_prediction(ids[1], min_rev=rev).result(timeout=10)
        assert res.labels[0, 0] == 9 % 2
        after = [e[1] for e in seg.events if e[0] == "start" and e[2] > t_edit]
        assert after[0] == 9                                          # the click's fit came next, no more folds
        # and the estimate is made once the user pauses again
        deadline = time.monotonic() + 10
        while not worker.model.cv_done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.model.report["cv_method"] == "leave-one-image-out"
        assert worker.model.report["cv_accuracy"] is not None
    finally:
        worker.stop()

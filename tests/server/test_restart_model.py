"""After a restart the app serves the model the project saved (``models/current.pointseg``) when the
annotations are the ones it was trained on, bit for bit, so "predict all" resumes every image that model
predicted; a changed training set trains anew. Against real ``pointseg serve`` processes on loopback."""
from __future__ import annotations

import json
import time

from serverkit import left_right_points, setup_classes, write_images


def _wait(predicate, timeout: float = 120.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


def _saved_signature(project):
    try:
        return json.loads((project / "models" / "current.json").read_text()).get("signature")
    except (OSError, ValueError):
        return None


def _annotate_and_wait_saved(c, project) -> tuple[list[dict], list[int], dict]:
    """Two classes, clicks on the first image, and the model saved in the project: (classes, ids, model)."""
    cls = setup_classes(c)
    ids = [i["id"] for i in c.get("/api/images").json()["images"]]
    assert c.post(f"/api/images/{ids[0]}/annotations", json={"items": left_right_points(cls)}).status_code == 201
    _wait(lambda: c.get("/api/model").json()["status"] == "ok")
    _wait(lambda: _saved_signature(project) == c.get("/api/model").json()["signature"])
    return cls, ids, c.get("/api/model").json()


def _predict_all(c) -> dict:
    r = _wait(lambda: (r := c.post("/api/predict-all")).status_code == 202 and r)
    assert r.status_code == 202, r.text
    return _wait(lambda: not (b := c.get("/api/predict-all").json())["running"] and b)


def test_restart_serves_the_saved_model_and_predict_all_resumes_all_of_it(make_server, tmp_path):
    write_images(tmp_path / "imgs", 3, h=256, w=320)
    project = tmp_path / "project"
    s = make_server(project, images=[tmp_path / "imgs"])
    with s.client() as c:
        cls, ids, trained = _annotate_and_wait_saved(c, project)
        batch = _predict_all(c)
        assert batch["done"] == 3 and batch["failed"] == 0 and not batch["resumed"], batch
        exported = c.get("/api/export/model.pointseg").content
    s.stop()

    s2 = make_server(project)
    with s2.client() as c:
        model = _wait(lambda: (m := c.get("/api/model").json())["status"] == "ok" and m)
        assert model["timings"].get("restored") is True, model["timings"]      # not trained again
        assert model["signature"] == trained["signature"] and model["report"] == trained["report"]
        assert c.get("/api/export/model.pointseg").content == exported           # the same model, bit for bit
        batch = _predict_all(c)
        assert batch["failed"] == 0 and batch["skipped"] == 3 and batch["resumed"], batch   # nothing redone

        # a new click: the saved model is not the one for these annotations any more, so it trains
        more = [{**p, "x": p["x"] + 3} for p in left_right_points(cls)]
        assert c.post(f"/api/images/{ids[1]}/annotations", json={"items": more}).status_code == 201
        refit = _wait(lambda: (m := c.get("/api/model").json())["signature"] != trained["signature"]
                      and m["status"] == "ok" and m)
        assert "restored" not in refit["timings"] and "fit_ms" in refit["timings"]


def test_a_saved_model_of_other_annotations_is_not_used(make_server, tmp_path):
    write_images(tmp_path / "imgs", 2, h=128, w=160)
    project = tmp_path / "project"
    s = make_server(project, images=[tmp_path / "imgs"])
    with s.client() as c:
        _annotate_and_wait_saved(c, project)
        # the project changes behind the saved model's back (e.g. another pointseg edited the annotations)
        (project / "models" / "current.json").write_text(json.dumps({"signature": "not-these-annotations"}))
    s.stop()
    s2 = make_server(project)
    with s2.client() as c:
        model = _wait(lambda: (m := c.get("/api/model").json())["status"] == "ok" and m)
        assert "restored" not in model["timings"] and "fit_ms" in model["timings"]

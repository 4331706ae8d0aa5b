"""Image-level OK marks (issue 13) over HTTP against a real server process: ``PUT /api/images/{id}/ok``
marks an image defect-free, the model trains on it as background without a click and learns the per-part NG
rule from it, the mark is undoable, exported as ``"ok": true`` and kept out of the ranking."""
from __future__ import annotations

import json
import time

from serverkit import left_right_points, setup_classes, write_images


def _model_at(c, rev: int, *, cv: bool = False, timeout: float = 180.0) -> dict:
    """The model once it is trained at ``rev`` or later (and cross-validated, with ``cv``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.get("/api/model").json()
        if m["rev"] >= rev and m["status"] != "none" and (m["cv_done"] or not cv):
            return m
        time.sleep(0.2)
    raise AssertionError(f"no model at rev {rev} within {timeout} s: {m}")


def test_mark_ok_trains_learns_ng_rule_undoes_and_exports(make_server, tmp_path):
    write_images(tmp_path / "imgs", 3)
    server = make_server(images=[tmp_path / "imgs"])
    with server.client() as c:
        ids = [i["id"] for i in c.get("/api/images").json()["images"]]
        assert all(i["ok"] is False for i in c.get("/api/images").json()["images"])
        bg, stripes = setup_classes(c)
        defect_only = [p for p in left_right_points([bg, stripes]) if p["class_id"] == stripes["id"]]
        rev = c.post(f"/api/images/{ids[0]}/annotations", json={"items": defect_only}).json()["rev"]
        assert _model_at(c, rev)["status"] == "insufficient"
        # marking an image OK bumps the revision, shows in the image JSON and the list, and is undoable
        r = c.put(f"/api/images/{ids[1]}/ok", json={"ok": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rev"] == rev + 1 and body["image"]["ok"] is True and body["history"]["can_undo"] == 1
        assert c.get(f"/api/images/{ids[1]}").json()["ok"] is True
        assert [i["ok"] for i in c.get("/api/images").json()["images"]] == [False, True, False]
        assert c.get("/api/project").json()["n_ok"] == 1
        # defect clicks on one image and an OK image are enough to train: the OK image is the background
        m = _model_at(c, body["rev"])
        assert m["status"] == "ok", m["message"]
        assert m["report"]["n_images"] == 2
        # the same again changes nothing
        again = c.put(f"/api/images/{ids[1]}/ok", json={"ok": True}).json()
        assert again["rev"] == body["rev"] and again["history"]["can_undo"] == 1
        # an image with defect marks is refused, naming them; an OK image refuses defect marks
        r = c.put(f"/api/images/{ids[0]}/ok", json={"ok": True})
        assert r.status_code == 409 and "4 of class 'stripes'" in r.json()["detail"]
        r = c.post(f"/api/images/{ids[1]}/annotations", json={"items": defect_only[:1]})
        assert r.status_code == 409 and "marked OK" in r.json()["detail"]
        # with both classes clicked on two images, the NG rule is learned from the OK one (leave-one-out)
        c.post(f"/api/images/{ids[0]}/annotations",
               json={"items": [p for p in left_right_points([bg, stripes]) if p["class_id"] == bg["id"]]})
        rev = c.post(f"/api/images/{ids[2]}/annotations",
                     json={"items": left_right_points([bg, stripes])}).json()["rev"]
        m = _model_at(c, rev, cv=True)
        assert m["status"] == "ok" and m["report"]["ng_rule"]["n_ok"] == 1, m["report"]
        assert m["report"]["part_confusion"]["ok_images"] == 1
        # the ranking leaves the OK image out (it is annotated)
        ranking = c.get("/api/images/ranking", params={"wait": 10}).json()
        assert ids[1] not in [r["id"] for r in ranking["ranked"]] + ranking["pending"]
        # exported in the format `pointseg train` reads
        exported = json.loads(c.get("/api/export/annotations.json").content)
        assert [bool(i.get("ok")) for i in exported["images"]] == [False, True, False]
        assert exported["images"][1]["points"] == []
        # undo takes the mark back, redo puts it again; unmarking retrains without it
        step = c.post(f"/api/images/{ids[1]}/undo").json()
        assert step["edit"]["kind"] == "ok" and c.get(f"/api/images/{ids[1]}").json()["ok"] is False
        step = c.post(f"/api/images/{ids[1]}/redo").json()
        assert step["edit"]["kind"] == "ok" and c.get(f"/api/images/{ids[1]}").json()["ok"] is True
        r = c.put(f"/api/images/{ids[1]}/ok", json={"ok": False})
        assert r.status_code == 200 and r.json()["image"]["ok"] is False and r.json()["rev"] > step["rev"]
        m = _model_at(c, r.json()["rev"], cv=True)
        assert m["report"]["n_images"] == 2 and "ng_rule" not in m["report"]


def test_ok_bad_requests(make_server, tmp_path):
    write_images(tmp_path / "imgs", 1)
    server = make_server(images=[tmp_path / "imgs"])
    with server.client() as c:
        image_id = c.get("/api/images").json()["images"][0]["id"]
        r = c.put("/api/images/99999/ok", json={"ok": True})
        assert r.status_code == 404 and "no image with id 99999" in r.json()["detail"]
        for body in ({}, {"ok": "maybe"}, {"ok": "true"}, {"ok": 1}, {"ok": True, "extra": 1}, [True]):
            r = c.put(f"/api/images/{image_id}/ok", json=body)
            assert r.status_code == 422, (body, r.text)
            assert "\n" not in r.json()["detail"]
        assert c.get(f"/api/images/{image_id}").json()["ok"] is False

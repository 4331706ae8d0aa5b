"""The routes in-process (FastAPI's TestClient), with the real store, scheduler, model service and guards and
a stand-in model (tests/server/fakes.py), so each behaviour is checked in well under a second."""
from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fakes import SlowSegmenter, make_scheduler
from serverkit import two_region_image, write_images
from pointseg.server.app import Settings, create_app, register_folder
from pointseg.server.deps import Services
from pointseg.server.store import ProjectStore

BIG_ID = 2**64 + 12345


def build(tmp_path, *, n_images: int = 2, token: str | None = None, delay: float = 0.0, store=None):
    store = store or ProjectStore(tmp_path / "p")
    if n_images:
        register_folder(store, tmp_path / "imgs") if (tmp_path / "imgs").is_dir() else None
        if not store.list_images():
            write_images(tmp_path / "imgs", n_images, h=32, w=40)
            register_folder(store, tmp_path / "imgs")
    seg = SlowSegmenter([], delay=0.0, started=threading.Event())
    scheduler = make_scheduler(store, seg, read_files=True, debounce_s=0.0, idle_s=0.2)
    scheduler.features.delay = delay
    settings = Settings(project_dir=store.dir, token=token, max_upload_bytes=1 << 20)
    services = Services(settings, store, scheduler.features, scheduler.service, scheduler, scheduler.events)
    return create_app(settings, services=services), services


@pytest.fixture
def client(tmp_path):
    app, services = build(tmp_path)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        c.services = services
        yield c


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def two_classes(c) -> list[dict]:
    return [c.post("/api/classes", json={"name": n}).json() for n in ("ok", "scratch")]


def annotate(c, image_id: int, cls: list[dict]) -> int:
    items = [{"class_id": cls[0]["id"], "x": 3, "y": 3}, {"class_id": cls[1]["id"], "x": 30, "y": 20}]
    r = c.post(f"/api/images/{image_id}/annotations", json={"items": items})
    assert r.status_code == 201, r.text
    return r.json()["rev"]


def run_batch(c, body=None) -> dict:
    r = c.post("/api/predict-all", json=body)
    assert r.status_code == 202, r.text
    return wait_for(lambda: (b := c.get("/api/predict-all").json())["running"] is False and b)


# ------------------------------------------------------------------------------------- classes (#12 4, 5)
def test_background_class_is_explicit_and_survives_reordering(client):
    c = client
    a, b = two_classes(c)
    third = c.post("/api/classes", json={"name": "dent"}).json()
    listed = c.get("/api/classes").json()["classes"]
    assert [x["background"] for x in listed] == [True, False, False]          # default: the first
    r = c.patch(f"/api/classes/{b['id']}", json={"background": True})
    assert r.status_code == 200 and r.json()["background"]
    c.put("/api/classes/order", json={"ids": [third["id"], b["id"], a["id"]]})
    listed = c.get("/api/classes").json()["classes"]
    assert [(x["name"], x["background"]) for x in listed] == [("dent", False), ("scratch", True), ("ok", False)]
    # one class is always the background: it cannot simply be unset
    r = c.patch(f"/api/classes/{b['id']}", json={"background": False})
    assert r.status_code == 422 and "another class" in r.json()["detail"]
    # deleting the background class hands the role to the first remaining class
    c.delete(f"/api/classes/{b['id']}")
    listed = c.get("/api/classes").json()["classes"]
    assert [x["background"] for x in listed] == [True, False] and listed[0]["name"] == "dent"
    # and the model follows it
    ts = c.services.store.training_set()
    assert ts.classes[ts.background] == "dent"


def test_findings_count_every_class_but_the_background(client):
    import numpy as np

    from pointseg.server.render import label_stats

    labels = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.uint8)
    default = label_stats(labels, ["a", "b", "c"])
    assert set(k for k in default if k.startswith("regions_")) == {"regions_b", "regions_c"}
    moved = label_stats(labels, ["a", "b", "c"], background=1)
    assert set(k for k in moved if k.startswith("regions_")) == {"regions_a", "regions_c"}
    assert moved["fraction_b"] == default["fraction_b"]


def test_class_counts_and_a_delete_leaves_no_empty_undo_step(client):
    c = client
    a, b = two_classes(c)
    img = c.get("/api/images").json()["images"][0]["id"]
    c.post(f"/api/images/{img}/annotations", json={"items": [{"class_id": a["id"], "x": 1, "y": 1}]})
    c.post(f"/api/images/{img}/annotations", json={"items": [
        {"class_id": b["id"], "x": 2, "y": 2},
        {"kind": "scribble", "class_id": b["id"], "width": 3, "points": [[5, 5], [9, 9]]}]})
    c.post(f"/api/images/{img}/annotations", json={"items": [{"class_id": b["id"], "x": 4, "y": 4}]})
    counts = {x["name"]: (x["n_points"], x["n_scribbles"]) for x in c.get("/api/classes").json()["classes"]}
    assert counts == {"ok": (1, 0), "scratch": (2, 1)}
    c.delete(f"/api/classes/{b['id']}")
    h = c.get(f"/api/images/{img}/annotations").json()["history"]
    assert h == {"can_undo": 1, "can_redo": 0}                 # only the edit that still holds something
    r = c.post(f"/api/images/{img}/undo").json()
    assert r["edit"]["kind"] == "add" and r["annotations"] == []  # the one undo step really undoes


# ------------------------------------------------------------------------------------- settings (#12 12)
def test_settings_are_validated_stored_and_retrain(client, tmp_path):
    c = client
    events = []
    c.services.events.subscribe(events.append)
    assert c.get("/api/settings").json() == {"features": "hybrid", "smoothing": 1.5, "C": None,
                                             "min_region": 0, "ng_area": None}
    cls = two_classes(c)
    img = c.get("/api/images").json()["images"][0]["id"]
    annotate(c, img, cls)
    sig0 = wait_for(lambda: (m := c.get("/api/model").json())["status"] == "ok" and m["signature"])
    r = c.put("/api/settings", json={"smoothing": 0.5, "C": 2.0, "min_region": 20})
    assert r.status_code == 200
    assert r.json() == {"features": "hybrid", "smoothing": 0.5, "C": 2.0, "min_region": 20, "ng_area": None}
    assert any(e["type"] == "settings" and e["settings"]["C"] == 2.0 for e in events)
    m = wait_for(lambda: (m := c.get("/api/model").json())["signature"] != sig0 and m)
    assert m["status"] == "ok"
    seg = c.services.scheduler.model.segmenter                  # the retrained model uses them
    assert (seg.params["smoothing"], seg.params["C"], seg.params["min_region"]) == (0.5, 2.0, 20)
    for bad, word in [({"features": "shallow"}, "features"), ({"smoothing": -1}, "smoothing"),
                      ({"C": 0}, "C"), ({"min_region": 1.5}, "min_region"), ({"ng_area": 2}, "ng_area"),
                      ({"colour": 1}, "colour")]:
        r = c.put("/api/settings", json=bad)
        detail = r.json()["detail"]
        assert r.status_code == 422 and word in detail and "\n" not in detail, (bad, detail)
    assert c.put("/api/settings", json={"C": None}).json()["C"] is None   # back to the default
    # stored in the project
    assert ProjectStore(c.services.store.dir).settings()["smoothing"] == 0.5


# ------------------------------------------------------------------------------------- images and batches
def test_prediction_badges_follow_the_model_not_the_clock(client):
    c = client
    cls = two_classes(c)
    ids = [i["id"] for i in c.get("/api/images").json()["images"]]
    annotate(c, ids[0], cls)
    b = run_batch(c)
    assert b["done"] == 2 and b["failed"] == 0
    images = c.get("/api/images").json()["images"]
    assert all(i["prediction"]["status"] == "ok" and not i["prediction_stale"] for i in images)
    # a new click makes the stored predictions older than the model, before any retraining has finished
    c.post(f"/api/images/{ids[1]}/annotations", json={"items": [{"class_id": cls[1]["id"], "x": 9, "y": 9}]})
    assert all(i["prediction_stale"] for i in c.get("/api/images").json()["images"])


def test_predict_all_resumes_instead_of_starting_over(client):
    c = client
    cls = two_classes(c)
    ids = [i["id"] for i in c.get("/api/images").json()["images"]]
    annotate(c, ids[0], cls)
    first = run_batch(c, {"image_ids": [ids[0]]})             # as if stopped after the first image
    assert first["done"] == 1 and first["skipped"] == 0 and not first["resumed"]
    started = c.post("/api/predict-all").json()
    assert started["done"] == started["skipped"] == 1 and started["resumed"]   # progress starts at 1 / 2
    second = wait_for(lambda: (b := c.get("/api/predict-all").json())["running"] is False and b)
    assert second["done"] == 2 and second["skipped"] == 1      # the finished image is not redone
    assert run_batch(c)["skipped"] == 2


def test_an_unreadable_image_is_marked_failed_and_the_batch_finishes(client, tmp_path):
    c = client
    cls = two_classes(c)
    ids = [i["id"] for i in c.get("/api/images").json()["images"]]
    annotate(c, ids[0], cls)
    broken = tmp_path / "imgs" / "part_01.png"
    broken.write_bytes(broken.read_bytes()[:60])               # a truncated PNG with a valid header
    events = []
    c.services.events.subscribe(events.append)
    b = run_batch(c)
    assert b["done"] == 2 and b["failed"] == 1
    assert len([e for e in events if e["type"] == "batch"]) < 20   # no re-queue loop
    img = next(i for i in c.get("/api/images").json()["images"] if i["id"] == ids[1])
    assert img["status"] == "failed" and img["error"]
    text = json.dumps(events) + c.get("/api/images").text
    assert str(tmp_path) not in text and "/imgs/" not in text   # no server paths
    csv = c.get("/api/export/summary.csv").text
    assert "part_01.png" in csv and "failed" in csv


def test_predict_all_waits_for_a_retraining_model(tmp_path):
    """Right after a restart the model retrains; predict-all waits for it instead of a 409."""
    store = ProjectStore(tmp_path / "p")
    write_images(tmp_path / "imgs", 2, h=32, w=40)
    register_folder(store, tmp_path / "imgs")
    a, b = store.add_class("ok"), store.add_class("scratch")
    img = store.list_images()[0]["id"]
    store.add_annotations(img, [{"kind": "point", "class_id": a["id"], "x": 3, "y": 3},
                                {"kind": "point", "class_id": b["id"], "x": 30, "y": 20}])
    app, services = build(tmp_path, store=store, delay=0.5)    # slow features: training takes a while
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/api/predict-all")
        assert r.status_code == 202, r.text
        b = wait_for(lambda: (b := c.get("/api/predict-all").json())["running"] is False and b)
        assert b["done"] == 2 and b["failed"] == 0
        # but with nothing to train on, it still says why at once
        c.delete(f"/api/classes/{a['id']}")
        r = c.post("/api/predict-all")
        assert r.status_code == 409 and "two classes" in r.json()["detail"]


# ------------------------------------------------------------------------------------- exports (#12 8, #14 9)
def test_zip_names_are_the_clis_and_safe(client, tmp_path):
    from pointseg.server.exports import output_stems, safe_stem

    assert safe_stem("..\\..\\pwned3.png") == "pwned3"
    assert safe_stem("../../etc/passwd") == "passwd"
    assert output_stems([{"id": 1, "name": "a.png"}, {"id": 2, "name": "a.jpg"}, {"id": 3, "name": "b.png"}]) == \
        {1: "a-1", 2: "a-2", 3: "b"}
    c = client
    png = io.BytesIO()
    Image.fromarray(two_region_image(32, 40, seed=5)).save(png, format="PNG")
    r = c.post("/api/images", files=[("files", ("..\\..\\pwned3.png", png.getvalue(), "image/png"))])
    assert r.status_code == 201, r.text
    cls = two_classes(c)
    ids = [i["id"] for i in c.get("/api/images").json()["images"]]
    annotate(c, ids[0], cls)
    run_batch(c)
    r = c.get("/api/export/results.zip")
    assert r.status_code == 200 and 'filename="results-labels.zip"' in r.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    labels = sorted(n for n in names if n.startswith("labels/"))
    assert labels == ["labels/part_00.png", "labels/part_01.png", "labels/pwned3.png"]
    assert not any(".." in n or "\\" in n or n.startswith("/") for n in names)
    ann = json.loads(c.get("/api/export/annotations.json").content)
    assert all(not i["path"].startswith("/") and str(tmp_path) not in i["path"] for i in ann["images"])
    assert (c.services.store.dir / "export" / "annotations.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


# ------------------------------------------------------------------------------------- hostile input (#14 8, 9)
def test_huge_ids_are_404_or_422_never_500(client):
    c = client
    for method, url, body in [("GET", f"/api/images/{BIG_ID}/annotations", None),
                              ("GET", f"/api/images/{BIG_ID}", None),
                              ("DELETE", f"/api/classes/{BIG_ID}", None),
                              ("PATCH", f"/api/classes/{BIG_ID}", {"name": "x"}),
                              ("POST", "/api/images/1/annotations", {"items": [{"class_id": BIG_ID, "x": 1, "y": 1}]}),
                              ("PUT", "/api/classes/order", {"ids": [BIG_ID]}),
                              ("POST", "/api/predict-all", {"image_ids": [BIG_ID]})]:
        r = c.request(method, url, json=body)
        assert r.status_code in (404, 422), (url, r.status_code, r.text)
        assert "\n" not in r.json()["detail"]


def test_a_non_ascii_token_is_refused_not_bypassed(tmp_path):
    app, _ = build(tmp_path, n_images=0, token="s3cret")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/images", headers={"X-Pointseg-Token": "é".encode()}).status_code == 401
        assert c.get("/api/images", headers={"Authorization": "Bearer é".encode()}).status_code == 401
        assert c.get("/api/images", headers={"X-Pointseg-Token": "s3cret"}).status_code == 200


@pytest.mark.parametrize("host", ["[::1]evil.com", "127.0.0.1.evil.com", "127.0.0.1:80:80", "localhost:99999",
                                  "127.0.0.1 evil", "", "[::1]:8765x"])
def test_host_header_is_parsed_strictly(client, host):
    r = client.get("/api/status", headers={"Host": host})
    assert r.status_code == 421, (host, r.status_code)


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "[::1]:8765", "localhost", "LOCALHOST:1"])
def test_loopback_host_names_are_accepted(client, host):
    assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_a_full_database_is_a_one_line_507(client):
    store = client.services.store
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    codes = set()
    for k in range(200):                                        # until the file would have to grow
        r = client.post("/api/classes", json={"name": f"class {k} " + "x" * 70})
        codes.add(r.status_code)
        if r.status_code != 201:
            break
    assert r.status_code == 507 and "full" in r.json()["detail"] and "\n" not in r.json()["detail"]
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert client.get("/api/classes").status_code == 200        # the project still works


def test_json_bodies_are_capped_small(client):
    r = client.post("/api/classes", content=b'{"name": "' + b"x" * (17 << 20) + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_openapi_schema_is_served(client):
    schema = client.get("/api/openapi.json").json()
    assert "/api/classes/{class_id}" in schema["paths"] and "/api/settings" in schema["paths"]

"""The HTTP API of ``pointseg serve`` against a real uvicorn process on loopback."""
from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from serverkit import left_right_points, setup_classes, two_region_image, write_images


def _overlay(c: httpx.Client, image_id: int, min_rev: int | None = None, **params) -> tuple[np.ndarray, Image.Image, httpx.Response]:
    q = {"min_rev": min_rev, **params} if min_rev is not None else params
    r = c.get(f"/api/images/{image_id}/overlay.png", params=q)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    return np.asarray(img), img, r


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


# ------------------------------------------------------------------------------------------- the loop
def test_click_train_overlay_loop(shared_server):
    with shared_server.client() as c:
        images = c.get("/api/images").json()["images"]
        assert len(images) == 2 and all("path" not in json.dumps(i) for i in images)
        img = images[0]
        assert (img["width"], img["height"]) == (160, 128)
        cls = setup_classes(c)
        # one class only: no model, and the reason is given
        r = c.post(f"/api/images/{img['id']}/annotations", json={"items": left_right_points(cls)[:2]})
        assert r.status_code == 201
        r = c.get(f"/api/images/{img['id']}/overlay.png", params={"min_rev": r.json()["rev"]})
        assert r.status_code == 409 and "two classes" in r.json()["detail"]
        # both classes
        r = c.post(f"/api/images/{img['id']}/annotations", json={"items": left_right_points(cls)})
        rev = r.json()["rev"]
        labels, pil, resp = _overlay(c, img["id"], rev)
        assert int(resp.headers["X-Model-Rev"]) >= rev
        assert pil.mode == "P" and labels.shape == (128, 160)          # palette PNG, one byte a pixel
        palette = np.array(pil.getpalette()[:6]).reshape(2, 3)
        assert [_hex(p) for p in palette] == [cls[0]["color"], cls[1]["color"]]
        # the model separates the halves it was shown
        assert (labels[:, :70] == 0).mean() > 0.9 and (labels[:, 90:] == 1).mean() > 0.9
        assert len(resp.content) < labels.size / 4                     # compact, not a JSON array
        timings = json.loads(resp.headers["X-Timings"])
        assert timings["fit_ms"] >= 0 and timings["predict_ms"] >= 0
        # the other views
        proba, ppil, _ = _overlay(c, img["id"], view="proba", class_index=1)
        assert ppil.mode == "P" and proba[:, 100:].mean() > proba[:, :60].mean() + 100
        unc, upil, _ = _overlay(c, img["id"], view="uncertainty")
        assert "transparency" in upil.info
        # the training report
        m = c.get("/api/model").json()
        assert m["status"] == "ok" and m["report"]["points_per_class"] == {"background": 6, "stripes": 4}
        assert m["report"]["point_accuracy"] > 0.85
        # suggestions avoid the clicked points and stay inside the image
        s = c.get(f"/api/images/{img['id']}/suggestions", params={"n": 3}).json()["suggestions"]
        assert 1 <= len(s) <= 3
        for g in s:
            assert 0 <= g["x"] < 160 and 0 <= g["y"] < 128 and 0 < g["score"] <= 1
        # the second image is predicted too (features computed on first view)
        labels2, _, _ = _overlay(c, images[1]["id"])
        assert (labels2[:, :70] == 0).mean() > 0.8 and (labels2[:, 90:] == 1).mean() > 0.8


def test_bad_requests_get_one_line_4xx(shared_server):
    with shared_server.client() as c:
        img = c.get("/api/images").json()["images"][0]
        cls = c.get("/api/classes").json()["classes"] or setup_classes(c, ("x1", "x2"))
        url = f"/api/images/{img['id']}/annotations"
        cases = [
            (c.post(url, json={"items": [{"class_id": cls[0]["id"], "x": 500, "y": 1}]}), 422, "outside"),
            (c.post(url, json={"items": [{"class_id": 999, "x": 5, "y": 1}]}), 422, "no class"),
            (c.post(url, json={"items": [{"class_id": cls[0]["id"], "x": "left", "y": 1}]}), 422, "number"),
            (c.post(url, json={"items": []}), 422, "items"),
            (c.post(url, json={"items": [{"kind": "scribble", "class_id": cls[0]["id"], "width": -1,
                                          "points": [[1, 1]]}]}), 422, "width"),
            (c.post(url, content=b"{not json", headers={"content-type": "application/json"}), 422, ""),
            (c.post("/api/images/99999/annotations", json={"items": [{"class_id": 1, "x": 1, "y": 1}]}), 404, "no image"),
            (c.get("/api/images/99999/overlay.png"), 404, "no image"),
            (c.post("/api/classes", json={"name": cls[0]["name"]}), 409, "exists"),
            (c.post("/api/classes", json={"name": "ok", "color": "red"}), 422, "color"),
            (c.patch(f"/api/classes/{cls[0]['id']}", json={"bogus": 1}), 422, "bogus"),
            (c.get(f"/api/images/{img['id']}/overlay.png", params={"view": "proba", "class_index": 9}), 422, "out of range"),
            (c.get(f"/api/images/{img['id']}/overlay.png", params={"min_rev": 10**9}), 422, "ahead"),
        ]
        for r, status, words in cases:
            assert r.status_code == status, (r.request.url, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and words.lower() in detail.lower(), detail


def test_undo_redo_and_eraser_over_http(shared_server):
    with shared_server.client() as c:
        img = c.get("/api/images").json()["images"][1]
        cls = c.get("/api/classes").json()["classes"]
        url = f"/api/images/{img['id']}"
        before = len(c.get(url + "/annotations").json()["annotations"])
        c.post(url + "/annotations", json={"items": [{"class_id": cls[0]["id"], "x": 20, "y": 20}]})
        c.post(url + "/annotations", json={"items": [{"kind": "scribble", "class_id": cls[1]["id"], "width": 6,
                                                      "points": [[120, 20], [130, 100]]}]})
        assert len(c.get(url + "/annotations").json()["annotations"]) == before + 2
        r = c.post(url + "/erase", json={"points": [[21, 21]], "radius": 3}).json()
        assert len(r["removed"]) == 1
        assert len(c.get(url + "/annotations").json()["annotations"]) == before + 1
        r = c.post(url + "/undo").json()
        assert r["edit"]["kind"] == "erase" and len(r["annotations"]) == before + 2
        r = c.post(url + "/undo").json()
        assert r["edit"]["kind"] == "add" and len(r["annotations"]) == before + 1
        r = c.post(url + "/redo").json()
        assert len(r["annotations"]) == before + 2 and r["history"]["can_redo"] == 1
        # the overlay follows the undo: the model at the latest revision is served
        rev = c.post(url + "/undo").json()["rev"]
        _, _, resp = _overlay(c, img["id"], rev)
        assert int(resp.headers["X-Model-Rev"]) >= rev


def test_event_stream_reports_edits_and_models(shared_server):
    got: list[dict] = []
    ready = threading.Event()

    def listen():
        with httpx.Client(base_url=shared_server.url, timeout=30) as c:
            with c.stream("GET", "/api/events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got.append(json.loads(line[6:]))
                        ready.set()
                        kinds = [e["type"] for e in got]
                        if "changed" in kinds and "model" in kinds[kinds.index("changed"):]:
                            return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(15) and got[0]["type"] == "hello"
    with shared_server.client() as c:
        img = c.get("/api/images").json()["images"][0]
        cls = c.get("/api/classes").json()["classes"]
        r = c.post(f"/api/images/{img['id']}/annotations",
                   json={"items": [{"class_id": cls[1]["id"], "x": 150, "y": 60}]})
    t.join(20)
    kinds = [e["type"] for e in got]
    assert "changed" in kinds and "model" in kinds[kinds.index("changed"):]
    changed = next(e for e in got if e["type"] == "changed")
    assert changed["image_id"] == img["id"] and changed["rev"] == r.json()["rev"]
    model = [e for e in got if e["type"] == "model"][-1]
    assert model["rev"] >= changed["rev"] and model["status"] == "ok"


# ------------------------------------------------------------------------------------------- safety
@pytest.fixture(scope="module")
def remote_server(tmp_path_factory):
    """Bound to 0.0.0.0 without --token (one is generated), with a 50 KiB upload limit."""
    from serverkit import Server

    root = tmp_path_factory.mktemp("remote")
    s = Server(root / "project", host="0.0.0.0", env={"POINTSEG_MAX_UPLOAD_MB": "0.05"}).start()
    printed = "".join(s.log)
    assert "?token=" in printed
    s.token = printed.split("?token=")[1].split()[0]
    yield s
    s.stop()


def test_token_required_off_loopback(remote_server):
    s, token = remote_server, remote_server.token
    with httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/api/images").status_code == 401
        assert c.get("/api/images", headers={"X-Pointseg-Token": "wrong"}).status_code == 401
        assert c.get("/api/images", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/api/project", params={"token": token}).status_code == 200
        assert c.get("/").status_code == 200                  # the page itself holds no data
        # opening the printed URL sets an HttpOnly cookie, so <img> and the event stream work
        r = c.get("/", params={"token": token})
        assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/images").status_code == 200          # cookie now in the client jar


def test_uploads_checked_for_type_size_and_content(remote_server):
    s = remote_server
    good = io.BytesIO()
    Image.fromarray(two_region_image(64, 80)).save(good, format="PNG")
    with s.client() as c:
        r = c.post("/api/images", files=[("files", ("a.png", good.getvalue(), "image/png"))])
        assert r.status_code == 201, r.text
        first = r.json()["added"][0]
        assert first["created"] and (first["width"], first["height"]) == (80, 64)
        # the same content again is the same image
        r = c.post("/api/images", files=[("files", ("copy.png", good.getvalue(), "image/png"))])
        assert r.status_code == 201 and not r.json()["added"][0]["created"]
        assert len(c.get("/api/images").json()["images"]) == 1
        r = c.post("/api/images", files=[("files", ("notes.txt", b"hello", "text/plain"))])
        assert r.status_code == 415 and "unsupported file type" in r.json()["detail"]
        r = c.post("/api/images", files=[("files", ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300, "image/png"))])
        assert r.status_code == 422 and "broken.png" in r.json()["detail"]
        noise = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(noise, "PNG")
        r = c.post("/api/images", files=[("files", ("big.png", noise.getvalue(), "image/png"))])
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        assert len(c.get("/api/images").json()["images"]) == 1
        # nothing half-written was left behind
        leftovers = [p.name for p in (s.project / "images").iterdir() if p.name.startswith(".upload")]
        assert leftovers == []
        # the page never sees where the file lives
        body = c.get(f"/api/images/{first['id']}").text + c.get("/api/project").text
        assert str(s.project) not in body and "/images/" not in body
        r = c.get(f"/api/images/{first['id']}/file")
        assert r.status_code == 200 and r.content == good.getvalue()
        assert c.get(f"/api/images/{first['id']}/thumb").headers["content-type"] == "image/jpeg"
        # a 16-bit TIFF is shown as the network sees it: rescaled to 8 bits, as a PNG of the same size
        import tifffile

        buf = io.BytesIO()
        ramp = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 7 + 1000)
        tifffile.imwrite(buf, ramp)
        r = c.post("/api/images", files=[("files", ("scan.tif", buf.getvalue(), "image/tiff"))])
        assert r.status_code == 201, r.text
        tif = r.json()["added"][0]
        shown = c.get(f"/api/images/{tif['id']}/file")
        assert shown.headers["content-type"] == "image/png"
        arr = np.asarray(Image.open(io.BytesIO(shown.content)))
        assert arr.shape[:2] == (48, 40) and arr.min() == 0 and arr.max() == 255


def test_loopback_guards_host_origin_and_no_cors(shared_server):
    with shared_server.client() as c:
        r = c.get("/api/images", headers={"Host": "attacker.example:80"})
        assert r.status_code == 421                         # DNS rebinding
        r = c.post("/api/classes", json={"name": "evil"}, headers={"Origin": "http://attacker.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = c.options("/api/classes", headers={"Origin": "http://attacker.example",
                                               "Access-Control-Request-Method": "POST"})
        assert r.status_code >= 400
        for resp in (r, c.get("/api/images", headers={"Origin": "http://attacker.example"})):
            assert not any(h.lower().startswith("access-control-") for h in resp.headers)
        page = c.get("/")
        assert page.status_code == 200 and "<title>pointseg</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/../app.py").status_code == 404


# ------------------------------------------------------------------------------------------- durability
def _state(c: httpx.Client) -> dict:
    images = c.get("/api/images").json()["images"]
    return {
        "classes": c.get("/api/classes").json()["classes"],
        "images": [{k: v for k, v in i.items() if k != "prediction"} for i in images],
        "annotations": {i["id"]: c.get(f"/api/images/{i['id']}/annotations").json() for i in images},
    }


def test_kill_9_and_restart_loses_nothing(make_server, tmp_path):
    write_images(tmp_path / "imgs", 2)
    project = tmp_path / "project"
    s = make_server(project, images=[tmp_path / "imgs"])
    with s.client() as c:
        cls = setup_classes(c)
        img = c.get("/api/images").json()["images"][0]
        url = f"/api/images/{img['id']}"
        for item in left_right_points(cls, n=6):                 # one committed edit per click
            assert c.post(url + "/annotations", json={"items": [item]}).status_code == 201
        c.post(url + "/annotations", json={"items": [{"kind": "scribble", "class_id": cls[1]["id"],
                                                      "width": 5, "points": [[140, 5], [150, 120]]}]})
        c.post(url + "/undo")
        c.patch(f"/api/classes/{cls[1]['id']}", json={"name": "stripes!", "color": "#ff00aa"})
        labels_before, _, _ = _overlay(c, img["id"])
        before = _state(c)
        deadline = time.monotonic() + 15                 # model versions are recorded once the user pauses
        while not (versions := c.get("/api/model/versions").json()["versions"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        recorded = versions[0]
        assert recorded["report"]["n_points"] == 12 and recorded["classes"] == ["background", "stripes!"]
    s.kill9()                                  # no shutdown hook runs
    assert (project / "project.sqlite-wal").exists()
    s2 = make_server(project)                  # same folder, no --images this time
    with s2.client() as c:
        after = _state(c)
        assert after == before
        h = after["annotations"][img["id"]]["history"]
        assert h == {"can_undo": 12, "can_redo": 1}            # redo survives the crash too
        assert c.post(url + "/redo").json()["edit"]["kind"] == "add"
        c.post(url + "/undo")
        labels_after, _, _ = _overlay(c, img["id"])
        assert (labels_after == labels_before).mean() > 0.99   # same model again (float16 cache)
        versions = c.get("/api/model/versions").json()["versions"]
        assert recorded in versions                                  # the model history survived too
        feats = c.get("/api/status").json()["features"]
        assert feats["cache_misses"] == 0                     # features came from the project's disk cache
    db = sqlite3.connect(f"file:{project / 'project.sqlite'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_clients_at_once(shared_server):
    """Two tabs clicking on both images at the same time: every edit lands once, the model follows."""
    with shared_server.client() as c:
        cls = c.get("/api/classes").json()["classes"][:2]
        ids = [i["id"] for i in c.get("/api/images").json()["images"]]
        count0 = sum(len(c.get(f"/api/images/{i}/annotations").json()["annotations"]) for i in ids)
        version0 = c.get("/api/model").json()["version"]
    n = 25
    errors: list[str] = []
    revs: list[list[int]] = [[], []]

    def tab(k: int):
        rng = np.random.default_rng(k)
        with shared_server.client() as c:
            for j in range(n):
                image_id = ids[(j + k) % 2]                       # both tabs edit both images
                side = j % 2
                item = {"class_id": cls[side]["id"], "x": float(rng.uniform(5, 60) + 90 * side),
                        "y": float(rng.uniform(5, 120))}
                r = c.post(f"/api/images/{image_id}/annotations", json={"items": [item]})
                if r.status_code != 201:
                    errors.append(r.text)
                    continue
                revs[k].append(r.json()["rev"])
                if j % 5 == 4:
                    r = c.get(f"/api/images/{image_id}/overlay.png", params={"min_rev": revs[k][-1]})
                    if r.status_code != 200:
                        errors.append(r.text)

    threads = [threading.Thread(target=tab, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    all_revs = revs[0] + revs[1]
    assert len(set(all_revs)) == 2 * n                           # every edit got its own revision
    with shared_server.client() as c:
        total = sum(len(c.get(f"/api/images/{i}/annotations").json()["annotations"]) for i in ids)
        assert total == count0 + 2 * n
        _, _, resp = _overlay(c, ids[0], max(all_revs))
        assert int(resp.headers["X-Model-Rev"]) >= max(all_revs)
        model = c.get("/api/model").json()
        assert model["report"]["n_points"] >= 2 * n
        # edits arriving while a fit runs are coalesced into the next fit, never queued one by one
        assert model["version"] - version0 < 2 * n
    db = sqlite3.connect(f"file:{shared_server.project / 'project.sqlite'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ------------------------------------------------------------------------------------------- batch + export
def test_predict_all_and_exports(make_server, tmp_path):
    from pointseg import Segmenter
    from pointseg.annotations import AnnotationSet
    from pointseg.imageio import read_image

    files = write_images(tmp_path / "imgs", 3)
    s = make_server(images=[tmp_path / "imgs"])
    with s.client() as c:
        assert c.post("/api/predict-all").status_code == 409            # no model yet: says why
        assert c.get("/api/export/model.pointseg").status_code == 409
        cls = setup_classes(c)
        ids = [i["id"] for i in c.get("/api/images").json()["images"]]
        rev = c.post(f"/api/images/{ids[0]}/annotations", json={"items": left_right_points(cls)}).json()["rev"]
        live, _, _ = _overlay(c, ids[0], rev)
        r = c.post("/api/predict-all")
        assert r.status_code == 202 and r.json()["total"] == 3
        deadline = time.monotonic() + 60
        while (b := c.get("/api/predict-all").json())["running"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b["done"] == 3 and b["failed"] == 0 and b["id"] == r.json()["id"]
        # a second run is a new run (the page tells a late copy of a run's start from its progress by id);
        # it redoes nothing the current model has predicted already (#12 item 7: resume)
        again = c.post("/api/predict-all").json()
        assert again["id"] == b["id"] + 1 and again["done"] == again["skipped"] == 3 and again["resumed"]
        while c.get("/api/predict-all").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.1)
        images = c.get("/api/images").json()["images"]
        assert all(i["prediction"]["status"] == "ok" for i in images)
        stored = np.asarray(Image.open(io.BytesIO(c.get(f"/api/images/{ids[0]}/prediction.png").content)))
        assert (stored == live).all()
        csv = c.get("/api/export/summary.csv").text.splitlines()
        assert csv[0].startswith("image,") and "fraction_background" in csv[0] and len(csv) == 4
        # the model file is the CLI's format and predicts what the app showed
        r = c.get("/api/export/model.pointseg")
        assert r.status_code == 200
        (tmp_path / "m.pointseg").write_bytes(r.content)
        seg = Segmenter.load(tmp_path / "m.pointseg")
        assert seg.classes_ == ["background", "stripes"]
        assert (seg.predict(read_image(files[0])) == live).mean() > 0.99
        # the annotation file is the one `pointseg train` reads; its image paths are relative to the file
        # as the project keeps it (export/annotations.json), never absolute server paths (#12 item 8)
        r = c.get("/api/export/annotations.json")
        kept = s.project / "export" / "annotations.json"
        assert r.content == kept.read_bytes()
        paths = [i["path"] for i in json.loads(r.content)["images"]]
        assert paths and not any(p.startswith("/") or str(tmp_path) in p for p in paths)
        ann = AnnotationSet.load(kept)
        assert ann.classes == ["background", "stripes"] and len(ann.images) == 1
        assert ann.images[0].points.shape == (8, 3)
        out = subprocess.run([sys.executable, "-c", "from pointseg.cli import main; main()", "train",
                              str(kept), "-o", str(tmp_path / "cli.pointseg")],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr       # `pointseg train` reads it as is
        assert (tmp_path / "cli.pointseg").stat().st_size > 0
        # "cross-validated accuracy" means the same in the app and in `pointseg train`: the library's one
        # protocol, and the app says which protocol and how many points it scored
        deadline = time.monotonic() + 60
        while not (m := c.get("/api/model").json())["cv_done"] and time.monotonic() < deadline:
            time.sleep(0.2)
        cli_report = Segmenter.load(tmp_path / "cli.pointseg").training_report_
        assert m["report"]["cv_method"] == cli_report.cv_method == "4-fold"
        assert m["report"]["cv_accuracy"] == pytest.approx(cli_report.cv_accuracy, abs=0.01)
        assert m["report"]["cv_points"] == 8 and "cross_validate" in m["report"]["cv_protocol"]
        r = c.get("/api/export/results.zip", params={"probabilities": True})
        assert 'filename="results-probabilities.zip"' in r.headers["content-disposition"]
        z = zipfile.ZipFile(io.BytesIO(r.content))
        names = z.namelist()
        # label names are the CLI's: <stem>.png (#12 item 8)
        assert sorted(n for n in names if n.startswith("labels/")) == [f"labels/{f.stem}.png" for f in files]
        for must in ("summary.csv", "annotations.json", "model.pointseg"):
            assert must in names
        assert sum(n.startswith("labels/") for n in names) == 3
        assert sum(n.startswith("overlays/") for n in names) == 3
        proba = np.load(io.BytesIO(z.read(next(n for n in names if n.startswith("probabilities/")))))
        assert proba.shape == (2, 128, 160) and proba.dtype == np.float16
        # cancel: a new batch stopped at once ends early and says so
        c.post("/api/predict-all")
        c.delete("/api/predict-all")
        deadline = time.monotonic() + 30
        while (b := c.get("/api/predict-all").json())["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not b["running"] and (b["cancelled"] or b["done"] == 3)


@pytest.mark.shared
def test_real_images_from_shared(make_server):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "magnetic_tile" / "images"
    if not folder.is_dir():
        pytest.skip("../shared/datasets/magnetic_tile is not present")
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    for p in sorted(folder.iterdir())[:3]:
        (tmp / p.name).symlink_to(p)
    s = make_server(images=[tmp])
    with s.client() as c:
        images = c.get("/api/images").json()["images"]
        assert len(images) == 3
        cls = setup_classes(c, ("surface", "defect"))
        img = images[0]
        w, h = img["width"], img["height"]
        items = [{"class_id": cls[0]["id"], "x": 5.0, "y": 5.0}, {"class_id": cls[0]["id"], "x": w - 6.0, "y": h - 6.0},
                 {"class_id": cls[1]["id"], "x": w / 2, "y": h / 2}]
        rev = c.post(f"/api/images/{img['id']}/annotations", json={"items": items}).json()["rev"]
        labels, _, _ = _overlay(c, img["id"], rev)
        assert labels.shape == (h, w) and set(np.unique(labels)) <= {0, 1}


def test_kill_9_during_predict_all_then_restart_finishes_the_batch(make_server, tmp_path):
    """#14 fault test: the process dies mid-batch; the project opens intact, the stored predictions are whole
    PNGs, and a new run finishes the rest without redoing what the current model already predicted."""
    write_images(tmp_path / "imgs", 8, h=256, w=320)
    project = tmp_path / "project"
    s = make_server(project, images=[tmp_path / "imgs"])
    with s.client() as c:
        cls = setup_classes(c)
        ids = [i["id"] for i in c.get("/api/images").json()["images"]]
        rev = c.post(f"/api/images/{ids[0]}/annotations", json={"items": left_right_points(cls)}).json()["rev"]
        _overlay(c, ids[0], rev)                                      # a model exists
        assert c.post("/api/predict-all").status_code == 202
        deadline = time.monotonic() + 60
        while c.get("/api/predict-all").json()["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    s.kill9()                                                         # mid-batch, no shutdown hook
    with sqlite3.connect(project / "project.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s2 = make_server(project)
    with s2.client() as c:
        assert [i["id"] for i in c.get("/api/images").json()["images"]] == ids
        deadline = time.monotonic() + 120
        while (r := c.post("/api/predict-all")).status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.2)                                           # the model is retraining after the restart
        assert r.status_code == 202, r.text
        while (b := c.get("/api/predict-all").json())["running"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b["failed"] == 0 and b["done"] == len(ids), b
        for image in c.get("/api/images").json()["images"]:
            assert image["prediction"]["status"] == "ok" and not image["prediction_stale"], image
            png = c.get(f"/api/images/{image['id']}/prediction.png")
            assert png.status_code == 200
            assert Image.open(io.BytesIO(png.content)).size == (320, 256)   # whole files, never torn

"""The app's "predict all" is `pointseg predict` (issue 10: one batch code path), and the model the app
exports carries the project's NG setting (issue 12 item 12): against a real server process and the real CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from serverkit import left_right_points, setup_classes, write_images

#: the project's NG setting: NG only when findings cover more than 90 % (the stripes cover about half)
NG_AREA = 0.9


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _rows(path):
    with open(path, newline="") as handle:
        return {r["image"]: r for r in csv.DictReader(handle)}


def test_predict_all_equals_pointseg_predict_with_the_exported_model(make_server, tmp_path):
    files = write_images(tmp_path / "imgs", 3)
    s = make_server(images=[tmp_path / "imgs"])
    with s.client() as c:
        cls = setup_classes(c)
        assert c.put("/api/settings", json={"ng_area": NG_AREA}).status_code == 200
        ids = {i["name"]: i["id"] for i in c.get("/api/images").json()["images"]}
        r = c.post(f"/api/images/{ids[files[0].name]}/annotations", json={"items": left_right_points(cls)})
        assert r.status_code == 201
        started = c.post("/api/predict-all")
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 300
        while (b := c.get("/api/predict-all").json())["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b["done"] == 3 and b["failed"] == 0, b
        images = {i["name"]: i for i in c.get("/api/images").json()["images"]}
        model = c.get("/api/export/model.pointseg")
        assert model.status_code == 200
        app_csv = c.get("/api/export/summary.csv").text
    (tmp_path / "m.pointseg").write_bytes(model.content)
    assert json.loads(_meta(tmp_path / "m.pointseg"))["ng_area"] == NG_AREA   # recorded in the model file

    done = _cli("predict", tmp_path / "m.pointseg", tmp_path / "imgs", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    cli_rows = _rows(tmp_path / "out" / "summary.csv")
    app_rows = {r["image"]: r for r in csv.DictReader(app_csv.splitlines())}
    engine_rows = _rows(s.project / "predictions" / "summary.csv")   # what the engine wrote in the project
    for f in files:
        app_labels = np.asarray(Image.open(s.project / "predictions" / f"{images[f.name]['id']}.png"))
        cli_labels = np.asarray(Image.open(tmp_path / "out" / f"{f.stem}.png"))
        assert app_labels.shape == cli_labels.shape and (app_labels == cli_labels).all(), f.name
        stats = images[f.name]["prediction"]["stats"]
        measured = {k: v for k, v in cli_rows[f.name].items() if k not in ("image", "labels", "error", "seconds")}
        assert measured and {k: str(stats[k]) for k in measured} == measured, f.name   # the store holds the row
        assert {k: app_rows[f.name][k] for k in measured} == measured                    # and the app's export
        assert {k: engine_rows[f.name][k] for k in measured} == measured
        # the NG column follows the project's setting, not the learned rule (which flags any region)
        findings = 1.0 - float(measured["fraction_background"])
        assert measured["status"] == ("NG" if findings > NG_AREA else "OK") == "OK", (f.name, findings)
        assert "ng_score" not in measured
    # an explicit rule on the command line still wins over the model's area rule
    strict = _cli("predict", tmp_path / "m.pointseg", tmp_path / "imgs", "-o", tmp_path / "strict", "--ng-rule", "any")
    assert strict.returncode == 0, strict.stderr[-2000:]
    assert {r["status"] for r in _rows(tmp_path / "strict" / "summary.csv").values()} == {"NG"}


def _meta(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return f.metadata()["pointseg"]

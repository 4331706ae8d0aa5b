"""The command line end to end, in real subprocesses (as a user runs it)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synthetic import points_from_truth, two_texture_image


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    images = []
    for seed in (0, 1):
        image, truth = two_texture_image(seed=seed)
        Image.fromarray(image).save(root / f"part{seed}.png")
        images.append({"path": f"part{seed}.png",
                       "points": [[float(x), float(y), ["left", "right", "disc"][int(c)]]
                                  for x, y, c in points_from_truth(truth, 5, seed)]})
    (root / "ann.json").write_text(json.dumps({
        "classes": [{"name": "left", "color": "#00ff00"}, {"name": "right", "color": "#0000ff"},
                    {"name": "disc", "color": "#ff0000"}],
        "images": images,
    }))
    return root


def test_train_then_predict_writes_masks_overlays_probabilities_and_summary(project):
    result = run("train", project / "ann.json", "-o", project / "m.pointseg", "--backbone", "efficientnet_lite0")
    assert result.returncode == 0, result.stderr
    assert "accuracy on the marked points" in result.stdout and "leave-one-image-out" in result.stdout
    out = project / "out"
    result = run("predict", project / "m.pointseg", project / "part0.png", project / "part1.png", "-o", out,
                 "--overlay", "--probabilities", "npy", "--ng-area", "0.5")
    assert result.returncode == 0, result.stderr
    mask = Image.open(out / "part0.png")
    assert mask.mode == "P" and mask.getpalette()[:9] == [0, 255, 0, 0, 0, 255, 255, 0, 0]
    _, truth = two_texture_image(seed=0)
    assert (np.array(mask) == truth).mean() > 0.85
    assert Image.open(out / "part0_overlay.png").size == (224, 160)
    proba = np.load(out / "part1_proba.npy")
    assert proba.shape == (3, 160, 224) and proba.dtype == np.float16
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["image"] for r in rows] == ["part0.png", "part1.png"]
    row = rows[0]
    assert abs(sum(float(row[f"fraction_{c}"]) for c in ("left", "right", "disc")) - 1) < 1e-3
    assert int(row["regions_disc"]) >= 1
    assert row["status"] == "NG"  # "right" + "disc" cover about 55 % > 50 %

    # --min-region: the ~1150-pixel disc is a region below 5000 pixels, so it takes the class around it
    result = run("predict", project / "m.pointseg", project / "part0.png", "-o", project / "out_min",
                 "--min-region", "5000")
    assert result.returncode == 0, result.stderr
    row = next(csv.DictReader(open(project / "out_min" / "summary.csv")))
    assert int(row["regions_disc"]) == 0 and float(row["fraction_disc"]) == 0


def test_bad_inputs_exit_2_with_one_line(project, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"classes": ["a", "b"], "images": [{"path": "x.png", "points": [[1, 1, "zzz"]]}]}))
    result = run("train", bad, "-o", tmp_path / "m.pointseg")
    assert result.returncode == 2
    assert "unknown class 'zzz'" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "not_a_model.pointseg").write_bytes(b"garbage")
    result = run("predict", tmp_path / "not_a_model.pointseg", project / "part0.png", "-o", tmp_path / "o")
    assert result.returncode == 2 and "not a pointseg model file" in result.stderr


def test_corrupt_image_in_a_batch_is_skipped_and_reported(project, tmp_path):
    if not (project / "m.pointseg").exists():
        pytest.skip("needs the model from the train test")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    Image.open(project / "part0.png").save(tmp_path / "good.png")
    result = run("predict", project / "m.pointseg", tmp_path, "-o", tmp_path / "out")
    assert result.returncode == 1  # the run completes; the exit status says an image failed
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert "cannot read image" in rows["broken.png"]["error"] and rows["good.png"]["fraction_left"]


def test_demo_runs_offline_and_writes_its_outputs(tmp_path):
    result = run("demo", "-o", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    for name in ("demo_labels.png", "demo_overlay.png", "demo_report.json", "summary.csv", "demo.pointseg"):
        assert (tmp_path / "demo" / name).is_file()
    report = json.loads((tmp_path / "demo" / "demo_report.json").read_text())
    assert report["point_accuracy"] >= 0.9 and report["n_points"] == 24
    labels = np.array(Image.open(tmp_path / "demo" / "demo_labels.png"))
    assert set(np.unique(labels)) == {0, 1, 2}


def test_info_lists_backbones_and_precision():
    result = run("info")
    assert result.returncode == 0
    assert "efficientnet_lite2" in result.stdout and "pip package" in result.stdout
    assert "precision" in result.stdout

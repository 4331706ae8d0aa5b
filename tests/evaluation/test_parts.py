"""The per-part protocol and image-level metrics on a synthetic parts set whose answer is known."""
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pointseg.evaluation.command import evaluate_command
from pointseg.evaluation.datasets import load_dataset
from pointseg.evaluation.parts import PartsConfig, markdown_parts, part_is_defective, parts_split, run_parts

BACKBONE = "efficientnet_lite0"


def make_parts(root: Path, n_ng: int = 6, n_ok: int = 8) -> Path:
    """Grey parts (96 x 112); defective ones carry a dark disc (the mask), clean ones a mid-grey blob that
    clicks on defective parts never show (a look-alike only OK images teach)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:96, 0:112]
    for i in range(n_ng + n_ok):
        rng = np.random.default_rng(i)
        img = 150 + rng.normal(0, 4, (96, 112))
        mask = np.zeros((96, 112), np.uint8)
        cy, cx = 30 + 4 * (i % 5), 30 + 6 * (i % 4)
        if i < n_ng:
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 11 ** 2
            img[disc], mask[disc] = 30, 1
        else:
            img[(yy - cy - 30) ** 2 + (xx - cx - 40) ** 2 < 10 ** 2] = 90
        Image.fromarray(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, 2)).save(
            root / "images" / f"p{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i:02d}.png")
    (root / "classes.json").write_text(json.dumps({"0": "normal", "1": "defect"}))
    return root


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory):
    return make_parts(tmp_path_factory.mktemp("parts"))


def test_split_keeps_held_out_parts_fixed_and_training_disjoint(parts_dir):
    ds = load_dataset(parts_dir)
    defective = {s: part_is_defective(ds.load_mask(s)) for s in ds.stems}
    assert sum(defective.values()) == 6
    a = parts_split(ds.stems, defective, 0, 2, 2, test=6, reserve_ok=2)
    b = parts_split(ds.stems, defective, 1, 2, 0, test=6, reserve_ok=2)
    assert a[2] == b[2] and len(a[2]) == 6                     # same held-out parts for every seed/condition
    assert sum(defective[s] for s in a[2]) == 2                 # 6 defective - 2 x 2 left to draw training from
    assert all(defective[s] for s in a[0]) and not any(defective[s] for s in a[1])
    assert not set(a[0] + a[1]) & set(a[2]) and b[1] == []


def test_parts_protocol_measures_false_alarms_misses_and_auroc(parts_dir):
    from pointseg import FeatureCache, Segmenter

    ds = load_dataset(parts_dir)
    cache = FeatureCache()
    methods = {"default": lambda: Segmenter(BACKBONE, classes=list(ds.classes), cache=cache)}
    result = run_parts(ds, methods, PartsConfig(seeds=(0,), defective=2, ok_images=(2, 0), budget=3, test=8))
    runs = {r["ok_images"]: r for r in result["runs"]}
    with_ok, without = runs[2], runs[0]
    assert len(with_ok["scores"]["largest_region"]["ng"]) == 2 and len(with_ok["scores"]["largest_region"]["ok"]) == 6
    # the answer is known: with OK images the look-alike is background, every part is decided right
    assert with_ok["rule"]["source"] == "leave-one-image-out"
    assert with_ok["stored_rule"]["false_alarm_rate"] == 0 and with_ok["stored_rule"]["miss_rate"] == 0
    assert with_ok["auroc"]["largest_region"] == 1.0
    assert with_ok["loio"]["ok_images"] == 2
    # without them the look-alike is a finding on every clean part; the rule's clean examples (regions
    # no defect click falls in) do not contain it, so the clean parts come out NG
    assert without["stored_rule"]["false_alarm_rate"] > with_ok["stored_rule"]["false_alarm_rate"]
    row = result["summary"]["default | 2 OK"]
    assert row["false_alarm_rate"]["mean"] == 0 and row["n_seeds"] == 1
    assert "| default | 2 |" in markdown_parts(result)
    # both rules from the same clicks, on the same parts: the stored (area) one and the anomaly one
    from pointseg.decision import EVIDENCE_SCORES

    assert set(with_ok["rules"]) == set(EVIDENCE_SCORES) | {"anomaly"}   # every recorded score's rule
    assert with_ok["context_upscale"] == 1 and len(with_ok["by_stem"]["region_share"]) == 8
    stem = next(iter(with_ok["by_stem"]["largest_region"]))
    h, w = result["sizes"][stem]
    assert (h, w) == (96, 112)
    assert with_ok["by_stem"]["region_share"][stem] == pytest.approx(
        with_ok["by_stem"]["largest_region"][stem] / (h * w))
    assert with_ok["rules"]["largest_region"]["threshold"] == pytest.approx(with_ok["rule"]["threshold"])
    assert with_ok["rules"]["largest_region"]["false_alarms"] == with_ok["stored_rule"]["false_alarms"]
    assert len(with_ok["scores"]["anomaly"]["ng"]) == 2 and with_ok["bank"]["source"] == "ok_images"
    assert without["bank"]["source"] == "defective_background"
    assert "| default | 2 | anomaly |" in markdown_parts(result)
    json.dumps(result)   # JSON-serialisable


def test_evaluate_command_parts_protocol(parts_dir, tmp_path):
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)
    app.command("noop")(lambda: None)
    out = tmp_path / "parts.json"
    r = CliRunner().invoke(app, ["evaluate", str(parts_dir), "-m", BACKBONE, "--protocol", "parts",
                                 "--train-images", "2", "--ok-images", "2", "--budget", "2", "--test", "6",
                                 "--seeds", "0", "--json", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "false alarms" in r.output and "AUROC" in r.output
    assert json.loads(out.read_text())["runs"][0]["ok_images"] == 2
    r = CliRunner().invoke(app, ["evaluate", str(parts_dir), "-m", "skimage-rf", "--protocol", "parts"])
    assert r.exit_code == 2 and "logistic pointseg Segmenter" in r.output

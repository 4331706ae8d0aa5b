"""A model's area rule (the app's NG setting, ``ng_area`` in the model file) travels into the exported graph
and decides the runner's and serve-model's OK/NG as it decides `pointseg predict`'s (issue 12 item 12)."""
import csv

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")


def test_exported_area_rule_decides_runner_service_and_cli(exported, tmp_path):
    from typer.testing import CliRunner

    from pointseg.cli import app
    from pointseg.deploy.export import check_image, export_model
    from pointseg.deploy.runtime import Runner
    from pointseg.deploy.service import _result_json
    from pointseg.engines import forced_engine
    from pointseg.segmenter import Segmenter

    model, _, _ = exported
    Image.fromarray(np.tile(check_image(), (2, 2, 1))[:211, :305]).save(tmp_path / "a.png")
    with forced_engine("torch"):
        seg = Segmenter.load(model)
    assert seg.ng_area_ is None                            # a model trained by the CLI has no area rule
    seg.ng_area_ = 1.0                                     # findings can never cover more than all: always OK
    seg.save(tmp_path / "area.pointseg")
    assert Segmenter.load(tmp_path / "area.pointseg").ng_area_ == 1.0
    meta = export_model(tmp_path / "area.pointseg", tmp_path / "area.onnx")
    assert meta["ng_area"] == 1.0

    runner = Runner(tmp_path / "area.onnx", engine="onnxruntime")
    result = runner.predict(tmp_path / "a.png")
    row = runner.summary(result)
    assert row["status"] == "OK" and "ng_score" not in row
    assert _result_json(runner, result, "a.png", False)["status"] == "OK"          # serve-model's answer
    assert runner.summary(result, ng_area=0.0)["status"] == ("NG" if row["fraction_" + runner.classes[
        runner.background]] < 1 else "OK")                                          # an explicit rule wins

    done = CliRunner().invoke(app, ["predict", str(tmp_path / "area.pointseg"), str(tmp_path / "a.png"),
                                    "-o", str(tmp_path / "out"), "--engine", "torch"])
    assert done.exit_code == 0, done.output
    with open(tmp_path / "out" / "summary.csv") as f:
        cli = next(csv.DictReader(f))
    assert {k: cli[k] for k in row} == {k: str(v) for k, v in row.items()}

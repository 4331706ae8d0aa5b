"""The runner imports no torch, and its summary equals `pointseg predict`'s."""
import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

SRC = Path(__file__).resolve().parents[2] / "src"

BLOCKER = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTorch())
""")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from pointseg.deploy.export import check_image

    folder = tmp_path_factory.mktemp("images")
    tissue = np.tile(check_image(), (2, 2, 1))
    Image.fromarray(tissue[:211, :305]).save(folder / "a.png")
    Image.fromarray(tissue[150:390, 200:460]).save(folder / "b.png")
    return folder


def test_runner_works_where_torch_cannot_be_imported(exported, images, tmp_path):
    _, onnx_path, _ = exported
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    script = textwrap.dedent(f"""
        import json, sys
        try:
            import torch
            sys.exit("torch imported")
        except ImportError:
            pass
        from pointseg.deploy.runtime import Runner
        runner = Runner({str(onnx_path)!r}, engine="onnxruntime")
        rows = {{}}
        for name in ("a.png", "b.png"):
            result = runner.predict({str(images)!r} + "/" + name)
            rows[name] = runner.summary(result)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print(json.dumps(rows))
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{SRC}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(rows) == {"a.png", "b.png"}


def test_runner_summary_equals_the_cli(exported, images, tmp_path):
    from typer.testing import CliRunner

    from pointseg.cli import app
    from pointseg.deploy.runtime import Runner

    model, onnx_path, _ = exported
    result = CliRunner().invoke(app, ["predict", str(model), str(images), "-o", str(tmp_path / "out"),
                                      "--engine", "torch"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "summary.csv") as f:
        cli_rows = {r["image"]: r for r in csv.DictReader(f)}
    runner = Runner(onnx_path, engine="onnxruntime")
    for name in ("a.png", "b.png"):
        row = runner.summary(runner.predict(images / name))
        for key, value in row.items():
            assert str(value) == cli_rows[name][key], (name, key)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_predict_engine_writes_the_same_labels_as_torch(exported, images, tmp_path, engine):
    pytest.importorskip(engine)
    from typer.testing import CliRunner

    from pointseg.cli import app

    model, _, _ = exported
    for e in ("torch", engine):
        result = CliRunner().invoke(app, ["predict", str(model), str(images), "-o", str(tmp_path / e), "--engine", e])
        assert result.exit_code == 0, result.output
    for name in ("a.png", "b.png"):
        a = np.asarray(Image.open(tmp_path / "torch" / name))
        b = np.asarray(Image.open(tmp_path / engine / name))
        assert (a == b).mean() >= 0.999


def test_runner_errors_are_one_clear_line(exported, tmp_path):
    from pointseg.deploy.runtime import Runner
    from pointseg.errors import ImageError, PointsegError

    _, onnx_path, _ = exported
    runner = Runner(onnx_path, engine="onnxruntime")
    with pytest.raises(ImageError, match="cannot read"):
        runner.predict(b"not an image")
    with pytest.raises(ImageError, match="at least"):
        runner.predict(np.zeros((8, 64, 3), np.uint8))
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    with pytest.raises(PointsegError, match="not a readable ONNX|not a graph"):
        Runner(tmp_path / "x.onnx")

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic.py, tests/modelkit.py


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("POINTSEG_ENGINE_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, engine_cache):
    """A small default-preset (hybrid, stride-32 context, smoothing) model and its exported graph."""
    pytest.importorskip("onnxruntime")
    from modelkit import train_small_model
    from pointseg.deploy.export import export_model
    from pointseg.engines import forced_engine

    folder = tmp_path_factory.mktemp("exported")
    with forced_engine("torch"):
        model = train_small_model(folder / "m.pointseg", "efficientnet_lite0_s32")
    meta = export_model(model, folder / "m.onnx")
    return model, folder / "m.onnx", meta

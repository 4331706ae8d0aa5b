"""`pointseg export`: one ONNX graph equal to the PyTorch path, with metadata, at any size; the filter bank."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from pointseg.deploy.export import LABEL_AGREEMENT, PROBA_ATOL, FilterBank, check_image, export_model
from pointseg.engines import forced_engine
from pointseg.errors import PointsegError
from pointseg.filters import low_level_features


def test_filter_bank_in_torch_equals_scipy():
    import torch

    rgb = check_image()[:97, :131]
    ref = low_level_features(rgb)
    got = FilterBank()(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0].numpy()
    # stated tolerance: 5e-5 absolute on responses of order 1 (float32 sums in another order than scipy's
    # double-precision ones; the σ=4 second derivatives, scaled by σ², differ most: ~1.6e-5)
    np.testing.assert_allclose(got, ref, atol=5e-5)


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_metadata_names_classes_colours_version_and_sha(exported):
    import onnx

    from pointseg import __version__
    from pointseg.deploy.export import file_sha256
    from pointseg.deploy.runtime import read_graph_metadata

    model, onnx_path, meta = exported
    graph = onnx.load(str(onnx_path))
    assert graph.opset_import[0].version >= 17
    read = read_graph_metadata(onnx_path)
    assert read["classes"] == ["left", "right", "disc"] and len(read["colors"]) == 3
    assert read["pointseg_version"] == __version__ and read["model_sha256"] == file_sha256(model)
    assert read["background_class"] == 0
    assert read["export_check"]["passed"] and read["export_check"]["label_agreement"] >= LABEL_AGREEMENT


@pytest.mark.parametrize("size", [(64, 64), (77, 301), (301, 59), (33, 45)])  # odd sizes, strips
def test_graph_equals_pytorch_at_dynamic_sizes(exported, size):
    from pointseg.segmenter import Segmenter

    model, onnx_path, _ = exported
    with forced_engine("torch"):
        seg = Segmenter.load(model, precision="fp32")
    image = np.ascontiguousarray(np.tile(check_image(), (2, 2, 1))[: size[0], : size[1]])
    ref = seg.predict_full(image, probabilities=True)
    proba, labels = _session(onnx_path).run(None, {"images": image[None]})
    assert proba.shape == (1, 3, *size) and labels.shape == (1, *size) and labels.dtype == np.uint8
    assert (labels[0] == ref.labels).mean() >= LABEL_AGREEMENT
    assert np.abs(proba[0] - ref.probabilities).max() <= PROBA_ATOL


def test_batch_of_images_in_one_call(exported):
    _, onnx_path, _ = exported
    a, b = check_image()[:96, :128], check_image()[100:196, 50:178]
    proba, labels = _session(onnx_path).run(None, {"images": np.stack([a, b])})
    single, _ = _session(onnx_path).run(None, {"images": b[None]})
    np.testing.assert_allclose(proba[1], single[0], atol=1e-5)


def test_seed_preset_resnet18_exports_and_matches(tmp_path, shared_weights, engine_cache):
    from pointseg.segmenter import Segmenter
    from synthetic import points_from_truth, two_texture_image

    image, truth = two_texture_image(h=96, w=128)
    with forced_engine("torch"):
        seg = Segmenter.preset("seed", classes=["a", "b", "c"], weights=shared_weights, precision="fp32",
                               cross_validate=False).fit([image], [points_from_truth(truth, 6)])
        seg.save(tmp_path / "seed.pointseg")
    meta = export_model(tmp_path / "seed.pointseg", tmp_path / "seed.onnx", weights=shared_weights)
    assert meta["backbone"] == "resnet18" and meta["features"] == "deep"
    assert meta["export_check"]["proba_max_abs_diff"] <= PROBA_ATOL


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
def test_other_backbones_export(tmp_path, backbone, engine_cache):
    from modelkit import train_small_model

    with forced_engine("torch"):
        model = train_small_model(tmp_path / "m.pointseg", backbone)
    assert export_model(model, tmp_path / "m.onnx")["export_check"]["passed"]


def test_export_refuses_a_disagreeing_graph(tmp_path, exported, monkeypatch):
    import pointseg.deploy.export as ex

    model, _, _ = exported
    monkeypatch.setattr(ex, "PROBA_ATOL", -1.0)  # nothing can pass: the check must refuse and write nothing
    with pytest.raises(PointsegError, match="disagrees"):
        ex.export_model(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob(".*tmp"))


def test_cli_export_writes_the_graph(tmp_path, exported):
    from typer.testing import CliRunner

    from pointseg.cli import app

    model, _, _ = exported
    result = CliRunner().invoke(app, ["export", str(model), "-o", str(tmp_path / "cli.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.onnx").stat().st_size > 1_000_000

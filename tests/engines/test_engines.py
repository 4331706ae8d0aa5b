"""Runtime engines agree with the torch fp32 reference, tile exactly, and are named in the cache key."""
import os
import numpy as np
import pytest

from pointseg.engines import available_engines, cache_dir, resolve_engine, runtime_installed
from pointseg.errors import PointsegError
from pointseg.features import FeatureExtractor, cpu_has_native_bf16
from synthetic import RESNET18_TRUNK

RUNTIMES = [pytest.param(e, marks=pytest.mark.skipif(not runtime_installed(e), reason=f"{e} is not installed"))
            for e in ("openvino", "onnxruntime")]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 255, (40, 52, 3)).astype(np.float32)
    from scipy.ndimage import zoom

    return np.clip(zoom(base, (8, 8, 1), order=1)[:301, :397], 0, 255).astype(np.uint8)  # odd sizes


def _rel(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


@pytest.fixture(scope="module")
def reference(image):
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="torch")
    return ext.compute_parts(image)


@pytest.mark.parametrize("engine", RUNTIMES)
def test_fp32_engine_equals_torch_fp32(engine, image, reference):
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine=engine)
    base, context = ext.compute_parts(image)
    # stated tolerance for fp32 engines: 1e-4 relative RMS (measured ~1e-6: only summation order differs)
    assert _rel(base, reference[0]) < 1e-4
    assert _rel(context, reference[1]) < 1e-4


@pytest.mark.skipif(not runtime_installed("openvino") or not cpu_has_native_bf16(), reason="needs openvino + bf16 CPU")
def test_openvino_bf16_is_as_close_as_torch_bf16(image, reference):
    ov = FeatureExtractor("efficientnet_lite0_s32", precision="bf16", engine="openvino").compute_parts(image)
    pt = FeatureExtractor("efficientnet_lite0_s32", precision="bf16", engine="torch").compute_parts(image)
    # bf16 keeps 8 mantissa bits: both land a few % from fp32; OpenVINO must be no worse than 1.5x torch's
    for got, torch_bf16, ref in zip(ov, pt, reference):
        assert _rel(got, ref) < max(0.05, 1.5 * _rel(torch_bf16, ref))


@pytest.mark.parametrize("engine", RUNTIMES)
def test_engine_tiles_equal_whole_image(engine, image):
    large = np.tile(image, (2, 2, 1))[:590, :700]
    whole = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine=engine, tile_size=4096)
    tiled = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine=engine, tile_size=192)
    assert len(list(tiled._tile_grid(*tiled.padded_size(large.shape[:2])))) > 1
    for a, b in zip(tiled.compute_parts(large), whole.compute_parts(large)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("engine", RUNTIMES)
def test_resnet18_engine_equals_torch(engine, image):
    if not RESNET18_TRUNK.is_file():
        pytest.skip("../shared/weights/resnet18-imagenet-trunk is not present")
    ref = FeatureExtractor("resnet18", RESNET18_TRUNK, precision="fp32", engine="torch").compute(image)
    got = FeatureExtractor("resnet18", RESNET18_TRUNK, precision="fp32", engine=engine).compute(image)
    assert got.shape == ref.shape
    assert _rel(got, ref) < 1e-4


@pytest.mark.parametrize("engine", RUNTIMES)
def test_cache_key_names_engine_and_precision(engine):
    torch_ext = FeatureExtractor("efficientnet_lite0", precision="fp32", engine="torch")
    ext = FeatureExtractor("efficientnet_lite0", precision="fp32", engine=engine)
    assert f"-{engine}-fp32-" in ext.id and "-torch-fp32-" in torch_ext.id
    assert ext.id != torch_ext.id


@pytest.mark.skipif(not runtime_installed("openvino"), reason="openvino is not installed")
def test_exported_graphs_are_cached_on_disk(image):
    FeatureExtractor("efficientnet_lite0", precision="fp32", engine="openvino").compute(image[:64, :64])
    graphs = sorted(p.name for p in cache_dir().glob("efficientnet_lite0-*.onnx"))
    assert graphs and all("-op17-" in g for g in graphs)
    mtimes = [p.stat().st_mtime_ns for p in cache_dir().glob("efficientnet_lite0-*.onnx")]
    FeatureExtractor("efficientnet_lite0", precision="fp32", engine="openvino").compute(image[:64, :64])
    assert [p.stat().st_mtime_ns for p in cache_dir().glob("efficientnet_lite0-*.onnx")] == mtimes
    assert any((cache_dir() / "openvino").iterdir())  # OpenVINO's compiled blobs


def test_auto_picks_a_runtime_and_env_overrides(monkeypatch):
    expected = next((e for e in ("openvino", "onnxruntime") if runtime_installed(e)), "torch")
    assert resolve_engine("auto") == expected
    monkeypatch.setenv("POINTSEG_ENGINE", "torch")
    assert FeatureExtractor("efficientnet_lite0", precision="fp32").engine == "torch"
    assert "torch" in available_engines()


def test_unknown_engine_and_unsupported_precision_are_clear_errors():
    with pytest.raises(PointsegError, match="unknown engine"):
        FeatureExtractor("efficientnet_lite0", engine="tensorrt")
    if runtime_installed("onnxruntime"):
        assert FeatureExtractor("efficientnet_lite0", engine="onnxruntime").precision == "fp32"
        with pytest.raises(PointsegError, match="fp32"):
            FeatureExtractor("efficientnet_lite0", engine="onnxruntime", precision="bf16")


@pytest.mark.skipif(not runtime_installed("openvino"), reason="openvino is not installed")
def test_first_export_inside_bf16_autocast_still_gives_an_fp32_graph(image):
    import torch

    ext = FeatureExtractor("efficientnet_lite2", precision="bf16", engine="openvino")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what FeatureExtractor._inference does around a pass
        out = ext.compute(image[:96, :96])
    assert np.isfinite(out).all() and out.shape[1:] == (96 // 4, 96 // 4)


@pytest.mark.skipif(not runtime_installed("onnxruntime"), reason="onnxruntime is not installed")
def test_auto_engine_on_onnxruntime_runs_a_bf16_model_in_fp32(monkeypatch):
    monkeypatch.setenv("POINTSEG_ENGINE", "onnxruntime")  # as where OpenVINO is missing
    ext = FeatureExtractor("efficientnet_lite0", precision="bf16")  # a model file trained with bf16 features
    assert (ext.engine, ext.precision) == ("onnxruntime", "fp32")


@pytest.mark.parametrize("engine", RUNTIMES)
def test_limit_threads_reaches_the_engine_pool(engine, tmp_path):
    """A single-threaded Dask worker must compile its engine for one thread, not every core."""
    import torch

    from pointseg.engines import sessions

    path = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    try:
        sessions.limit_threads(1)
        one = sessions.open_session(path, engine)
        sessions.limit_threads(None)
        default = sessions.open_session(path, engine)
    finally:
        sessions.limit_threads(None)
    if engine == "openvino":
        assert one._compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert default._compiled.get_property("INFERENCE_NUM_THREADS") != 1 or (os.cpu_count() or 1) == 1
    else:
        assert one._session.get_session_options().intra_op_num_threads == 1
        assert default._session.get_session_options().intra_op_num_threads == 0


@pytest.mark.skipif(not runtime_installed("openvino"), reason="openvino is not installed")
def test_released_engine_buffers_leave_memory_and_the_engine_runs_on(image):
    """OpenVINO keeps activation buffers sized for the largest input it ran; after a large image the extractor
    hands them back (issue 15), and the next run reallocates them and gives the same features."""
    from pathlib import Path

    from pointseg.features import release_freed_memory

    def rss_mb():
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

    large = np.tile(image, (3, 3, 1))  # 903 x 1191: one pass
    ext = FeatureExtractor("efficientnet_lite0_s32", precision="fp32", engine="openvino", tile_size=4096)
    first = ext.compute_parts(large)
    release_freed_memory()
    before = rss_mb()
    ext.release_engine_memory()
    release_freed_memory()
    assert before - rss_mb() > 50  # measured: ~220 MB for this image in fp32
    for a, b in zip(ext.compute_parts(large), first):
        np.testing.assert_array_equal(a, b)

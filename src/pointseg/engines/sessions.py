"""Runtime sessions over an ONNX file: one small interface for OpenVINO and onnxruntime, no torch.

``open_session(path, engine, precision)`` compiles (or loads from the on-disk cache) and returns a
:class:`Session` whose :meth:`~Session.run` maps input arrays to output arrays. OpenVINO bf16 is its CPU
plugin's inference-precision hint (bf16 compute, fp32 in and out); onnxruntime uses its CUDA provider when
it is installed with one and a GPU is present, its CPU provider otherwise.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from pointseg.engines import cache_dir, engine_precisions
from pointseg.errors import PointsegError

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class Session:
    """A compiled graph: ``run({name: array}) -> [array, ...]`` in the graph's output order."""

    engine: str
    precision: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def release_memory(self) -> None:
        """Free the intermediate buffers the runtime keeps between runs (a no-op where it has no such call)."""


class OpenVINOSession(Session):
    """OpenVINO CPU plugin; compiled blobs are cached in ``CACHE_DIR`` so a restart skips compilation."""

    _core = None
    _core_lock = threading.Lock()

    def __init__(self, path: Path, precision: str, threads: int | None = None):
        import openvino as ov

        with OpenVINOSession._core_lock:
            if OpenVINOSession._core is None:
                OpenVINOSession._core = ov.Core()
        # the blob cache is named per compile, so it follows $POINTSEG_ENGINE_CACHE as the ONNX files do
        config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
                  "CACHE_DIR": str(cache_dir() / "openvino")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.engine, self.precision = "openvino", precision
        self._compiled = OpenVINOSession._core.compile_model(str(path), "CPU", config)
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self.output_names = [p.get_any_name() for p in self._compiled.outputs]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per thread: requests are not thread-safe, models are
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return [np.array(result[out]) for out in self._compiled.outputs]

    def release_memory(self) -> None:
        """``CompiledModel.release_memory()``: with dynamic shapes the CPU plugin keeps its activation
        buffers sized for the largest input it has run (measured: ~260 MB after a 1344-px tile of the
        default trunk, about half the engine's resident cost); they are reallocated on the next run."""
        self._compiled.release_memory()


class OnnxRuntimeSession(Session):
    """onnxruntime with the CUDA provider when available, else the CPU provider (fp32 only)."""

    def __init__(self, path: Path, precision: str, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting of idle worker threads: on a few shared cores it steals time from torch and
        # from the other requests (the interactive app runs torch beside the engine)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        self.engine, self.precision = "onnxruntime", precision
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self._session.get_providers()
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})


_THREADS: int | None = None


def limit_threads(n: int | None) -> None:
    """Compile later sessions for ``n`` threads (``None``: the engine's default, every core).

    A Dask worker runs one task at a time on one core: ``torch.set_num_threads(1)`` does not reach OpenVINO's
    or onnxruntime's own thread pools, and N workers whose engines each spread over every core fight for
    them (the 2-worker throughput fell to 0.72 of twice one worker's)."""
    global _THREADS
    _THREADS = None if n is None else int(n)


def open_session(path: str | os.PathLike, engine: str, precision: str = "fp32",
                 threads: int | None = None) -> Session:
    """Compile ``path`` (an ONNX file) for ``engine`` (``"openvino"`` or ``"onnxruntime"``) at ``precision``,
    on ``threads`` threads (default: the :func:`limit_threads` setting)."""
    threads = _THREADS if threads is None else threads
    if precision not in engine_precisions(engine):
        raise PointsegError(
            f"engine {engine!r} runs in {' or '.join(engine_precisions(engine))} on this machine, not "
            f"{precision!r}; choose another precision or engine"
        )
    path = Path(path)
    if engine == "openvino":
        return OpenVINOSession(path, precision, threads)
    if engine == "onnxruntime":
        return OnnxRuntimeSession(path, precision, threads)
    raise PointsegError(f"engine {engine!r} has no ONNX session; use 'openvino' or 'onnxruntime'")

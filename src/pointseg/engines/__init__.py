"""How a network runs: PyTorch (the reference and the fallback), OpenVINO or onnxruntime.

There is one conversion path, torch module → ONNX (dynamic batch, height and width) → a runtime session
(:mod:`pointseg.engines.convert`, :mod:`pointseg.engines.sessions`). The feature extractor uses it for the
backbone (:mod:`pointseg.engines.trunk`); ``pointseg export`` uses it for the whole model. ONNX files are
cached on disk keyed by what they contain, and OpenVINO keeps its compiled blobs in the same cache
(``CACHE_DIR``), so a restarted process neither re-exports nor recompiles.

This module and :mod:`~pointseg.engines.sessions` import no torch: the line-PC runner uses them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pointseg.errors import PointsegError

ENGINES = ("torch", "openvino", "onnxruntime")
#: runtime engines by preference: fastest first, as measured (BENCHMARKS.md, "Feature engines")
RUNTIME_PREFERENCE = ("openvino", "onnxruntime")


def runtime_installed(engine: str) -> bool:
    """Whether the Python package of a runtime engine can be imported (without importing it)."""
    return importlib.util.find_spec(engine) is not None


def available_engines() -> list[str]:
    """Engines usable here: torch (when installed) and each installed runtime."""
    found = [e for e in RUNTIME_PREFERENCE if runtime_installed(e)]
    return (["torch"] if runtime_installed("torch") else []) + found


def resolve_engine(engine: str) -> str:
    """``"auto"`` → the fastest installed engine (OpenVINO, then onnxruntime, then torch); else validated."""
    if engine == "auto":
        for name in RUNTIME_PREFERENCE:
            if runtime_installed(name):
                return name
        return "torch"
    if engine not in ENGINES:
        raise PointsegError(f"unknown engine {engine!r}; choose one of: auto, {', '.join(ENGINES)}")
    if engine != "torch" and not runtime_installed(engine):
        raise PointsegError(
            f"engine {engine!r} is not installed; `pip install \"pointseg[deploy]\"` (or choose --engine torch)"
        )
    return engine


def engine_precisions(engine: str) -> tuple[str, ...]:
    """Precisions an engine computes in on CPU (onnxruntime's CPU provider has no bf16 convolutions)."""
    return ("fp32",) if engine == "onnxruntime" else ("fp32", "bf16")


def cache_dir() -> Path:
    """Where exported graphs and compiled blobs live: ``$POINTSEG_ENGINE_CACHE`` or ``~/.cache/pointseg/engines``."""
    env = os.environ.get("POINTSEG_ENGINE_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "pointseg" / "engines"
    path.mkdir(parents=True, exist_ok=True)
    return path


class forced_engine:
    """``with forced_engine("torch"):`` — extractors created inside resolve ``engine="auto"`` to ``engine``
    (via ``$POINTSEG_ENGINE``), e.g. for a model file loaded as the fp32 PyTorch reference."""

    def __init__(self, engine: str):
        self.engine = engine

    def __enter__(self):
        self._old = os.environ.get("POINTSEG_ENGINE")
        os.environ["POINTSEG_ENGINE"] = self.engine
        return self

    def __exit__(self, *exc):
        if self._old is None:
            os.environ.pop("POINTSEG_ENGINE", None)
        else:
            os.environ["POINTSEG_ENGINE"] = self._old

"""The one conversion path: a torch module → an ONNX file with dynamic batch/height/width, cached on disk.

Export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): on this
torch (2.13) the dynamo exporter did not finish exporting the EfficientNet trunk in ten minutes, while the
tracer takes seconds. Traced graphs keep sizes dynamic as long as the module does not turn sizes into
Python numbers; pointseg's modules are written that way for inputs padded to ``spec.pad_multiple``
(see ``Conv2dSame``), and every graph is checked against the module at a second size before it is kept.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pointseg.engines import cache_dir
from pointseg.errors import PointsegError

#: ONNX opset of every exported graph
OPSET = 17
#: bumped whenever what an exported graph computes changes (invalidates cached ONNX files)
FORMAT_VERSION = 1

_export_lock = threading.Lock()


def graph_path(name: str) -> Path:
    """The cached ONNX file for ``name`` (which must identify the weights and what the graph computes)."""
    return cache_dir() / f"{name}-op{OPSET}-f{FORMAT_VERSION}.onnx"


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_module(module: torch.nn.Module, example: tuple, path: str | os.PathLike, input_names: list[str],
                  output_names: list[str], dynamic_axes: dict, check_inputs: tuple | None = None,
                  rtol: float = 1e-4) -> Path:
    """Export ``module`` to ``path`` atomically and check it with onnxruntime on ``check_inputs``.

    ``check_inputs`` should differ in size from ``example``: a size frozen into the graph by the tracer
    then shows as a wrong output shape or values, and the file is not written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    module.eval()
    # exports can start inside a caller's bf16 autocast (FeatureExtractor._inference): the graph is fp32
    with _export_lock, _quiet(), torch.inference_mode(False), torch.no_grad(), \
            torch.autocast("cpu", enabled=False):
        torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    try:
        if check_inputs is not None:
            _check_against_torch(module, tmp, check_inputs, input_names, rtol)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _check_against_torch(module, path: Path, inputs: tuple, input_names: list[str], rtol: float) -> None:
    import onnxruntime as ort

    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        expected = module(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs)})
    for i, (e, g) in enumerate(zip(expected, got)):
        e = e.float().numpy() if e.dtype.is_floating_point else e.numpy()
        if e.shape != g.shape:
            raise PointsegError(f"exported graph output {i} has shape {g.shape}, torch gives {e.shape}; "
                                "a size was frozen into the graph (report this as a bug)")
        if e.dtype.kind == "f":
            scale = float(np.abs(e).max()) or 1.0
            err = float(np.abs(e - g).max()) / scale
            if err > rtol:
                raise PointsegError(f"exported graph output {i} differs from torch by {err:.2g} (relative to "
                                    f"its largest value; allowed {rtol:g}); not using it")


def cached_export(name: str, build, example: tuple, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict, check_inputs: tuple | None = None) -> Path:
    """:func:`export_module` of ``build()`` into :func:`graph_path` ``(name)``, unless already there."""
    path = graph_path(name)
    if not path.is_file():
        export_module(build(), example, path, input_names, output_names, dynamic_axes, check_inputs)
    return path

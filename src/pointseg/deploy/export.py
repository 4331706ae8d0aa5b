"""A trained model as one self-contained ONNX graph: N×H×W×3 uint8 → probabilities N×K×H×W and labels N×H×W.

The graph holds everything ``Segmenter.predict_full`` does except ``min_region`` (connected components do
not map to ONNX operators; the runner applies it, :mod:`pointseg.deploy.runtime`): normalisation, reflect
padding to the backbone's multiple, the trunk, the linear head folded into each scale (each stage map is
scored before its upsampling; interpolation is linear, so this equals scoring the concatenated map), the
stride-32 context scored on its own grid, upsampling to pixels, the full-resolution filter bank of hybrid
features (scipy's Gaussian filters written as convolutions: :class:`FilterBank`), the Gaussian smoothing of
the score differences and the softmax.

:func:`export_model` refuses to write a graph that onnxruntime does not run like the PyTorch fp32 path on a
test image: labels must agree on at least :data:`LABEL_AGREEMENT` of the pixels and probabilities within
:data:`PROBA_ATOL`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointseg.engines.convert import OPSET, export_module
from pointseg.engines.trunk import _unfused
from pointseg.errors import PointsegError

#: export check: share of pixels whose label must equal the PyTorch fp32 path's
LABEL_AGREEMENT = 0.999
#: export check: largest allowed absolute difference of any probability
PROBA_ATOL = 1e-3
#: metadata key prefix in the ONNX file
META_PREFIX = "pointseg."


def _gauss_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / sigma ** 2 * x ** 2)
    return torch.from_numpy((phi / phi.sum()).astype(np.float32))


def _pad_index(n, radius: int, mode: str) -> torch.Tensor:
    """Indices ``-radius .. n+radius-1`` folded into ``0..n-1``: scipy's ``reflect`` (edge repeated) or
    ``nearest``. Built from the traced size, so the graph stays dynamic."""
    idx = torch.arange(-radius, n + radius)
    if mode == "nearest":
        return idx.clamp(0, n - 1)
    idx = torch.where(idx < 0, -idx - 1, idx)
    return torch.where(idx > n - 1, 2 * n - 1 - idx, idx)


def gaussian(x: torch.Tensor, sigma: float, truncate: float, mode: str) -> torch.Tensor:
    """Separable Gaussian of ``N x C x H x W`` per channel, as ``scipy.ndimage.gaussian_filter`` on each plane
    (``mode`` ``"reflect"`` or ``"nearest"``; images need at least ``radius`` pixels per side for reflect)."""
    k = _gauss_kernel(sigma, truncate)
    r, c = (len(k) - 1) // 2, int(x.shape[1])  # channels are fixed: a constant kernel shape
    x = x.index_select(2, _pad_index(x.shape[2], r, mode))
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    x = x.index_select(3, _pad_index(x.shape[3], r, mode))
    return F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def _central(g: torch.Tensor, dim: int, second: bool = False) -> torch.Tensor:
    """Central first (halved) or second difference along ``dim`` (2 rows, 3 columns), zero at the borders."""
    n = g.shape[dim]
    hi, lo = g.narrow(dim, 2, n - 2), g.narrow(dim, 0, n - 2)
    d = hi - 2 * g.narrow(dim, 1, n - 2) + lo if second else (hi - lo) * 0.5
    pad = (0, 0, 1, 1) if dim == 2 else (1, 1, 0, 0)
    return F.pad(d, pad)


class FilterBank(nn.Module):
    """:func:`pointseg.filters.low_level_features` in torch operators (for export): ``N x 3 x H x W`` float
    in ``[0, 255]`` → ``N x CHANNELS x H x W``. Equal to the scipy version within 5e-5 absolute (float32
    sums; the σ²-scaled σ=4 second derivatives differ most, ~1.6e-5)."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        from pointseg.filters import SIGMAS

        colour = rgb * (1.0 / 255.0)
        grey = colour.mean(dim=1, keepdim=True)
        out = [colour]
        for sigma in SIGMAS:
            g = gaussian(grey, sigma, 4.0, "reflect")
            gx, gy = _central(g, 3), _central(g, 2)
            gxx, gyy = _central(g, 3, True), _central(g, 2, True)
            gxy = _central(gx, 2)
            s2 = sigma * sigma
            trace = (gxx + gyy) * s2
            root = torch.sqrt(((gxx - gyy) * s2) ** 2 + 4 * (gxy * s2) ** 2)
            out += [g, torch.sqrt(gx * gx + gy * gy) * sigma, trace, (trace + root) * 0.5, (trace - root) * 0.5]
        return torch.cat(out, dim=1)


@dataclass
class ModelParts:
    """What the graph is built from: the trunk, its input normalisation and the folded head per block."""

    trunk: nn.Module
    spec: object
    weights: np.ndarray  # K x (deep + context + fine), on raw features
    bias: np.ndarray  # K
    deep_channels: int  # channels of the fused map before any context tail
    context_channels: int
    fine_channels: int
    smoothing: float
    context_upscale: int = 1  # the context stage sees the image enlarged by this (Segmenter.context_upscale_)


class WholeModel(nn.Module):
    """images ``N x H x W x 3`` uint8 → (probabilities ``N x K x H x W`` float32, labels ``N x H x W`` uint8)."""

    def __init__(self, parts: ModelParts):
        super().__init__()
        self.trunk, spec = parts.trunk, parts.spec
        self.multiple = int(spec.pad_multiple)
        self.scale = float(spec.input_scale)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))
        w = torch.from_numpy(np.ascontiguousarray(parts.weights, dtype=np.float32))
        self.register_buffer("bias", torch.from_numpy(np.asarray(parts.bias, dtype=np.float32)).view(1, -1, 1, 1))
        d, c = parts.deep_channels, parts.context_channels
        self.register_buffer("w_deep", w[:, :d].contiguous())
        self.register_buffer("w_context", w[:, d: d + c][:, :, None, None].contiguous())
        self.register_buffer("w_fine", w[:, d + c:][:, :, None, None].contiguous())
        self.has_context = c > 0
        self.context_upscale = int(parts.context_upscale) if self.has_context else 1
        self.filters = FilterBank() if parts.fine_channels else None
        self.smoothing = float(parts.smoothing)

    def _stage_scores(self, x: torch.Tensor, rgb_padded: torch.Tensor) -> torch.Tensor:
        """Deep scores on the stride-4 grid: each stage map scored with its slice of the head, then upsampled.
        ``rgb_padded`` (the padded image, 0-255) feeds an enlarged context copy when ``context_upscale`` > 1."""
        with _unfused(self.trunk) as trunk:
            if self.has_context:
                maps, x16 = trunk.forward_base(x)
            else:
                maps = trunk.forward(x)
        total, start = None, 0
        for i, m in enumerate(maps):
            w = self.w_deep[:, start: start + m.shape[1]][:, :, None, None]
            start += m.shape[1]
            s = F.conv2d(m, w)
            if i:
                s = F.interpolate(s, scale_factor=2 ** i, mode="bilinear", align_corners=False)
            total = s if total is None else total + s
        if self.has_context:
            coarse = F.conv2d(self._context(x16, rgb_padded), self.w_context)
            total = total + F.interpolate(coarse, scale_factor=8, mode="bilinear", align_corners=False)
        return total + self.bias

    def _context(self, x16: torch.Tensor, rgb_padded: torch.Tensor) -> torch.Tensor:
        """The stride-32 context map, as ``FeatureExtractor._upscaled_context`` makes it for a factor > 1: the
        padded image enlarged bilinearly and rounded to 8 bits, the trunk up to stride 16 and the tail run
        over it, average-pooled back by the factor."""
        f = self.context_upscale
        if f == 1:
            return self.trunk.forward_context(x16)
        up = F.interpolate(rgb_padded, scale_factor=float(f), mode="bilinear", align_corners=False)
        up = torch.clamp(torch.round(up), 0, 255)
        with _unfused(self.trunk) as trunk:
            _, up16 = trunk.forward_base((up / self.scale - self.mean) / self.std)
        return F.avg_pool2d(self.trunk.forward_context(up16), f)

    def forward(self, images: torch.Tensor):
        rgb = images.permute(0, 3, 1, 2).float()
        h, w = rgb.shape[2], rgb.shape[3]
        m = self.multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        padded = rgb.index_select(2, _fold_reflect(h, pad_h)).index_select(3, _fold_reflect(w, pad_w))
        x = (padded / self.scale - self.mean) / self.std
        grid = self._stage_scores(x, padded)
        logits = F.interpolate(grid, scale_factor=4, mode="bilinear", align_corners=False)[:, :, :h, :w]
        if self.filters is not None:
            logits = logits + F.conv2d(self.filters(rgb), self.w_fine)
        if self.smoothing:
            diff = logits - logits[:, :1]
            logits = gaussian(diff, self.smoothing, 3.0, "nearest")
        proba = torch.softmax(logits, dim=1)
        return proba, proba.argmax(dim=1).to(torch.uint8)


def _fold_reflect(n, pad) -> torch.Tensor:
    """Indices ``0..n+pad-1`` with the tail reflected (numpy's ``reflect``: the edge pixel not repeated)."""
    idx = torch.arange(0, n + pad)
    return torch.where(idx > n - 1, 2 * n - 2 - idx, idx)


def model_parts(seg) -> ModelParts:
    """The pieces of a fitted, saved-able Segmenter (logistic head) that the graph needs."""
    from pointseg.autocontext import AutoContextHead
    from pointseg.classifier import LinearHead

    if isinstance(getattr(seg, "head_", None), AutoContextHead):
        raise PointsegError("auto-context models (autocontext=True) cannot be exported to ONNX yet; predict with "
                            "`pointseg predict` (Python runtime), or train without autocontext to export")
    if not isinstance(getattr(seg, "head_", None), LinearHead):
        raise PointsegError("only trained logistic-regression models can be exported; train one with `pointseg train`")
    ext = seg.extractor
    trunk = getattr(ext.module, "trunk", ext.module)  # the torch module behind an engine
    trunk = trunk.float().eval().to(memory_format=torch.contiguous_format)
    w, b = seg.head_.folded()
    fine = ext.fine_channels
    context = 0
    if getattr(trunk, "context_start", None) is not None:
        with torch.no_grad():
            context = int(trunk.forward_context(trunk.forward_base(torch.zeros(1, 3, 64, 64))[1]).shape[1])
    return ModelParts(trunk, ext.spec, w, b, ext.channels - context, context, fine, seg.smoothing_,
                      ext.context_upscale)


def check_image(seed: int = 0) -> np.ndarray:
    """The export check's test image: a crop of scikit-image's stained tissue section (shipped with
    scikit-image, no download), at odd sizes so that padding and cropping are exercised."""
    from skimage import data

    return np.ascontiguousarray(data.immunohistochemistry()[37:37 + 301, 53:53 + 397])


def compare(reference_labels, reference_proba, labels, proba) -> dict:
    """Agreement of a graph's outputs with the PyTorch path's: label share equal, largest probability error."""
    agree = float((np.asarray(labels) == np.asarray(reference_labels)).mean())
    err = float(np.abs(np.asarray(proba) - np.asarray(reference_proba)).max())
    return {"label_agreement": agree, "proba_max_abs_diff": err,
            "passed": agree >= LABEL_AGREEMENT and err <= PROBA_ATOL}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_model(model_path: str | os.PathLike, output: str | os.PathLike, weights=None,
                 test_image: np.ndarray | None = None) -> dict:
    """Write ``output`` (.onnx) for the model file ``model_path``; returns the metadata and the check result.

    The PyTorch reference is the model loaded with the torch engine at fp32 (``min_region`` off: the runner
    applies it). Raises :class:`PointsegError`, writing nothing, when onnxruntime disagrees beyond the
    stated tolerance.
    """
    import onnx

    from pointseg._version import __version__
    from pointseg.engines import forced_engine
    from pointseg.segmenter import Segmenter

    with forced_engine("torch"):
        seg = Segmenter.load(model_path, weights=weights, precision="fp32")
        seg.min_region = 0
    image = check_image() if test_image is None else np.asarray(test_image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PointsegError("the export check image must be 8-bit RGB (H x W x 3)")
    reference = seg.predict_full(image, probabilities=True)
    module = WholeModel(model_parts(seg)).eval()
    out = Path(output)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    small = torch.from_numpy(np.ascontiguousarray(image[:71, :93]))[None]
    axes = {"images": {0: "n", 1: "height", 2: "width"}, "probabilities": {0: "n", 2: "height", 3: "width"},
            "labels": {0: "n", 1: "height", 2: "width"}}
    export_module(module, (small,), tmp, ["images"], ["probabilities", "labels"], axes)
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        proba, labels = session.run(None, {"images": image[None]})
        check = compare(reference.labels, reference.probabilities, labels[0], proba[0])
        check.update(image_size=list(image.shape[:2]), label_tolerance=LABEL_AGREEMENT, proba_tolerance=PROBA_ATOL)
        if not check["passed"]:
            raise PointsegError(
                f"the exported graph disagrees with PyTorch on the test image (labels equal on "
                f"{check['label_agreement']:.4%} of pixels, need {LABEL_AGREEMENT:.1%}; largest probability "
                f"difference {check['proba_max_abs_diff']:.2g}, allowed {PROBA_ATOL:g}); not writing {out.name}")
        meta = graph_metadata(seg, model_path, __version__)
        meta["export_check"] = check
        graph = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = META_PREFIX + key, json.dumps(value)
        graph.producer_name, graph.doc_string = "pointseg", f"pointseg {__version__} model {meta['model_sha256'][:12]}"
        onnx.save(graph, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def graph_metadata(seg, model_path, version: str) -> dict:
    """What a runner needs besides the graph: classes, colours, background, OK/NG rule, min_region, provenance."""
    rule = getattr(seg, "ng_rule_", None)
    if rule is not None and rule.score == "anomaly":
        raise PointsegError(
            "this model decides OK/NG with the anomaly score (distance of the image's feature cells to the OK "
            "images' bank), which an exported graph cannot compute: it outputs labels and probabilities only. "
            "Retrain with `pointseg train --ng-rule largest_region` to export, or predict with the library "
            "(`pointseg predict` without --engine)")
    return {
        "classes": list(seg.classes_),
        "colors": list(seg.colors_),
        "background_class": int(getattr(seg, "background_", 0)),
        "ng_rule": rule.as_dict() if rule is not None else None,
        "ng_area": getattr(seg, "ng_area_", None),  # the app's NG setting: applied by the runner's summary
        "min_region": int((getattr(seg, "model_metadata_", {}) or {}).get("params", {}).get("min_region", 0) or 0),
        "smoothing": float(seg.smoothing_),
        "backbone": seg.extractor.backbone,
        "weights_sha256": seg.extractor.weights_sha256,
        "features": seg.extractor.features,
        "pointseg_version": version,
        "model_sha256": file_sha256(model_path),
        "model_file": Path(model_path).name,
        "opset": OPSET,
        "min_image_side": math.ceil(seg.extractor.spec.pad_multiple / 2) + 1,
    }


def cached_graph(model_path: str | os.PathLike, weights=None) -> Path:
    """The exported (and checked) graph of a model file, from the engine cache when it was exported before:
    keyed by the model file's sha256 and the pointseg version, so `predict --engine` and `serve-model` export
    a model once."""
    from pointseg._version import __version__
    from pointseg.engines import cache_dir

    path = cache_dir() / "models" / f"{file_sha256(model_path)[:32]}-v{__version__}-op{OPSET}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_model(model_path, path, weights=weights)
    return path

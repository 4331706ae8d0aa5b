"""The line-PC runner: an exported model.onnx on OpenVINO or onnxruntime, with numpy and Pillow — no torch.

>>> runner = Runner("model.onnx")                     # doctest: +SKIP
>>> result = runner.predict("part_017.png")           # doctest: +SKIP
>>> runner.summary(result.labels)["status"]           # doctest: +SKIP
'OK'

It does what the graph cannot: reads the image, streams images above :data:`TILE_ABOVE_PIXELS` through the
graph in overlapping tiles, applies ``min_region`` (connected regions, :func:`pointseg.postprocess.
remove_small_regions`, which needs scipy — only for models that set it) and computes the summary row and the
OK/NG decision with the very functions ``pointseg predict`` uses (:func:`pointseg.outputs.summarize`,
:func:`pointseg.decision.decide_labels`), so the numbers are the same.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointseg.decision import NGRule, decide_labels
from pointseg.engines import RUNTIME_PREFERENCE, runtime_installed

#: runtimes for the whole graph by preference: onnxruntime ran it faster than OpenVINO here (BENCHMARKS.md,
#: "Engines and deployment"), while OpenVINO is the faster for the backbone alone (RUNTIME_PREFERENCE)
GRAPH_PREFERENCE = ("onnxruntime", "openvino")
from pointseg.engines.sessions import open_session
from pointseg.errors import ImageError, PointsegError
from pointseg.outputs import summarize

META_PREFIX = "pointseg."
#: images above this many pixels run through the graph in tiles (bounded memory)
TILE_ABOVE_PIXELS = 16_000_000
#: tile core size and overlap for huge images: the overlap covers the trunk's receptive field except the
#: stride-32 context, whose far reach makes seams differ slightly from a whole-image pass (docs/deploy.md)
TILE_CORE, TILE_MARGIN = 2048, 256


@dataclass
class RunResult:
    labels: np.ndarray  # H x W uint8, min_region applied
    probabilities: np.ndarray | None  # K x H x W float32, when asked for
    timings: dict = field(default_factory=dict)  # milliseconds per step


def read_graph_metadata(path: str | os.PathLike) -> dict:
    """The ``pointseg.*`` metadata of an exported graph (classes, colours, NG rule, ...)."""
    path = Path(path)
    if not path.is_file():
        raise PointsegError(f"model graph not found: {path}; export one with `pointseg export MODEL -o {path.name}`")
    raw: dict = {}
    try:
        if runtime_installed("onnx"):
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            raw = {p.key: p.value for p in model.metadata_props}
        elif runtime_installed("onnxruntime"):
            import onnxruntime as ort

            raw = dict(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                       .get_modelmeta().custom_metadata_map)
    except Exception as exc:  # a damaged or foreign file: one clear line
        raise PointsegError(f"{path.name} is not a readable ONNX file ({type(exc).__name__})") from None
    meta = {k[len(META_PREFIX):]: json.loads(v) for k, v in raw.items() if k.startswith(META_PREFIX)}
    if "classes" not in meta:
        raise PointsegError(f"{path.name} is not a graph exported by `pointseg export` (no pointseg metadata)")
    return meta


def load_rgb(image) -> np.ndarray:
    """A path, bytes or array → ``H x W x 3`` uint8 (grey and RGBA converted), with Pillow only."""
    if isinstance(image, np.ndarray):
        rgb = image
    else:
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            source = io.BytesIO(image) if isinstance(image, (bytes, bytearray, memoryview)) else image
            with Image.open(source) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot read the image ({exc}); send a PNG, JPEG, BMP or TIFF") from None
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ImageError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ImageError(f"expected 8-bit pixels, got {rgb.dtype}; convert the image to 8-bit RGB")
    return np.ascontiguousarray(rgb[:, :, :3])


class Runner:
    """An exported model on a runtime engine: ``predict`` → labels (+ probabilities), ``summary`` → the row.

    Parameters
    ----------
    path : the ``.onnx`` file from ``pointseg export``.
    engine : ``"openvino"``, ``"onnxruntime"`` or ``"auto"`` (onnxruntime if installed, else OpenVINO:
        :data:`GRAPH_PREFERENCE`).
    precision : ``"fp32"`` (default: what the export check verified) or ``"bf16"`` (OpenVINO only).
    threads : CPU threads for the runtime (default: all).
    """

    def __init__(self, path: str | os.PathLike, engine: str = "auto", precision: str = "fp32",
                 threads: int | None = None):
        self.path = Path(path)
        self.metadata = read_graph_metadata(self.path)
        if engine == "auto":
            engine = next((e for e in GRAPH_PREFERENCE if runtime_installed(e)), None)
            if engine is None:
                raise PointsegError("no ONNX runtime installed; `pip install onnxruntime` (or openvino)")
        elif engine not in RUNTIME_PREFERENCE:
            raise PointsegError(f"the runner uses openvino or onnxruntime, not {engine!r}")
        elif not runtime_installed(engine):
            raise PointsegError(f"{engine} is not installed; `pip install {engine}` or choose the other runtime")
        self.engine, self.precision = engine, precision
        self.session = open_session(self.path, engine, precision, threads)
        self.classes: list[str] = list(self.metadata["classes"])
        self.colors: list[str] = list(self.metadata["colors"])
        self.background: int = int(self.metadata.get("background_class", 0))
        self.min_region: int = int(self.metadata.get("min_region", 0))
        raw_rule = self.metadata.get("ng_rule")
        self.rule = NGRule.from_dict(raw_rule) if raw_rule else NGRule()
        if self.rule.score == "anomaly":   # export refuses these; a graph that says so anyway is refused too
            raise PointsegError(f"{self.path}: the OK/NG rule uses the anomaly score, which this graph cannot "
                                "compute; re-export a model trained with the largest_region rule")
        #: the model's area rule (the app's NG setting), applied by :meth:`summary` unless told otherwise
        self.ng_area: float | None = self.metadata.get("ng_area")

    def _graph(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba, labels = self.session.run({"images": batch})
        return proba, labels

    def predict(self, image, probabilities: bool = False) -> RunResult:
        """Labels (and probabilities) of one image: path, bytes or ``H x W x 3`` uint8 array."""
        t0 = time.perf_counter()
        rgb = load_rgb(image)
        self._check_size(rgb)
        t1 = time.perf_counter()
        if rgb.shape[0] * rgb.shape[1] > TILE_ABOVE_PIXELS:
            proba, labels = self._tiled(rgb, probabilities)
        else:
            p, lab = self._graph(rgb[None])
            proba, labels = (p[0] if probabilities else None), lab[0]
        t2 = time.perf_counter()
        labels = self._clean(labels)
        t3 = time.perf_counter()
        return RunResult(labels, proba, {"decode_ms": (t1 - t0) * 1e3, "graph_ms": (t2 - t1) * 1e3,
                                         "min_region_ms": (t3 - t2) * 1e3})

    def predict_batch(self, images: list, probabilities: bool = False) -> list[RunResult]:
        """Several images; those of equal size go through the graph as one batch (better throughput)."""
        rgbs = [load_rgb(im) for im in images]
        out: list[RunResult | None] = [None] * len(rgbs)
        groups: dict = {}
        for i, rgb in enumerate(rgbs):
            self._check_size(rgb)
            key = rgb.shape if rgb.shape[0] * rgb.shape[1] <= TILE_ABOVE_PIXELS else ("single", i)
            groups.setdefault(key, []).append(i)
        for key, idx in groups.items():
            if key[0] == "single":
                out[idx[0]] = self.predict(rgbs[idx[0]], probabilities)
                continue
            t0 = time.perf_counter()
            proba, labels = self._graph(np.stack([rgbs[i] for i in idx]))
            ms = (time.perf_counter() - t0) * 1e3 / len(idx)
            for j, i in enumerate(idx):
                out[i] = RunResult(self._clean(labels[j]), proba[j] if probabilities else None,
                                   {"graph_ms": ms, "batch": len(idx)})
        return out  # type: ignore[return-value]

    def _check_size(self, rgb: np.ndarray) -> None:
        side = int(self.metadata.get("min_image_side", 17))
        if min(rgb.shape[:2]) < side:
            raise ImageError(f"image is {rgb.shape[1]} x {rgb.shape[0]} px; the model needs at least {side} px per side")

    def _tiled(self, rgb: np.ndarray, probabilities: bool):
        h, w = rgb.shape[:2]
        labels = np.empty((h, w), np.uint8)
        proba = np.empty((len(self.classes), h, w), np.float32) if probabilities else None
        for y0 in range(0, h, TILE_CORE):
            for x0 in range(0, w, TILE_CORE):
                y1, x1 = min(h, y0 + TILE_CORE), min(w, x0 + TILE_CORE)
                a0, a1 = max(0, y0 - TILE_MARGIN), min(h, y1 + TILE_MARGIN)
                b0, b1 = max(0, x0 - TILE_MARGIN), min(w, x1 + TILE_MARGIN)
                p, lab = self._graph(np.ascontiguousarray(rgb[a0:a1, b0:b1])[None])
                labels[y0:y1, x0:x1] = lab[0, y0 - a0: y1 - a0, x0 - b0: x1 - b0]
                if proba is not None:
                    proba[:, y0:y1, x0:x1] = p[0, :, y0 - a0: y1 - a0, x0 - b0: x1 - b0]
        return proba, labels

    def _clean(self, labels: np.ndarray) -> np.ndarray:
        if self.min_region <= 1:
            return labels
        from pointseg.postprocess import remove_small_regions  # scipy, only for models with min_region

        return remove_small_regions(labels, self.min_region).astype(np.uint8)

    def decide(self, result: RunResult, rule: NGRule | None = None):
        """The OK/NG decision (:class:`pointseg.decision.Decision`) with the model's rule or ``rule``."""
        rule = rule or self.rule
        if rule.score == "quantile" and result.probabilities is None:
            raise PointsegError("the model's NG rule scores probabilities; call predict(..., probabilities=True)")
        return decide_labels(result.labels.astype(np.int64), result.probabilities, rule, self.background)

    def summary(self, result: RunResult, ng_area: float | None = None, rule: NGRule | None = None) -> dict:
        """The row ``pointseg predict`` writes to summary.csv for this image (without name and size); its
        ``status`` follows ``ng_area``, else ``rule``, else the model's area rule, else its NG rule."""
        if ng_area is None and rule is None:
            ng_area = self.ng_area
        decision = self.decide(result, rule)
        return summarize(result.labels.astype(np.int64), self.classes, ng_area, self.background, decision)

    @property
    def needs_probabilities(self) -> bool:
        return self.rule.score == "quantile"

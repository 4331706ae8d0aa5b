"""The per-image task: the same plain function runs in-process or on a Dask worker.

It reads the input itself (the client never holds pixels), predicts, writes every output atomically and
returns a small dict: the summary measurements, the outputs written, the input's fingerprint. Images above
the tiling threshold come back as a *plan* instead, and the engine turns them into tile tasks
(:mod:`pointseg.batch.tiled`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from pointseg import lazyio
from pointseg.batch.inputs import InputItem
from pointseg.batch.manifest import fingerprint as input_fingerprint
from pointseg.batch.models import ModelKey, model_for
from pointseg.errors import PointsegError

#: lazily readable images (zarr, OME-Zarr, TIFF) above this many pixels are predicted as tile tasks
DEFAULT_TILE_ABOVE_PIXELS = 16_000_000


@dataclass(frozen=True)
class BatchOptions:
    """What a batch writes; everything here except ``tile_above_pixels`` changes outputs and goes into the
    manifest, so ``--resume`` redoes images predicted with other options."""

    overlay: bool = False
    probabilities: str | None = None  # "npy" or "tiff"
    ng_area: float | None = None
    ng_rule: str | None = None  # "SCORE:THRESHOLD" or "any"; None: the model's learned rule
    channels: tuple[int, ...] | None = None
    tile_above_pixels: int = DEFAULT_TILE_ABOVE_PIXELS
    #: None: the library path with its backbone on the fastest installed engine; "torch": all PyTorch;
    #: "onnxruntime" / "openvino": the model exported to one ONNX graph (pointseg.deploy)
    engine: str | None = None

    def __post_init__(self):
        if self.engine not in (None, "torch", "onnxruntime", "openvino"):
            raise PointsegError(f"unknown --engine {self.engine!r}; choose one of: torch, onnxruntime, openvino")
        if self.probabilities not in (None, "npy", "tiff"):
            raise PointsegError(f"probabilities go to 'npy' or 'tiff' files, not {self.probabilities!r}")
        if self.ng_area is not None and not 0.0 <= self.ng_area <= 1.0:
            raise PointsegError(f"--ng-area must be a fraction between 0 and 1, got {self.ng_area}")
        if self.ng_rule is not None:
            parse_ng_rule(self.ng_rule)  # a bad rule is a user error before any work
        if self.tile_above_pixels < 1:
            raise PointsegError(f"the tiling threshold must be a positive number of pixels, got {self.tile_above_pixels}")

    def for_manifest(self) -> dict:
        data = asdict(self)
        data.pop("tile_above_pixels")
        data["channels"] = list(self.channels) if self.channels is not None else None
        return data


def parse_ng_rule(text: str):
    from pointseg.decision import NGRule

    if text.strip().lower() == "any":
        return NGRule("largest_region", 0.0, source="user: NG when any region is found")
    return NGRule.parse(text)


def ng_rule_for(seg, options: BatchOptions):
    """The OK/NG rule of a batch: ``--ng-rule`` when given, else the one learned with the model."""
    from pointseg.decision import NGRule

    if options.ng_rule is not None:
        return parse_ng_rule(options.ng_rule)
    return getattr(seg, "ng_rule_", None) or NGRule(source="default: NG when any region is found")


def anomaly_for(seg, rule, image) -> float | None:
    """The image's anomaly score when ``rule`` needs it: the library path computes it from the backbone's
    features (cached by the prediction); an exported graph has no features to compute it from."""
    if rule.score != "anomaly":
        return None
    if not hasattr(seg, "anomaly_score"):
        raise PointsegError("this model decides OK/NG with the anomaly score, which needs the backbone's "
                            "features: the exported graph gives labels and probabilities only; drop --engine "
                            "onnxruntime/openvino, or give --ng-rule largest_region:AREA")
    return seg.anomaly_score(image)


def ng_area_for(seg, options: BatchOptions) -> float | None:
    """The area rule of a batch: ``--ng-area`` when given; else the model's own (``ng_area_``, the app's NG
    setting recorded in the model file) unless ``--ng-rule`` asks for another rule."""
    if options.ng_area is not None or options.ng_rule is not None:
        return options.ng_area
    return getattr(seg, "ng_area_", None)


def predict_image(key: ModelKey, item: InputItem, output: str, options: BatchOptions, *, seg=None,
                  reader=None) -> dict:
    """Predict one image and write its outputs; errors in the input come back as ``{"error": ...}``.

    ``seg``: the model when the caller has it (in-process), else this process's loaded one for ``key``.
    ``reader(item)``: ``{"image", "fingerprint"}`` from the caller instead of reading ``item.location``.
    """
    start = time.perf_counter()
    try:
        seg = seg if seg is not None else model_for(key)
        found = reader(item) if reader is not None else _read_input(item.location, options)
        if "plan" in found:
            from pointseg.batch.tiled import plan_tiles

            if not hasattr(seg, "extractor"):
                raise PointsegError(f"{item.name} is predicted in tiles, which runs on the library path; "
                                    "drop --engine onnxruntime/openvino (or raise --tile-above) for it")
            if ng_rule_for(seg, options).score == "anomaly":
                raise PointsegError(f"{item.name} is predicted in tiles, and tiles are not judged with the anomaly "
                                    "score; give --ng-rule largest_region:AREA (or raise --tile-above)")
            plan = plan_tiles(seg, found["plan"], found["fingerprint"], ng_rule_for(seg, options))
            return {"plan": {**plan, "ng_area": ng_area_for(seg, options)}}
        from pointseg.decision import decide_labels
        from pointseg.outputs import summarize

        rule = ng_rule_for(seg, options)
        image = found["image"] if "image" in found else found["rgb"]
        result = seg.predict_full(image, probabilities=options.probabilities is not None or rule.score == "quantile")
        outputs = write_outputs(seg, item, output, options, found.get("rgb"), result)
        background = int(getattr(seg, "background_", 0))
        decision = decide_labels(result.labels, result.probabilities, rule, background,
                                 anomaly=anomaly_for(seg, rule, image))
        height, width = result.labels.shape
        measures = {"height": int(height), "width": int(width),
                    **summarize(result.labels, seg.classes_, ng_area_for(seg, options), background, decision)}
        return {"measures": measures, "outputs": outputs, "fingerprint": found.get("fingerprint", {}),
                "seconds": time.perf_counter() - start}
    except PointsegError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - start}
    except MemoryError:
        return {"error": f"{item.name}: out of memory (use a larger worker, or a zarr/TIFF input to predict it "
                         "in tiles)", "seconds": time.perf_counter() - start}


def _read_input(location: str, options: BatchOptions) -> dict:
    """``{"rgb", "fingerprint"}`` for an image read whole, or ``{"plan": (H, W, dtype), ...}`` for one to tile."""
    lower = location.rstrip("/").lower()
    channels = list(options.channels) if options.channels is not None else None
    if lower.endswith(lazyio.ZARR_SUFFIXES) or (lower.endswith(lazyio.TIFF_SUFFIXES) and _tiff_needs_lazy(
            location, channels, options.tile_above_pixels)):
        lazy = lazyio.open_lazy(location, channels)
        try:
            h, w = lazy.shape
            fingerprint = input_fingerprint(location)
            if h * w > options.tile_above_pixels:
                return {"plan": {"location": location, "shape": (h, w), "dtype": str(lazy.dtype)},
                        "fingerprint": fingerprint}
            from pointseg.imageio import to_rgb8

            return {"rgb": to_rgb8(lazy.read(0, h, 0, w), name=location.rsplit("/", 1)[-1]),
                    "fingerprint": fingerprint}
        finally:
            lazy.close()
    rgb, data = lazyio.read_whole(location)
    return {"rgb": rgb, "fingerprint": input_fingerprint(location, data)}


def _tiff_needs_lazy(location: str, channels, threshold: int) -> bool:
    if channels is not None:
        return True
    h, w = lazyio.image_size(location)
    return h * w > threshold


def write_outputs(seg, item: InputItem, output: str, options: BatchOptions, rgb, result) -> list[str]:
    """Label PNG (+ overlay, probabilities) of one image, each written atomically; names relative to OUT."""
    from pointseg.outputs import label_png_bytes, overlay_png_bytes, probabilities_bytes

    files = {f"{item.stem}.png": lambda: label_png_bytes(result.labels, seg.colors_)}
    if options.overlay and rgb is None:  # a reader gave features, not pixels
        rgb = lazyio.read_whole(item.location)[0]
    if options.overlay:
        files[f"{item.stem}_overlay.png"] = lambda: overlay_png_bytes(rgb, result.labels, seg.colors_)
    if options.probabilities is not None:
        suffix = ".npy" if options.probabilities == "npy" else ".tif"
        files[f"{item.stem}_proba{suffix}"] = lambda: probabilities_bytes(result.probabilities, suffix)
    for name, encode in files.items():
        lazyio.write_bytes(lazyio.join(output, name), encode())
    return list(files)

"""The ``.pointseg`` model file: safetensors tensors plus JSON metadata, never pickle.

A model file is shared between colleagues and machines, so loading it must not execute code, and it must
refuse to run on backbone weights other than the ones it was trained with (the numbers would be silently
meaningless). Tensors: ``coef`` (K x C, on standardised features), ``intercept`` (K), ``mean`` and ``scale`` (C).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pointseg._version import __version__
from pointseg.annotations import atomic_write_bytes
from pointseg.classifier import LinearHead, Standardizer, TrainingReport
from pointseg.errors import ModelFileError, PointsegError
from pointseg.features import filter_bank_version

FORMAT = "pointseg-model"
FORMAT_VERSION = 1


def save_model(seg, path: str | os.PathLike) -> None:
    from safetensors.numpy import save

    if not isinstance(seg.head_, LinearHead):
        raise PointsegError(
            f"only logistic-regression models can be saved; this one uses {seg.classifier!r} "
            "(train with classifier='logistic' to get a model file)"
        )
    ext = seg.extractor
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pointseg_version": __version__,
        "backbone": ext.backbone,
        "weights_sha256": ext.weights_sha256,
        "feature_precision": ext.precision,
        "preprocessing": {
            "input_scale": ext.spec.input_scale,
            "mean": list(ext.spec.mean),
            "std": list(ext.spec.std),
            "pad_multiple": ext.spec.pad_multiple,
            "stride": ext.spec.stride,
            "preprocessing_version": _preprocessing_version(),
        },
        "classes": seg.classes_,
        "colors": seg.colors_,
        "features": ext.features,
        "feature_channels": {"deep": ext.channels, "fine": ext.fine_channels},
        "filter_bank_version": filter_bank_version() if ext.hybrid else None,
        "params": {"classifier": seg.classifier, "C": seg.C, "class_weight": seg.class_weight,
                   "tile_size": seg.tile_size, "smoothing": seg.smoothing_,
                   "prior_correction": seg.prior_correction, "min_region": int(seg.min_region or 0)},
        "training_report": seg.training_report_.as_dict() if hasattr(seg, "training_report_") else None,
    }
    head = seg.head_
    tensors = {
        "coef": np.ascontiguousarray(head.coef, dtype=np.float32),
        "intercept": np.ascontiguousarray(head.intercept, dtype=np.float32),
        "mean": np.ascontiguousarray(head.standardizer.mean, dtype=np.float32),
        "scale": np.ascontiguousarray(head.standardizer.scale, dtype=np.float32),
    }
    atomic_write_bytes(Path(path), save(tensors, metadata={"pointseg": json.dumps(meta)}))


def _preprocessing_version() -> int:
    from pointseg.features import PREPROCESSING_VERSION

    return PREPROCESSING_VERSION


def read_metadata(path: str | os.PathLike) -> tuple[dict, dict]:
    """Return ``(metadata, tensors)`` or raise :class:`ModelFileError` with what is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("pointseg", "null"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, Exception) as exc:
        raise ModelFileError(f"{path.name} is not a pointseg model file ({type(exc).__name__}); train one with `pointseg train`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path.name} is a safetensors file but not a pointseg model; train one with `pointseg train`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path.name} has model format {meta.get('format_version')}, this pointseg {__version__} reads "
            f"{FORMAT_VERSION}; upgrade pointseg or retrain the model"
        )
    missing = {"coef", "intercept", "mean", "scale"} - set(tensors)
    if missing:
        raise ModelFileError(f"{path.name} lacks tensors {sorted(missing)}; the file is damaged, retrain the model")
    return meta, tensors


def load_model(cls, path, weights=None, cache=None, device=None, precision=None):
    meta, tensors = read_metadata(path)
    params = meta.get("params", {})
    head = LinearHead(tensors["coef"], tensors["intercept"], Standardizer(tensors["mean"], tensors["scale"]))
    report = TrainingReport(**meta["training_report"]) if meta.get("training_report") else None
    seg = cls.from_fitted(
        head, meta["classes"], meta["colors"], training_report=report, model_metadata=meta,
        backbone=meta["backbone"], weights=weights,
        classifier="logistic", C=params.get("C"), class_weight=params.get("class_weight"),
        precision=precision or meta.get("feature_precision", "auto"), device=device,
        tile_size=params.get("tile_size", 1024), cache=cache, features=meta.get("features", "deep"),
        smoothing=params.get("smoothing", 0.0), prior_correction=params.get("prior_correction", 0.0),
        min_region=params.get("min_region", 0),
    )
    if meta.get("features") == "hybrid":
        # files written before the bank was versioned carry no number: they used version 1
        trained_with = meta.get("filter_bank_version") or 1
        if trained_with != filter_bank_version():
            raise ModelFileError(
                f"{Path(path).name} was trained on version {trained_with} of the low-level filter bank, this "
                f"pointseg {__version__} computes version {filter_bank_version()}; retrain the model from its "
                "annotations (`pointseg train`, or open the project in `pointseg serve`)"
            )
    ext = seg.extractor  # resolves the weights: a clear error if they are not available
    if ext.weights_sha256 != meta["weights_sha256"]:
        raise ModelFileError(
            f"{Path(path).name} was trained with other {meta['backbone']} weights (sha256 {meta['weights_sha256'][:12]}…) "
            f"than those found at {ext.weights_source.path} (sha256 {ext.weights_sha256[:12]}…); "
            "pass --weights with the file the model was trained with"
        )
    coef = tensors["coef"]
    expected = (len(meta["classes"]), ext.n_features)
    if coef.shape != expected:
        raise ModelFileError(
            f"{Path(path).name}: coefficients have shape {coef.shape}, expected {expected} for "
            f"{meta['backbone']} with {ext.features} features; the file is damaged"
        )
    return seg

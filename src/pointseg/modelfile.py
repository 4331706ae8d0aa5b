"""The ``.pointseg`` model file: safetensors tensors plus JSON metadata, never pickle.

A model file is shared between colleagues and machines, so loading it must not execute code, and it must
refuse to run on backbone weights other than the ones it was trained with (the numbers would be silently
meaningless). Tensors: ``coef`` (K x C, on standardised features), ``intercept`` (K), ``mean`` and ``scale`` (C).
An auto-context model (``"head": "autocontext"``, :mod:`pointseg.autocontext`) adds its second stage:
``stage2_coef`` (K x (C + C_ctx)), ``stage2_intercept`` (K), ``stage2_mean`` and ``stage2_scale`` (C + C_ctx).

Every file is checked before it is used, because a damaged model does not crash: it labels every pixel
wrong. ``format_version`` 2 files carry a ``checksum`` (sha256 over the tensors and the canonical JSON of
the rest of the metadata), verified first; then every metadata field is checked against :data:`FIELDS`
(type, range, finiteness) and the tensors against the metadata. Each problem is one
:class:`~pointseg.errors.ModelFileError` line naming the field and the fix.

Compatibility:

- ``format_version`` 3 is written only for auto-context models (a reader that ignored the second stage would
  label pixels differently, so older pointseg must refuse them); linear models are still written as 2.
- ``format_version`` 1 files (before the checksum) are still read: they have no checksum to verify, every
  field is validated all the same, and fields that early files lacked take their old defaults.
- Top-level or ``params`` / ``training_report`` keys this version does not know (written by a newer
  pointseg) are ignored and kept in ``Segmenter.model_metadata_``: adding an optional field never breaks
  older readers. A change that older readers must not ignore bumps :data:`FORMAT_VERSION`; they then refuse
  the file with "upgrade pointseg".
- Adding a field is one :class:`Field` entry in :data:`FIELDS` (``required=None``: optional, with a
  ``default`` for files written before it existed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, fields as dataclass_fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pointseg._version import __version__
from pointseg.fileio import atomic_write_bytes
from pointseg.classifier import LinearHead, Standardizer, TrainingReport
from pointseg.errors import ModelFileError, PointsegError
from pointseg.features import filter_bank_version
from pointseg.limits import MAX_MODEL_FILE_BYTES, read_bounded

FORMAT = "pointseg-model"
FORMAT_VERSION = 3
#: versions this pointseg reads; 1 = before the checksum, 3 = the auto-context head
READABLE_VERSIONS = (1, 2, 3)
#: the version a linear model is written as (readable by every pointseg since the checksum)
LINEAR_FORMAT_VERSION = 2
CHECKSUM_KEY = "checksum"
TENSORS = ("coef", "intercept", "mean", "scale")
STAGE2_TENSORS = ("stage2_coef", "stage2_intercept", "stage2_mean", "stage2_scale")
HEADS = ("linear", "autocontext")
#: the anomaly bank's tensors (when ``anomaly_bank`` is set), by AnomalyBank field
ANOMALY_TENSORS = {"vectors": "anomaly_vectors", "mean": "anomaly_mean", "scale": "anomaly_scale",
                   "projection": "anomaly_projection"}

RETRAIN = "retrain the model with `pointseg train` (or from its project in `pointseg serve`)"
DAMAGED = f"the file is damaged or was edited by hand; copy it again or {RETRAIN}"


# ------------------------------------------------------------------------------------------ writing
def save_model(seg, path: str | os.PathLike) -> None:
    from safetensors.numpy import save

    from pointseg.autocontext import AUTOCONTEXT_VERSION, AutoContextHead

    autocontext = isinstance(seg.head_, AutoContextHead)
    if not isinstance(seg.head_, LinearHead) and not autocontext:
        raise PointsegError(
            f"only logistic-regression models can be saved; this one uses {seg.classifier!r} "
            "(train with classifier='logistic' to get a model file)"
        )
    ext = seg.extractor
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if autocontext else LINEAR_FORMAT_VERSION,
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
            "preprocessing_version": _preprocessing_version(ext.context_upscale),
        },
        "classes": seg.classes_,
        "colors": seg.colors_,
        "features": ext.features,
        "feature_channels": {"deep": ext.channels, "fine": ext.fine_channels},
        "filter_bank_version": filter_bank_version() if ext.hybrid else None,
        "params": {"classifier": seg.classifier, "C": seg.C, "class_weight": seg.class_weight,
                   "tile_size": seg.tile_size, "smoothing": seg.smoothing_,
                   "prior_correction": seg.prior_correction, "min_region": int(seg.min_region or 0),
                   "ng_rule": getattr(seg, "ng_rule", "largest_region"),
                   "context_upscale": int(ext.context_upscale)},
        "training_report": seg.training_report_.as_dict() if hasattr(seg, "training_report_") else None,
    }
    meta.update(_decision_fields(seg))
    if autocontext:
        meta.update(head="autocontext", autocontext_version=AUTOCONTEXT_VERSION)
    head = seg.head_.stage1 if autocontext else seg.head_
    tensors = _head_tensors(head, TENSORS)
    if autocontext:
        tensors.update(_head_tensors(seg.head_.stage2, STAGE2_TENSORS))
    tensors.update(_anomaly_tensors(seg, meta))
    # a model that would label every pixel wrong is refused here too, not only when it is read back
    _validate(meta, tensors, "the model")
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    atomic_write_bytes(Path(path), save(tensors, metadata={"pointseg": json.dumps(meta)}))


def _head_tensors(head: LinearHead, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    values = (head.coef, head.intercept, head.standardizer.mean, head.standardizer.scale)
    return {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, values)}


def _preprocessing_version(context_upscale: int) -> int:
    """The preprocessing version a model's features need: 1 (what every pointseg computes) unless its context
    stage sees an enlarged copy, which readers before version 2 do not know and must refuse."""
    from pointseg.features import PREPROCESSING_VERSION

    return PREPROCESSING_VERSION if context_upscale > 1 else 1


def content_checksum(tensors: dict[str, np.ndarray], meta: dict) -> str:
    """``"sha256:<hex>"`` over every tensor (name, dtype, shape, little-endian bytes) and the canonical JSON
    (sorted keys, no spaces) of the metadata without its checksum: any changed byte that matters changes it,
    while re-serialising the same metadata (key order, whitespace) does not."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}|{array.dtype.kind}{array.dtype.itemsize}|{array.shape}|".encode())
        digest.update(little.tobytes())
    body = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                             allow_nan=False).encode())
    return "sha256:" + digest.hexdigest()


# ------------------------------------------------------------------------------------------ field table
MISSING = object()


@dataclass(frozen=True)
class Field:
    """One metadata entry: where it is (dotted ``path``), what a valid value is, and since when it is required.

    ``check(value)`` returns ``None`` for a valid value or a short phrase saying what was expected
    ("a number >= 0"). ``required`` is the first ``format_version`` whose files must have the field
    (``None``: optional; an absent field then reads as ``default``). ``fix`` replaces the generic advice
    when there is a better one.
    """

    path: str
    check: Callable[[Any], str | None]
    required: int | None = 1
    default: Any = None
    fix: str | None = None


def _describe(value: Any) -> str:
    """A value as the user would recognise it in the file: short JSON for scalars, the kind otherwise."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def is_str(choices: Callable[[], list] | tuple | None = None, pattern: str | None = None):
    def check(value):
        options = choices() if callable(choices) else choices
        if not isinstance(value, str):
            return "a string" if not options else f"one of {', '.join(map(str, options))}"
        if options and value not in options:
            return f"one of {', '.join(map(str, options))}"
        if pattern and not re.fullmatch(pattern, value):
            return f"a string of the form {pattern}"
        return None
    return check


def is_int(minimum: int | None = None, maximum: int | None = None):
    def check(value):
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        if ok:
            return None
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        return "an integer" + (" " + " and ".join(bounds) if bounds else "")
    return check


def is_number(minimum: float | None = None, positive: bool = False, maximum: float | None = None):
    def check(value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (minimum is None or value >= minimum) and (not positive or value > 0)
        ok = ok and (maximum is None or value <= maximum)
        if ok:
            return None
        bounds = ["> 0"] * positive + [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (
            maximum is not None)
        return "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    return check


def optional(check: Callable[[Any], str | None]):
    def allow_none(value):
        problem = None if value is None else check(value)
        return None if problem is None else f"null or {problem}"
    return allow_none


def is_dict(value) -> str | None:
    return None if isinstance(value, dict) else "an object"


def is_list(item: Callable[[Any], str | None], length: int | None = None, min_length: int = 0,
            unique: bool = False):
    def check(value):
        size = f"{length}" if length is not None else f"at least {min_length}"
        expected = f"a list of {size} items, each {_expected(item)}"
        if not isinstance(value, list) or (length is not None and len(value) != length) or len(value) < min_length:
            return expected
        if any(item(v) is not None for v in value):
            return expected
        if unique and len({json.dumps(v) for v in value}) != len(value):
            return expected + ", no repeats"
        return None
    return check


def _expected(check: Callable[[Any], str | None]) -> str:
    """What ``check`` accepts, in words: its answer for a value no check accepts."""
    return check(object()) or "valid"


def _known_backbones() -> list[str]:
    from pointseg.backbones import available_backbones

    return available_backbones()


def _training_report(value) -> str | None:
    """``null`` or an object whose known keys have the right types (unknown keys: a newer pointseg's, ignored)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "null or an object"
    for name, check in _REPORT_FIELDS.items():
        if name not in value:
            if name == "per_class_accuracy":  # added after the first files
                continue
            return f"an object with {name}"
        problem = check(value[name])
        if problem is not None:
            return f"an object whose {name} is {problem}"
    return None


def _counts(value) -> str | None:
    ok = isinstance(value, dict) and all(is_int(0)(v) is None for v in value.values())
    return None if ok else "an object of class: count"


def _accuracies(value) -> str | None:
    ok = isinstance(value, dict) and all(optional(is_number(0, maximum=1))(v) is None for v in value.values())
    return None if ok else "an object of class: accuracy (0..1 or null)"


_REPORT_FIELDS = {
    "point_accuracy": is_number(0, maximum=1),
    "cv_accuracy": optional(is_number(0, maximum=1)),
    "cv_method": optional(is_str()),
    "points_per_class": _counts,
    "n_points": is_int(0),
    "n_images": is_int(0),
    "fit_seconds": is_number(0),
    "per_class_accuracy": _accuracies,
}

def _ng_rule(value) -> str | None:
    """An object pointseg.decision.NGRule accepts (score, threshold >= 0, source, n_ok, n_ng)."""
    from pointseg.decision import SCORES, NGRule

    expected = f"null or an object with score (one of {', '.join(SCORES)}) and threshold >= 0"
    if not isinstance(value, dict) or isinstance(value.get("threshold"), bool):
        return expected
    try:
        NGRule.from_dict(value)
    except (PointsegError, TypeError):
        return expected
    typed = (optional(is_str())(value.get("source")), is_int(0)(value.get("n_ok", 0)), is_int(0)(value.get("n_ng", 0)))
    return expected + ", source a string, n_ok and n_ng integers >= 0" if any(typed) else None


def _anomaly_bank(value) -> str | None:
    from pointseg.anomaly import BANK_SOURCES

    if not isinstance(value, dict) or value.get("source") not in BANK_SOURCES:
        return f"null or an object with source (one of {', '.join(BANK_SOURCES)})"
    return None


COLOR = r"#[0-9a-fA-F]{6}"
PRECISIONS = ("auto", "fp32", "bf16")

#: every metadata field pointseg reads. ``required=2``: mandatory from format 2 on, defaulted in older files.
FIELDS: list[Field] = [
    Field("format_version", is_int(1)),
    Field("pointseg_version", is_str(), required=2, default="unknown"),
    Field("backbone", is_str(_known_backbones),
          fix="upgrade pointseg (the model needs a backbone this version does not have) or retrain it"),
    Field("weights_sha256", is_str(pattern=r"[0-9a-f]{64}")),
    Field("feature_precision", is_str(PRECISIONS), required=2, default="auto"),
    Field("preprocessing", is_dict, required=2, default={}),
    Field("preprocessing.input_scale", is_number(positive=True), required=2),
    Field("preprocessing.mean", is_list(is_number(), length=3), required=2),
    Field("preprocessing.std", is_list(is_number(positive=True), length=3), required=2),
    Field("preprocessing.pad_multiple", is_int(1), required=2),
    Field("preprocessing.stride", is_int(1), required=2),
    Field("preprocessing.preprocessing_version", is_int(1), required=2, default=1),
    Field("classes", is_list(lambda v: None if isinstance(v, str) and v.strip() else "a non-empty name",
                             min_length=2, unique=True)),
    Field("colors", is_list(is_str(pattern=COLOR))),
    Field("features", is_str(("deep", "hybrid")), required=2, default="deep"),
    Field("feature_channels", is_dict, required=2, default={}),
    Field("feature_channels.deep", is_int(1), required=2),
    Field("feature_channels.fine", is_int(0), required=2, default=0),
    Field("filter_bank_version", optional(is_int(1)), required=None, default=None),
    Field("params", is_dict, required=2, default={}),
    Field("params.classifier", is_str(("logistic",)), required=2, default="logistic"),
    Field("params.C", optional(is_number(positive=True)), required=None, default=None),
    Field("params.class_weight", optional(is_str(("balanced",))), required=None, default="balanced"),
    Field("params.tile_size", is_int(32), required=None, default=1024),
    Field("params.smoothing", is_number(0, maximum=1000), required=None, default=0.0),  # sigma, pixels
    Field("params.prior_correction", is_number(0, maximum=1), required=None, default=0.0),
    Field("params.min_region", is_int(0), required=None, default=0),
    Field("params.ng_rule", is_str(("largest_region", "anomaly")), required=None, default="largest_region"),
    # the fitted context factor (Segmenter.context_upscale_); files before it: 1
    Field("params.context_upscale", lambda v: None if v in (1, 2, 4) and isinstance(v, int) and not isinstance(v, bool)
          else "1, 2 or 4", required=None, default=1),
    Field("training_report", _training_report, required=None, default=None),
    # per-part decisions (pointseg.decision); files without them: background = the first class, and the
    # default rule (NG when any region is found)
    Field("background_class", is_int(0), required=None, default=0),
    Field("ng_rule", lambda value: None if value is None else _ng_rule(value), required=None, default=None),
    # the app's per-project NG setting: NG when findings cover more than this fraction of the image (takes
    # precedence over ng_rule, as --ng-area does); null / absent: the ng_rule decides
    Field("ng_area", optional(is_number(0, maximum=1)), required=None, default=None),
    # the auto-context head (pointseg.autocontext, format 3): absent in linear models
    Field("head", is_str(HEADS), required=None, default="linear"),
    Field("autocontext_version", optional(is_int(1)), required=None, default=None),
    # the anomaly score's memory bank (pointseg.anomaly), stored as the tensors ANOMALY_TENSORS when the
    # model decides with it; null / absent: no bank (older files, and models with the area rule)
    Field("anomaly_bank", lambda value: None if value is None else _anomaly_bank(value), required=None,
          default=None),
]


def _lookup(meta: dict, path: str):
    node: Any = meta
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _assign(meta: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = meta
    for part in parents:
        node = node[part]
    node[last] = value


def _fail(where: str, problem: str, fix: str = DAMAGED) -> ModelFileError:
    return ModelFileError(f"{where}: {problem}; {fix}")


def validate_fields(meta: dict, where: str) -> dict:
    """Check every :data:`FIELDS` entry; return a copy of ``meta`` with absent optional fields defaulted."""
    meta = json.loads(json.dumps(meta))  # a deep copy of plain JSON values
    version = meta.get("format_version")
    for spec in FIELDS:
        value = _lookup(meta, spec.path)
        if value is MISSING:
            if spec.required is not None and isinstance(version, int) and version >= spec.required:
                raise _fail(where, f"{spec.path} is missing", spec.fix or DAMAGED)
            parent = spec.path.rpartition(".")[0]
            has_default = spec.required is None or spec.default is not None
            if has_default and (not parent or isinstance(_lookup(meta, parent), dict)):
                _assign(meta, spec.path, json.loads(json.dumps(spec.default)))
            continue
        problem = spec.check(value)
        if problem is not None:
            raise _fail(where, f"{spec.path} is {_describe(value)}, expected {problem}", spec.fix or DAMAGED)
    return meta


def _check_consistency(meta: dict, where: str) -> None:
    """The checks that relate fields to each other and to this pointseg's feature code."""
    from pointseg.backbones import get_spec
    from pointseg.features import PREPROCESSING_VERSION

    if len(meta["colors"]) != len(meta["classes"]):
        raise _fail(where, f"{len(meta['colors'])} colours for {len(meta['classes'])} classes")
    if meta["background_class"] >= len(meta["classes"]):
        raise _fail(where, f"background_class is {meta['background_class']}, not a class index "
                           f"0..{len(meta['classes']) - 1}")
    pre = meta["preprocessing"]
    trained = pre.get("preprocessing_version", 1)
    if trained not in (1, PREPROCESSING_VERSION):  # 1: version 2 without an enlarged context
        raise _fail(where, f"features were computed with preprocessing version {trained}, this pointseg "
                           f"{__version__} computes version {PREPROCESSING_VERSION}", RETRAIN + " from its annotations")
    spec = get_spec(meta["backbone"])
    expected = {"input_scale": spec.input_scale, "mean": list(spec.mean), "std": list(spec.std),
                "pad_multiple": spec.pad_multiple, "stride": spec.stride}
    for key, want in expected.items():
        got = pre.get(key, want)
        if not np.allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64), rtol=1e-6):
            raise _fail(where, f"preprocessing.{key} is {got}, but {meta['backbone']} normalises with {want}",
                        f"the model was made for another {meta['backbone']} input pipeline; {RETRAIN}")
    if meta["head"] == "autocontext":
        from pointseg.autocontext import AUTOCONTEXT_VERSION

        if meta["format_version"] < 3:
            raise _fail(where, f"head is autocontext in a format {meta['format_version']} file (auto-context "
                               "models are format 3)")
        if meta["autocontext_version"] != AUTOCONTEXT_VERSION:
            raise _fail(where, f"auto-context version {meta['autocontext_version']}, this pointseg {__version__} "
                               f"computes version {AUTOCONTEXT_VERSION}", RETRAIN + " from its annotations")
    if (meta["ng_rule"] or {}).get("score") == "anomaly" and meta["anomaly_bank"] is None:
        raise _fail(where, "ng_rule decides with the anomaly score but the file has no anomaly_bank")
    if meta["features"] == "hybrid":
        # files written before the bank was versioned carry no number: they used version 1
        bank = meta.get("filter_bank_version") or 1
        if bank != filter_bank_version():
            raise _fail(where, f"trained on version {bank} of the low-level filter bank, this pointseg "
                               f"{__version__} computes version {filter_bank_version()}",
                        RETRAIN + " from its annotations")


def _check_tensors(meta: dict, tensors: dict[str, np.ndarray], where: str) -> None:
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise _fail(where, f"lacks the tensors {', '.join(missing)}")
    k = len(meta["classes"])
    coef = tensors["coef"]
    if coef.ndim != 2 or coef.shape[0] != k:
        raise _fail(where, f"coef has shape {coef.shape}, expected ({k}, channels) for {k} classes")
    c = coef.shape[1]
    channels = meta["feature_channels"]
    if "deep" in channels and c != channels["deep"] + channels.get("fine", 0):
        raise _fail(where, f"coef has {c} channels, the metadata says {channels['deep']} deep + "
                           f"{channels.get('fine', 0)} fine")
    for name, shape in (("intercept", (k,)), ("mean", (c,)), ("scale", (c,))):
        if tensors[name].shape != shape:
            raise _fail(where, f"{name} has shape {tensors[name].shape}, expected {shape}")
    for name in TENSORS:
        array = tensors[name]
        if array.dtype.kind != "f":
            raise _fail(where, f"{name} has dtype {array.dtype}, expected floating point")
        if not np.isfinite(array).all():
            raise _fail(where, f"{name} contains NaN or infinite values")
    if (tensors["scale"] <= 0).any():
        raise _fail(where, "scale has zero or negative entries (every pixel would get one class)")
    if meta["head"] == "autocontext":
        _check_stage2(tensors, k, c, where)
    if meta["anomaly_bank"] is not None:
        _stored_bank(meta, tensors, where)


def _check_stage2(tensors: dict[str, np.ndarray], k: int, c: int, where: str) -> None:
    from pointseg.autocontext import n_context_channels

    missing = [name for name in STAGE2_TENSORS if name not in tensors]
    if missing:
        raise _fail(where, f"is an auto-context model but lacks the tensors {', '.join(missing)}")
    c2 = c + n_context_channels(k)
    shapes = {"stage2_coef": (k, c2), "stage2_intercept": (k,), "stage2_mean": (c2,), "stage2_scale": (c2,)}
    for name, shape in shapes.items():
        array = tensors[name]
        if array.shape != shape:
            raise _fail(where, f"{name} has shape {array.shape}, expected {shape}")
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise _fail(where, f"{name} is not finite floating point")
    if (tensors["stage2_scale"] <= 0).any():
        raise _fail(where, "stage2_scale has zero or negative entries")


def _stored_bank(meta: dict, tensors: dict[str, np.ndarray], where: str):
    """The :class:`pointseg.anomaly.AnomalyBank` a file holds (checked: tensors present, shapes agree with
    each other and with the deep channels, finite)."""
    from pointseg.anomaly import AnomalyBank

    missing = [name for name in ANOMALY_TENSORS.values() if name not in tensors]
    if missing:
        raise _fail(where, f"anomaly_bank is set but the tensors {', '.join(missing)} are missing")
    parts = {key: tensors[name] for key, name in ANOMALY_TENSORS.items()}
    if any(a.dtype.kind != "f" for a in parts.values()):
        raise _fail(where, "the anomaly bank's tensors are not floating point")
    try:
        bank = AnomalyBank(**parts, source=meta["anomaly_bank"]["source"])
    except PointsegError as exc:
        raise _fail(where, f"anomaly_bank: {exc}") from None
    deep = meta["feature_channels"].get("deep")
    if deep is not None and bank.n_channels > deep:
        raise _fail(where, f"the anomaly bank has {bank.n_channels} channels, more than the {deep} deep ones")
    return bank


def _validate(meta: dict, tensors: dict[str, np.ndarray], where: str) -> dict:
    meta = validate_fields(meta, where)
    _check_consistency(meta, where)
    _check_tensors(meta, tensors, where)
    return meta


# ------------------------------------------------------------------------------------------ reading
def _parse(data: bytes, name: str) -> tuple[dict, dict]:
    """safetensors bytes → ``(metadata, tensors)``; any damage to the container is one ModelFileError."""
    from safetensors.numpy import load

    not_model = f"{name} is not a pointseg model file"
    if len(data) < 8:
        raise ModelFileError(f"{not_model} (too short); train one with `pointseg train`")
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + header_len])
        raw = header.get("__metadata__", {}).get("pointseg")
        meta = json.loads(raw) if isinstance(raw, str) else None
    except Exception as exc:  # safetensors, JSON, Unicode, RecursionError (deeply nested JSON)...
        raise ModelFileError(f"{not_model} ({type(exc).__name__}); train one with `pointseg train`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{name} is a safetensors file but not a pointseg model; train one with `pointseg train`")
    return meta, tensors


def _check_version(meta: dict, name: str) -> None:
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ModelFileError(
            f"{name} has model format {_describe(version)}, this pointseg {__version__} reads formats "
            f"{', '.join(map(str, READABLE_VERSIONS))}; upgrade pointseg or retrain the model"
        )


def _verify_checksum(meta: dict, tensors: dict, name: str) -> None:
    if meta["format_version"] < 2:
        return  # written before the checksum existed: the field checks below are all there is
    stored = meta.get(CHECKSUM_KEY)
    if not isinstance(stored, str):
        raise _fail(name, "the checksum is missing")
    try:
        actual = content_checksum(tensors, meta)
    except (ValueError, TypeError):  # NaN/inf in the metadata: canonical JSON refuses them
        raise _fail(name, "the metadata holds values that are not valid JSON numbers (NaN or infinity)") from None
    if stored != actual:
        raise _fail(name, "the checksum does not match its contents (the file changed after it was written)")


def read_metadata(path: str | os.PathLike) -> tuple[dict, dict]:
    """Return ``(metadata, tensors)`` of a verified, validated model file, or raise :class:`ModelFileError`.

    Optional fields the file lacks are filled with their defaults (see :data:`FIELDS`).
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file; give the .pointseg file `pointseg train` wrote")
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        data = read_bounded(path, MAX_MODEL_FILE_BYTES, "a model file", ModelFileError)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path.name}: {exc.strerror}") from None
    meta, tensors = _parse(data, path.name)
    _check_version(meta, path.name)
    _verify_checksum(meta, tensors, path.name)
    return _validate(meta, tensors, path.name), tensors


def _stored_report(meta: dict) -> TrainingReport | None:
    """The stored report, keeping the fields this version knows: the report is information, not the model."""
    if not meta["training_report"]:
        return None
    known = {f.name for f in dataclass_fields(TrainingReport)}
    try:
        return TrainingReport(**{k: v for k, v in meta["training_report"].items() if k in known})
    except TypeError:  # written before a report field existed
        return None


def load_model(cls, path, weights=None, cache=None, device=None, precision=None):
    meta, tensors = read_metadata(path)
    name = Path(path).name
    params = meta["params"]
    head = _read_head(tensors, TENSORS)
    autocontext = meta["head"] == "autocontext"
    if autocontext:
        from pointseg.autocontext import AutoContextHead

        head = AutoContextHead(head, _read_head(tensors, STAGE2_TENSORS))
    seg = cls.from_fitted(
        head, meta["classes"], meta["colors"], training_report=_stored_report(meta), model_metadata=meta,
        backbone=meta["backbone"], weights=weights,
        classifier="logistic", C=params["C"], class_weight=params["class_weight"],
        precision=precision or meta["feature_precision"], device=device,
        tile_size=params["tile_size"], cache=cache, features=meta["features"],
        smoothing=params["smoothing"], prior_correction=params["prior_correction"],
        min_region=params["min_region"], autocontext=autocontext, context_upscale=params["context_upscale"],
    )
    ext = seg.extractor  # resolves the weights: a clear error if they are not available
    if ext.weights_sha256 != meta["weights_sha256"]:
        raise ModelFileError(
            f"{name} was trained with other {meta['backbone']} weights (sha256 {meta['weights_sha256'][:12]}…) "
            f"than those found at {ext.weights_source.path} (sha256 {ext.weights_sha256[:12]}…); "
            "pass --weights with the file the model was trained with"
        )
    coef = tensors["coef"]
    expected = (len(meta["classes"]), ext.n_features)
    if coef.shape != expected:
        raise ModelFileError(
            f"{name}: coefficients have shape {coef.shape}, expected {expected} for "
            f"{meta['backbone']} with {ext.features} features; the file is damaged"
        )
    _load_decision_fields(seg, meta, name, tensors)
    return seg


def _read_head(tensors: dict, names: tuple[str, ...]) -> LinearHead:
    coef, intercept, mean, scale = (tensors[name] for name in names)
    return LinearHead(coef, intercept, Standardizer(mean, scale))


# ---------------------------------------------------------------- per-part decision fields (issue 13)
# ``background_class``: index of the background / OK class. ``ng_rule``: the learned OK/NG rule
# (pointseg.decision.NGRule: score, threshold, source, n_ok, n_ng). Files without them predate the fields:
# background = the first class, NG when any region is found. ``ng_area`` (``seg.ng_area_``): an area rule
# chosen by the user (the app's NG setting), which `pointseg predict` and the deploy runner apply unless
# told otherwise.

def _decision_fields(seg) -> dict:
    rule = getattr(seg, "ng_rule_", None)
    ng_area = getattr(seg, "ng_area_", None)
    return {"background_class": int(getattr(seg, "background_", 0)),
            "ng_rule": rule.as_dict() if rule is not None else None,
            "ng_area": None if ng_area is None else float(ng_area)}


def _anomaly_tensors(seg, meta: dict) -> dict:
    """The bank's tensors, and its metadata entry, for a model that decides with the anomaly score (the area
    rule does not need the 4 MB bank, so its files stay as small as before)."""
    bank = getattr(seg, "anomaly_bank_", None)
    rule = getattr(seg, "ng_rule_", None)
    if bank is None or getattr(rule, "score", None) != "anomaly":
        meta["anomaly_bank"] = None
        return {}
    meta["anomaly_bank"] = {"source": bank.source, "n_vectors": bank.n_vectors, "channels": bank.n_channels}
    return {name: np.ascontiguousarray(getattr(bank, key), dtype=np.float32) for key, name in ANOMALY_TENSORS.items()}


def _load_decision_fields(seg, meta: dict, name: str, tensors: dict | None = None) -> None:
    """Set the decision state from fields :data:`FIELDS` has already validated."""
    from pointseg.decision import NGRule

    background = meta["background_class"]
    seg.background, seg.background_ = background, background
    raw = meta["ng_rule"]
    seg.ng_rule_ = NGRule.from_dict(raw) if raw is not None else NGRule(source="default: NG when any region is found")
    seg.ng_area_ = meta["ng_area"]
    seg.ng_rule = meta["params"]["ng_rule"]
    seg.anomaly_bank_ = _stored_bank(meta, tensors, name) if meta["anomaly_bank"] is not None else None

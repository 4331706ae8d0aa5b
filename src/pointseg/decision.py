"""Per-part decisions: an image score, and the OK/NG rule learned from the annotated and OK images.

A pixel classifier that is good at ranking parts can still be a bad inspector: "NG when any defect pixel is
predicted" flags nearly every clean part, because some speck of any clean surface looks like a defect. What an
inspector needs is one number per image (how much defect is there) and a threshold on it chosen so that the
annotated parts come out right *when the model has not seen their clicks* - otherwise the threshold would be
fitted to the very clicks that made the model right on them.

Image scores (:data:`SCORES`):

* ``"largest_region"``: area in pixels of the largest connected (8-connected) region of non-background labels,
  after the segmenter's ``min_region`` clean-up. Inspectors reason in defect sizes; a rule "NG above 300 px"
  reads like a specification.
* ``"quantile"``: the 99.9th percentile of the defect probability (1 - P(background)) over the image: no
  regions needed, but no unit a person can check either.
* ``"anomaly"``: how unlike normal surface the image's most unusual spot is - the largest distance of its
  deep feature cells to their nearest neighbours in a memory bank of the OK images' cells (PatchCore-style,
  :mod:`pointseg.anomaly`). It needs no defect example, so it also sees defect types no click showed; it
  needs the image's features, so only a runner with the backbone can compute it (not an exported graph).

The threshold (:func:`choose_threshold`) is read off leave-one-image-out scores of the annotated images: the
middle of the gap where they separate, the midpoint of the two groups' mean scores where they overlap;
without clean examples it falls back to half the smallest defective score.

>>> rule = NGRule("largest_region", threshold=120.0)
>>> labels = np.zeros((50, 50), np.int64); labels[10:30, 10:30] = 1
>>> d = decide_labels(labels, None, rule, background=0)
>>> d.ng, d.score, len(d.regions)
(True, 400.0, 1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from pointseg.errors import PointsegError

SCORES = ("largest_region", "quantile", "anomaly")
#: scores computed from the labels / probabilities alone (what an exported graph's outputs allow)
LABEL_SCORES = ("largest_region", "quantile")
DEFAULT_SCORE = "largest_region"
#: quantile of the defect probability used by the ``"quantile"`` score
SCORE_QUANTILE = 0.999
#: label/probability scores recorded with leave-one-image-out evidence so rules on them can be compared
#: (:func:`label_scores`): the rule scores plus ``"region_share"`` (largest region / image area: robust to
#: part size), ``"defect_share"`` (all defect pixels / image area) and ``"peak"`` (max defect probability)
EVIDENCE_SCORES = ("largest_region", "quantile", "region_share", "defect_share", "peak")
#: scores that are areas, spread over orders of magnitude: thresholds are placed on log(score + eps)
AREA_EPS = {"largest_region": 1.0, "region_share": 1e-5, "defect_share": 1e-5}



@dataclass
class Region:
    """One connected finding: its class, area in pixels and bounding box ``(x0, y0, x1, y1)`` (exclusive)."""

    label: int
    area: int
    bbox: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {"label": int(self.label), "area": int(self.area), "bbox": [int(v) for v in self.bbox]}


@dataclass
class NGRule:
    """"NG when ``score`` > ``threshold``". ``source`` says where the threshold came from."""

    score: str = DEFAULT_SCORE
    threshold: float = 0.0
    source: str = "default"          # "leave-one-image-out", "fallback: ...", "user", "default"
    n_ok: int = 0                    # annotated images it was chosen from
    n_ng: int = 0

    def __post_init__(self):
        if self.score not in SCORES:
            raise PointsegError(f"unknown image score {self.score!r}; choose one of: {', '.join(SCORES)}")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold) or self.threshold < 0:
            raise PointsegError(f"NG threshold must be a finite number >= 0, got {self.threshold!r}")
        self.threshold = float(self.threshold)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "NGRule":
        if not isinstance(raw, dict):
            raise PointsegError(f"an NG rule is an object with score and threshold, got {raw!r}")
        known = {k: raw[k] for k in ("score", "threshold", "source", "n_ok", "n_ng") if k in raw}
        return cls(**known)

    @classmethod
    def parse(cls, text: str) -> "NGRule":
        """``"largest_region:300"``, ``"quantile:0.9"`` or ``"anomaly:40"`` (the ``--ng-rule`` option)."""
        score, sep, value = str(text).partition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = None
        if not sep or threshold is None:
            raise PointsegError(
                f"--ng-rule {text!r}: write SCORE:THRESHOLD, e.g. largest_region:300 (pixels) or quantile:0.9"
            )
        return cls(score.strip(), threshold, source="user")

    def describe(self) -> str:
        unit = " px" if self.score == "largest_region" else " (feature distance)" if self.score == "anomaly" else ""
        return f"NG when {self.score} > {self.threshold:g}{unit} ({self.source})"


@dataclass
class Decision:
    """The verdict on one image: ``ng``, its ``score`` and the rule's ``threshold``, and the regions found."""

    ng: bool
    score: float
    threshold: float
    regions: list[Region] = field(default_factory=list)
    rule: NGRule | None = None

    @property
    def status(self) -> str:
        return "NG" if self.ng else "OK"

    def as_dict(self) -> dict:
        return {"status": self.status, "score": self.score, "threshold": self.threshold,
                "score_kind": self.rule.score if self.rule else None,
                "regions": [r.as_dict() for r in self.regions]}


def find_regions(labels: np.ndarray, background: int = 0) -> list[Region]:
    """Connected regions (8-connected) of each non-background class, largest first."""
    from pointseg.regions import connected_regions  # numpy only: the torch-free runner decides with this

    out = []
    for k in np.unique(labels):
        if int(k) == background:
            continue
        found = connected_regions(labels == k)
        for area, box in zip(found.area, found.boxes):
            out.append(Region(int(k), int(area), tuple(int(v) for v in box)))
    out.sort(key=lambda r: -r.area)
    return out


def image_score(kind: str, labels: np.ndarray, proba: np.ndarray | None = None, background: int = 0,
                regions: list[Region] | None = None, anomaly: float | None = None) -> float:
    """The image score ``kind`` (see :data:`SCORES`) of one prediction.

    Parameters
    ----------
    labels : ``(H, W)`` class indices (after ``min_region``).
    proba : ``(K, H, W)`` probabilities; needed by ``"quantile"``.
    regions : :func:`find_regions` of ``labels``, when already computed.
    anomaly : the image's anomaly score (:meth:`pointseg.anomaly.AnomalyBank.score`); needed by ``"anomaly"``.
    """
    if kind == "largest_region":
        regions = find_regions(labels, background) if regions is None else regions
        return float(regions[0].area) if regions else 0.0
    if kind in ("region_share", "defect_share", "peak"):
        if kind == "peak" and proba is None:
            raise PointsegError("the 'peak' image score needs probabilities")
        return label_scores(labels, proba, background)[kind]
    if kind == "quantile":
        if proba is None:
            raise PointsegError("the 'quantile' image score needs probabilities")
        defect = 1.0 - proba[background]
        return float(np.quantile(defect, SCORE_QUANTILE))
    if kind == "anomaly":
        if anomaly is None:
            raise PointsegError("the 'anomaly' image score needs the model's anomaly bank and the image's features "
                                "(Segmenter.decide computes it); choose largest_region or quantile here")
        return float(anomaly)
    raise PointsegError(f"unknown image score {kind!r}; choose one of: {', '.join(SCORES)}")


def label_scores(labels: np.ndarray, proba: np.ndarray | None, background: int = 0,
                 avoid: np.ndarray | None = None) -> dict[str, float]:
    """Every :data:`EVIDENCE_SCORES` score of one prediction, in one pass (``proba`` may be None: the
    probability scores are then left out).

    ``avoid`` (``(n, 2)`` [x, y], the defect clicks of an annotated image): score the image as if the
    regions those points fall in were background - what the rest of a defective image shows, the clean
    examples the leave-one-image-out threshold also learns from (:meth:`Segmenter._learn_ng_rule`).

    >>> labels = np.zeros((10, 20), np.int64); labels[0:2, 0:5] = 1; labels[5:9, 10:15] = 1
    >>> s = label_scores(labels, None, avoid=np.array([[11.0, 6.0]]))
    >>> s["largest_region"], s["region_share"], s["defect_share"]
    (10.0, 0.05, 0.05)
    """
    from scipy import ndimage

    h, w = labels.shape
    mask = labels != background
    keep = np.ones(labels.shape, dtype=bool)
    if avoid is not None and len(avoid) and mask.any():
        regions, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        cols = np.clip(np.floor(avoid[:, 0]).astype(np.intp), 0, w - 1)
        rows = np.clip(np.floor(avoid[:, 1]).astype(np.intp), 0, h - 1)
        hit = np.unique(regions[rows, cols])
        hit = hit[hit > 0]
        if len(hit):
            keep = ~np.isin(regions, hit)
            mask = mask & keep
    regions = find_regions(np.where(mask, labels, background), background)
    largest = float(regions[0].area) if regions else 0.0
    out = {"largest_region": largest, "region_share": largest / (h * w), "defect_share": float(mask.sum()) / (h * w)}
    if proba is not None:
        defect = (1.0 - proba[background])[keep]
        out["quantile"] = float(np.quantile(defect, SCORE_QUANTILE)) if defect.size else 0.0
        out["peak"] = float(defect.max()) if defect.size else 0.0
    return out


def decide_labels(labels: np.ndarray, proba: np.ndarray | None, rule: NGRule, background: int = 0,
                  anomaly: float | None = None) -> Decision:
    """Apply ``rule`` to one prediction (``anomaly``: the image's anomaly score, for an ``"anomaly"`` rule)."""
    regions = find_regions(labels, background)
    score = image_score(rule.score, labels, proba, background, regions, anomaly)
    return Decision(bool(score > rule.threshold), score, rule.threshold, regions, rule)


#: how :func:`choose_threshold` places a threshold where the annotated images' scores overlap
OVERLAP_RULES = ("means", "errors")
DEFAULT_OVERLAP = "means"


def choose_threshold(ng_scores, ok_scores, kind: str = DEFAULT_SCORE, overlap: str = DEFAULT_OVERLAP) -> tuple[float, str]:
    """A threshold between the scores of defective (``ng_scores``) and clean (``ok_scores``) images.

    Where the scores separate, the middle of the gap between the largest clean and the smallest defective
    score (on a log scale for areas, whose spread spans orders of magnitude), so no image sits on the
    threshold. Where they overlap, ``overlap="means"`` (the default) takes the midpoint of the two groups'
    mean (log) scores: the threshold that minimises false-alarm rate + miss rate when the two groups'
    scores spread alike around their means. Counting errors instead (``overlap="errors"``: the threshold
    that minimises false alarms + misses *on these images*, the farthest from any score among equals) fits
    itself to a handful of leave-one-image-out scores: on magnetic tiles, where they always overlap, it
    did worse on the held-out parts in every condition (BENCHMARKS.md, "OK/NG per part"). ``"errors"`` is
    also what an oracle threshold on the held-out parts themselves is. Without clean examples: half the
    smallest defective score (clean parts are then judged only by how much smaller their findings are than
    the smallest real defect). Returns ``(threshold, source)``.

    Examples
    --------
    >>> round(choose_threshold([400, 900], [0, 30])[0], 1)   # the gap's middle on log(1 + px): sqrt(31 x 401) - 1
    110.5
    >>> round(choose_threshold(np.expm1([2, 6]), np.expm1([1, 3]))[0], 3)   # overlap: log-means 4 and 2
    19.086
    """
    if overlap not in OVERLAP_RULES:
        raise PointsegError(f"unknown overlap rule {overlap!r}; choose one of: {', '.join(OVERLAP_RULES)}")
    pos = np.sort(np.asarray(ng_scores, dtype=np.float64))
    neg = np.sort(np.asarray(ok_scores, dtype=np.float64))
    if len(pos) == 0:
        if len(neg) == 0:
            return 0.0, "default"
        return float(neg.max()), "fallback: no defective image, above every clean one"
    if len(neg) == 0:
        return float(pos.min()) / 2, "fallback: no OK image, half the smallest defect score"
    eps = AREA_EPS.get(kind)
    warp = (lambda v: np.log(v + eps)) if eps else (lambda v: v)
    unwarp = (lambda v: np.exp(v) - eps) if eps else (lambda v: v)
    if overlap == "means" and neg.max() >= pos.min():
        return max(0.0, float(unwarp((warp(neg).mean() + warp(pos).mean()) / 2))), "leave-one-image-out"
    values = np.unique(np.concatenate([pos, neg]))
    w = warp(values)
    candidates = np.concatenate([[w[0] - 1.0], (w[:-1] + w[1:]) / 2, [w[-1] + 1.0]])
    best, best_key = None, None
    all_w = warp(np.concatenate([pos, neg]))
    for c in candidates:
        t = unwarp(c)
        cost = float((neg > t).mean() + (pos <= t).mean())
        margin = float(np.min(np.abs(all_w - c)))
        key = (round(cost, 12), -margin)
        if best_key is None or key < best_key:
            best, best_key = max(0.0, float(t)), key
    return best, "leave-one-image-out"


def threshold_from_evidence(evidence: dict, kind: str, overlap: str = DEFAULT_OVERLAP) -> tuple[float, str]:
    """:func:`choose_threshold` on leave-one-image-out scores of one kind (``{"ng", "ok", "clean_surface"}``:
    defective images, OK images, and clean-surface examples from the defective images)."""
    return choose_threshold(evidence["ng"], list(evidence["ok"]) + list(evidence["clean_surface"]), kind, overlap)


def auroc(ng_scores, ok_scores) -> float:
    """Area under the ROC curve of an image score (ties count half); NaN without both kinds of image."""
    pos = np.asarray(ng_scores, dtype=np.float64)
    neg = np.asarray(ok_scores, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def part_confusion(ng_scores, ok_scores, threshold: float) -> dict:
    """False alarms (clean parts called NG) and misses (defective parts called OK) at ``threshold``."""
    pos = np.asarray(ng_scores, dtype=np.float64)
    neg = np.asarray(ok_scores, dtype=np.float64)
    fa = int((neg > threshold).sum())
    miss = int((pos <= threshold).sum())
    return {
        "ok_images": int(len(neg)), "ng_images": int(len(pos)),
        "false_alarms": fa, "misses": miss,
        "false_alarm_rate": fa / len(neg) if len(neg) else None,
        "miss_rate": miss / len(pos) if len(pos) else None,
    }


# ---------------------------------------------------------------- which image to annotate next
#: ``"uncertainty"`` / ``"margin"`` look at the prediction only; ``"rare_class"`` weighs each class's predicted
#: share of the image by how few marks it has; ``"diversity"`` is the image's distance in feature space from the
#: annotated images (needs them: ``annotated=``); ``"dense_uncertainty"`` is the uncertainty times how typical
#: the image is of the candidates (information density: pure uncertainty tends to pick outliers);
#: ``"uncertain_diverse"`` is the uncertainty times the diversity (uncertain *and* unlike what is annotated);
#: ``"committee"`` is the disagreement of a bootstrap committee (:func:`fit_committee`: refits on the clicks
#: resampled), ``"committee_diverse"`` that times the diversity. Screened in the folder protocol beside them
#: (BENCHMARKS.md, "Four more rankings"): ``"expected_change"`` (how far one gradient step would move the head
#: if the image's most uncertain pixels were labelled with their runner-up class), ``"committee_dense"`` (the
#: disagreement times how typical the image is of the unannotated ones), ``"committee_coverage"`` (images of a
#: descriptor cluster with no annotated image first, then by disagreement) and ``"committee_defect"`` (the
#: disagreement over the pixels some member calls a defect only).
RANKINGS = ("uncertainty", "margin", "rare_class", "diversity", "dense_uncertainty", "uncertain_diverse",
            "committee", "committee_diverse", "expected_change", "committee_dense", "committee_coverage",
            "committee_defect")
#: rankings whose priorities are comparable between images scored one at a time (the app scores image by image)
PER_IMAGE_RANKINGS = ("uncertainty", "margin", "rare_class")
#: rankings that need the annotated images' points (to fit the committee)
COMMITTEE_RANKINGS = ("committee", "committee_diverse", "committee_dense", "committee_coverage", "committee_defect")
#: what the app's "next image to annotate" uses (chosen by measurement: BENCHMARKS.md, folder protocol)
DEFAULT_RANKING = "committee_coverage"
#: committee size, and the pixels a member predicts per image: larger images are judged on a whole-image
#: preview of about that many, so that scoring an image (four predictions) costs about what the one-model
#: ranking's single full prediction of a 1 MP image did (bench/bench_ranking_cost.py) and a click waiting
#: behind it in the app waits no longer than before
COMMITTEE_MEMBERS = 4
COMMITTEE_PIXELS = 512 * 512
#: ``"expected_change"``: pixels sampled per image (an even grid) and how many of the most uncertain of them
#: are imagined labelled with their runner-up class
CHANGE_GRID_PIXELS = 4096
CHANGE_PIXELS = 64
#: ``"committee_defect"``: the disagreement is averaged over the flagged pixels, but over at least this share
#: of the image, so that a speck of a few flagged pixels cannot outrank an image with a real disputed region
DEFECT_FLOOR = 0.01


def class_rarity(seg) -> np.ndarray:
    """Weight per class, ``1 / (1 + marks of that class)``: classes the user has barely shown count most."""
    report = getattr(seg, "training_report_", None)
    counts = report.points_per_class if report is not None else {}
    names = list(getattr(seg, "classes_", None) or seg.classes or [])
    return np.array([1.0 / (1.0 + float(counts.get(str(n), 0))) for n in names])


def annotation_priority(prediction, kind: str = "uncertainty", rarity: np.ndarray | None = None) -> float:
    """How much annotating an image should help, from the current model's prediction of it
    (a :class:`pointseg.segmenter.Prediction`): ``"uncertainty"`` = mean of 1 - max probability over the
    image; ``"margin"`` = share of pixels whose two most likely classes are within 0.5 of each other (near
    the decision boundary); ``"rare_class"`` = sum over classes of ``rarity[k]`` x the mean probability of
    class k (an image predicted to show much of a class with few marks). The last two need probabilities."""
    if kind == "uncertainty":
        return float(np.mean(prediction.uncertainty))
    if kind not in ("margin", "rare_class"):
        raise PointsegError(f"unknown ranking {kind!r}; choose one of: {', '.join(RANKINGS)}")
    if prediction.probabilities is None:
        raise PointsegError(f"the {kind!r} ranking needs probabilities")
    proba = prediction.probabilities
    if kind == "margin":
        top2 = np.sort(proba, axis=0)[-2:]
        return float(np.mean(top2[1] - top2[0] < 0.5))
    if rarity is None or len(rarity) != proba.shape[0]:
        raise PointsegError("the 'rare_class' ranking needs one rarity weight per class")
    return float(np.dot(rarity, proba.reshape(proba.shape[0], -1).mean(axis=1)))


def image_descriptor(seg, image) -> np.ndarray:
    """Per-channel feature means of an image (its FeatureMap's memoised moments): what the diversity and
    density rankings compare. Depends on the features only, not on the fitted model."""
    fmap = image if hasattr(image, "moments") else seg.extract_features(image)
    return np.asarray(fmap.moments()[0], dtype=np.float64)


def diversity_from_descriptors(candidates: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """Distance of each candidate descriptor from the nearest annotated one, per channel standardised over
    all of them: an image unlike everything annotated so far shows the model something new."""
    cand, seen = np.atleast_2d(candidates), np.atleast_2d(annotated)
    scale = np.concatenate([cand, seen]).std(axis=0) + 1e-6
    d = np.linalg.norm((cand[:, None, :] - seen[None, :, :]) / scale, axis=2)
    return d.min(axis=1)


def diversity_scores(seg, images, annotated) -> list[float]:
    """:func:`diversity_from_descriptors` of images (arrays, paths or FeatureMaps)."""
    cand = np.stack([image_descriptor(seg, im) for im in images])
    seen = np.stack([image_descriptor(seg, im) for im in annotated])
    return [float(v) for v in diversity_from_descriptors(cand, seen)]


def density_scores(seg, images) -> np.ndarray:
    """How typical each image is of ``images``: ``exp(-d / median d)`` averaged over the others, with ``d``
    the standardised distance between feature means (1 for a lone image)."""
    desc = np.stack([image_descriptor(seg, im) for im in images])
    if len(desc) < 2:
        return np.ones(len(desc))
    z = (desc - desc.mean(axis=0)) / (desc.std(axis=0) + 1e-6)
    d = np.linalg.norm(z[:, None, :] - z[None, :, :], axis=2)
    off = ~np.eye(len(d), dtype=bool)
    sim = np.exp(-d / (np.median(d[off]) + 1e-12))
    return (sim * off).sum(axis=1) / off.sum(axis=1)


def fit_committee(seg, annotated, points, scribbles=None, ok=None, members: int = COMMITTEE_MEMBERS,
                  seed: int = 0) -> list:
    """``members`` refits of ``seg`` (clones: the same network and feature cache) on the clicks resampled
    with replacement *within each class* (so every class keeps its count), scribbles and OK images as they
    are. Where they disagree on an image, the clicks so far do not pin its labels down: query by committee,
    the epistemic counterpart of one model's uncertainty (which a confident but wrong model lacks)."""
    rng = np.random.default_rng(seed)
    rows = [np.asarray(p if p is not None else np.zeros((0, 3)), dtype=np.float64).reshape(-1, 3) for p in points]
    where = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)]) if rows else np.zeros(0)
    pts = np.concatenate(rows) if rows else np.zeros((0, 3))
    committee = []
    for _ in range(members):
        pick = np.concatenate([rng.choice(np.flatnonzero(pts[:, 2] == c), size=int((pts[:, 2] == c).sum()))
                               for c in np.unique(pts[:, 2])]) if len(pts) else np.zeros(0, dtype=np.int64)
        boot = [pts[pick[where[pick] == i]] for i in range(len(rows))]
        member = seg.clone(warm_start=False, cross_validate=False)
        committee.append(member.fit(list(annotated), boot, scribbles, ok))
    return committee


def committee_probabilities(committee, image) -> np.ndarray:
    """The members' probabilities ``(members, K, H, W)`` of one image. An image over
    :data:`COMMITTEE_PIXELS` is judged on a whole-image preview of about that many pixels (``predict_region``
    with ``scale < 1``), so scoring costs the same for a 50 MP image as for a 1 MP one."""
    fmap = image if hasattr(image, "image_size") else committee[0].extract_features(image)
    h, w = fmap.image_size
    scale = min(1.0, float(np.sqrt(COMMITTEE_PIXELS / (h * w))))
    box = (0, h, 0, w)
    return np.stack([(m.predict_full(fmap, probabilities=True) if scale == 1.0 else
                      m.predict_region(fmap, box, scale=scale)).probabilities for m in committee])


def committee_disagreement(committee, image) -> float:
    """Mean over the image of the members' variance of each class probability, summed over classes
    (:func:`committee_probabilities`: large images on a preview)."""
    return float(committee_probabilities(committee, image).var(axis=0).sum(axis=0).mean())


def defect_disagreement(committee, image, floor: float = DEFECT_FLOOR) -> float:
    """The committee's disagreement (as :func:`committee_disagreement`) averaged over the pixels that at least
    one member labels a defect (not its ``background_`` class) only, over at least ``floor`` of the image.

    Why: defects are small, and most of a clean surface's disagreement is the members' wavering on which
    shade of background it is - what decides held-out defect IoU is where a defect may or may not be. An
    image nobody finds a defect in scores 0."""
    return flagged_disagreement(committee_probabilities(committee, image),
                                int(getattr(committee[0], "background_", 0)), floor)


def flagged_disagreement(stack: np.ndarray, background: int, floor: float = DEFECT_FLOOR) -> float:
    """:func:`defect_disagreement` of the members' probabilities ``stack`` ``(members, K, H, W)``.

    >>> stack = np.zeros((2, 2, 10, 10)); stack[:, 0] = 1.0          # both members: background everywhere
    >>> stack[0, :, :5, :5] = [[[0.2]], [[0.8]]]                       # one member: a defect in 25 pixels
    >>> round(flagged_disagreement(stack, background=0), 4)           # var 0.16 per class there, 2 classes
    0.32
    """
    flagged = (stack.argmax(axis=1) != background).any(axis=0)
    var = stack.var(axis=0).sum(axis=0)
    return float((var * flagged).sum() / max(float(flagged.sum()), floor * flagged.size, 1.0))


def expected_change(seg, image, grid: int = CHANGE_GRID_PIXELS, pixels: int = CHANGE_PIXELS) -> float:
    """Expected model change (expected gradient length, Settles & Craven 2008): the norm of the gradient of
    the head's cross-entropy, with respect to its weights on the standardised features, if the image's
    ``pixels`` most uncertain pixels (smallest margin between the two best classes, among an even grid of
    about ``grid``) were labelled with their runner-up class - how far one step of a refit would move the
    head, i.e. how much the image would teach it if the model is wrong where it hesitates. Raw per-pixel
    head scores (no smoothing); an auto-context model is judged by its first stage."""
    from pointseg.classifier import LinearHead, head_scores

    head = getattr(seg.head_, "stage1", seg.head_)
    if not isinstance(head, LinearHead):
        raise PointsegError("the 'expected_change' ranking needs a linear head (classifier='logistic')")
    fmap = image if hasattr(image, "image_size") else seg.extract_features(image)
    h, w = fmap.image_size
    step = max(1.0, float(np.sqrt(h * w / grid)))
    ys, xs = np.meshgrid(np.arange(step / 2, h, step), np.arange(step / 2, w, step), indexing="ij")
    X = np.asarray(fmap.sample(np.column_stack([xs.ravel(), ys.ravel()])), dtype=np.float64)
    return float(np.linalg.norm(runner_up_gradient(head_scores(head, X), head.standardizer.transform(X), pixels)))


def runner_up_gradient(logits: np.ndarray, z: np.ndarray, pixels: int = CHANGE_PIXELS) -> np.ndarray:
    """Gradient ``(K, C)`` of the mean softmax cross-entropy with respect to the weights on ``z``
    (``(n, C)``, the standardised features; ``logits`` ``(n, K)``), over the ``pixels`` rows whose two most
    likely classes are closest, each labelled with its runner-up class: ``mean((p - onehot) ⊗ z)``."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(p, axis=1)
    top, second = order[:, -1], order[:, -2]
    rows = np.arange(len(p))
    pick = np.argsort(p[rows, top] - p[rows, second], kind="stable")[:pixels]
    target = np.zeros((len(pick), p.shape[1]))
    target[np.arange(len(pick)), second[pick]] = 1.0
    return (p[pick] - target).T @ z[pick] / len(pick)


def coverage_clusters(candidates: np.ndarray, annotated: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Which candidates lie in a descriptor cluster that holds no annotated image (a boolean per candidate).

    The candidates' and annotated images' descriptors, standardised per channel, are split into ``clusters``
    groups by k-means (deterministic: ``seed``); a group with no annotated image is a kind of image the user
    has not shown the model yet."""
    from sklearn.cluster import KMeans

    cand, seen = np.atleast_2d(candidates), np.atleast_2d(annotated)
    allx = np.concatenate([cand, seen])
    k = int(min(max(1, clusters), len(allx)))
    z = (allx - allx.mean(axis=0)) / (allx.std(axis=0) + 1e-6)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    covered = set(labels[len(cand):].tolist())
    return np.array([lab not in covered for lab in labels[:len(cand)]])


def rank_images_for_annotation(seg, images, kind: str = DEFAULT_RANKING, annotated=None, points=None,
                               scribbles=None, ok=None, clusters: int | None = None) -> list[tuple[int, float]]:
    """Order unannotated ``images`` (arrays, paths or FeatureMaps) by how much annotating them should help
    the fitted Segmenter ``seg``: ``[(index, priority), ...]``, most useful first (ties keep input order).
    ``annotated`` (the images annotated so far) is needed by the diversity- and committee-based kinds, and
    the committee's by ``points`` (one ``[x, y, class]`` array per annotated image; ``scribbles``, ``ok`` as
    :meth:`~pointseg.Segmenter.fit` takes them). ``clusters``: how many descriptor clusters
    ``"committee_coverage"`` covers (the folder protocol passes the images its budget allows; default: one
    more than the annotated images, so at least one cluster is always uncovered).

    The app's "next image to annotate" and the evaluation's folder protocol both call this; the folder
    protocol measures it against a random order (BENCHMARKS.md).

    >>> order = rank_images_for_annotation(seg, fmaps)   # doctest: +SKIP
    >>> next_index = order[0][0]                          # doctest: +SKIP
    """
    if kind not in RANKINGS:
        raise PointsegError(f"unknown ranking {kind!r}; choose one of: {', '.join(RANKINGS)}")
    images = list(images)
    if kind == "diversity":
        if not annotated:
            raise PointsegError("the 'diversity' ranking needs the annotated images (annotated=...)")
        scores = diversity_scores(seg, images, list(annotated))
    elif kind == "uncertain_diverse":
        if not annotated:
            raise PointsegError("the 'uncertain_diverse' ranking needs the annotated images (annotated=...)")
        far = diversity_scores(seg, images, list(annotated))
        scores = [float(np.mean(seg.predict_full(image, probabilities=False).uncertainty)) * d
                  for image, d in zip(images, far)]
    elif kind in COMMITTEE_RANKINGS:
        if not annotated or points is None:
            raise PointsegError(f"the {kind!r} ranking needs the annotated images and their points "
                                "(annotated=..., points=...)")
        committee = fit_committee(seg, list(annotated), list(points), scribbles, ok)
        if kind == "committee_defect":
            scores = [defect_disagreement(committee, image) for image in images]
        else:
            scores = [committee_disagreement(committee, image) for image in images]
        if kind == "committee_diverse":
            scores = [v * d for v, d in zip(scores, diversity_scores(seg, images, list(annotated)))]
        elif kind == "committee_dense":
            scores = [v * float(w) for v, w in zip(scores, density_scores(seg, images))]
        elif kind == "committee_coverage":
            cand = np.stack([image_descriptor(seg, im) for im in images])
            seen = np.stack([image_descriptor(seg, im) for im in annotated])
            fresh = coverage_clusters(cand, seen, clusters if clusters else len(seen) + 1)
            lift = max(scores) + 1.0     # every image of an uncovered cluster ahead of every other
            scores = [v + lift * bool(f) for v, f in zip(scores, fresh)]
    elif kind == "expected_change":
        scores = [expected_change(seg, image) for image in images]
    elif kind == "dense_uncertainty":
        density = density_scores(seg, images)
        scores = [float(np.mean(seg.predict_full(image, probabilities=False).uncertainty)) * float(w)
                  for image, w in zip(images, density)]
    else:
        rarity = class_rarity(seg) if kind == "rare_class" else None
        scores = [annotation_priority(seg.predict_full(image, probabilities=kind != "uncertainty"), kind, rarity)
                  for image in images]
    return sorted(enumerate(scores), key=lambda t: -t[1])

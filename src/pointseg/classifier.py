"""The trainable part: a linear head on standardised features (or a random forest, as an anchor).

Why standardise with statistics over *all* pixels of the training images rather than the clicked points:
with five clicks per class the point statistics are noise, while the image statistics are free and stable
(measured 0.01–0.10 mIoU better at 5 clicks per class). Why balance classes: users click the rare defect as
often as the background, but not always; balancing keeps the decision from tracking click counts.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from pointseg.errors import PointsegError

#: L2 strength of the logistic regression on standardised features. Chosen on the evaluation harness
#: (see BENCHMARKS.md): few points in a few hundred dimensions need firm regularisation.
DEFAULT_C = 0.1

CLASSIFIERS = ("logistic", "random_forest")

#: logit of a class that has no training points: finite (so interpolation never makes NaN from -inf * 0),
#: yet low enough that its probability is exactly 0 after softmax
ABSENT_LOGIT = -1e9


@dataclass
class TrainingReport:
    """What the user sees after each fit (method step 3) plus a cross-validated estimate."""

    point_accuracy: float
    cv_accuracy: float | None
    cv_method: str | None
    points_per_class: dict[str, int]
    n_points: int
    n_images: int
    fit_seconds: float
    per_class_accuracy: dict[str, float | None] = field(default_factory=dict)
    #: per-part confusion of the learned NG rule, leave-one-image-out (when OK images were annotated):
    #: ok_images, ng_images, false_alarms, misses and their rates (see pointseg.decision.part_confusion)
    part_confusion: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        cv = f"{self.cv_accuracy:.1%} ({self.cv_method})" if self.cv_accuracy is not None else "n/a (too few points)"
        counts = ", ".join(f"{k}: {v}" for k, v in self.points_per_class.items())
        return (
            f"accuracy on the marked points {self.point_accuracy:.1%}; cross-validated {cv}; "
            f"{self.n_points} points on {self.n_images} image(s) [{counts}]; fit {self.fit_seconds * 1000:.0f} ms"
        ) + self._parts_summary()

    def _parts_summary(self) -> str:
        pc = self.part_confusion
        if not pc:
            return ""
        return (f"; per part ({pc.get('method', 'leave-one-image-out')}): {pc['false_alarms']} of "
                f"{pc['ok_images']} OK image(s) called NG, {pc['misses']} of {pc['ng_images']} defective missed")


@dataclass
class Standardizer:
    mean: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)

    @classmethod
    def from_moments(cls, moments) -> "Standardizer":
        total = sum(m[0] for m in moments)
        total_sq = sum(m[1] for m in moments)
        count = sum(m[2] for m in moments)
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        scale = np.sqrt(var)
        scale[scale < 1e-6] = 1.0  # dead channels (ReLU that never fires): leave unscaled
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


@dataclass
class LinearHead:
    """Logits = coef · standardise(f) + intercept, for all K classes (absent classes get ABSENT_LOGIT)."""

    coef: np.ndarray  # (K, C) on standardised features
    intercept: np.ndarray  # (K,)
    standardizer: Standardizer

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights and bias on raw features, so prediction is one matrix product."""
        w = (self.coef / self.standardizer.scale[None, :]).astype(np.float32)
        b = (self.intercept - w @ self.standardizer.mean).astype(np.float32)
        return w, b


class PointClassifier:
    """Fits a head on point features ``X (n, C)`` with labels ``y (n,)`` in ``0..K-1``."""

    def __init__(self, kind: str = "logistic", C: float | None = None, class_weight: str | None = "balanced",
                 random_state: int = 0, n_estimators: int = 100):
        if kind not in CLASSIFIERS:
            raise PointsegError(f"unknown classifier {kind!r}; choose one of: {', '.join(CLASSIFIERS)}")
        self.kind = kind
        try:
            self.C = DEFAULT_C if C is None else float(C)
        except (TypeError, ValueError):
            raise PointsegError(f"C must be a positive number, got {C!r}") from None
        if not self.C > 0 or self.C == float("inf"):
            raise PointsegError(f"C must be a positive number, got {self.C}")
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_estimators = n_estimators

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int, standardizer: Standardizer,
            init: LinearHead | None = None):
        present = np.unique(y)
        if len(present) < 2:
            raise PointsegError(
                f"need points of at least two classes to train, got only class {int(present[0]) if len(present) else '-'}; "
                "mark some points of another class"
            )
        Xs = standardizer.transform(X)
        if self.kind == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            model = RandomForestClassifier(
                n_estimators=self.n_estimators, class_weight=self.class_weight, n_jobs=-1,
                random_state=self.random_state, min_samples_leaf=1,
            ).fit(Xs, y)
            return ForestHead(model, n_classes, standardizer)
        coef = np.zeros((n_classes, X.shape[1]), dtype=np.float32)
        intercept = np.full(n_classes, ABSENT_LOGIT, dtype=np.float32)
        start = None
        if init is not None and init.coef.shape == coef.shape:
            start = (init.coef[present], np.where(init.intercept[present] > ABSENT_LOGIT / 2,
                                                  init.intercept[present], 0.0))
        w, b = fit_multinomial_logistic(Xs, y, present, self.C, self.class_weight, init=start)
        coef[present], intercept[present] = w, b
        return LinearHead(coef, intercept, standardizer)


#: up to this many points x classes scikit-learn's lbfgs solves the problem faster than the torch L-BFGS
#: (bench/bench_classifier.py: 2.6-3x at 100-1,000 points with two classes, 1.3-2x with four or eight at 100-300);
#: above it the torch solver is as fast or faster, and scikit-learn's falls far behind from a few thousand points
SKLEARN_MAX_SIZE = 4000

SOLVERS = ("auto", "sklearn", "torch")


def fit_multinomial_logistic(X: np.ndarray, y: np.ndarray, present: np.ndarray, C: float,
                              class_weight: str | None, max_iter: int = 100,
                              init: tuple[np.ndarray, np.ndarray] | None = None,
                              solver: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``C * sum_i w_i * CE(x_i, y_i) + ||W||^2 / 2`` (intercept unpenalised) by full-batch L-BFGS.

    The objective is scikit-learn's multinomial LogisticRegression. Two solvers reach the same optimum, and
    which is faster depends on the size (see :data:`SKLEARN_MAX_SIZE`): scikit-learn's lbfgs for the few
    hundred points of an interactive session, PyTorch's L-BFGS with a strong-Wolfe line search for thousands.
    ``init`` (weights, bias of the present classes) starts from a previous solution: after one more click the
    optimum has barely moved, so a warm start needs a fraction of the iterations.
    """
    if solver not in SOLVERS:
        raise PointsegError(f"unknown solver {solver!r}; choose one of: {', '.join(SOLVERS)}")
    index = {int(c): i for i, c in enumerate(present)}
    target = np.vectorize(index.get)(y).astype(np.int64)
    k = len(present)
    counts = np.bincount(target, minlength=k).astype(np.float64)
    if class_weight == "balanced":
        sample_weight = (len(target) / (k * counts))[target]
    elif class_weight is None:
        sample_weight = np.ones(len(target))
    else:
        raise PointsegError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
    if solver == "sklearn" or (solver == "auto" and len(target) * k <= SKLEARN_MAX_SIZE):
        return _fit_sklearn(X, target, k, C, sample_weight, max_iter, init)
    return _fit_torch(X, target, k, C, sample_weight, max_iter, init)


def _fit_sklearn(X, target, k, C, sample_weight, max_iter, init):
    """scikit-learn's lbfgs on the same objective. With two classes it fits one weight vector ``d`` for the
    logit difference; the symmetric two-vector optimum is ``(-d/2, d/2)``, whose penalty ``||d||^2 / 4`` is
    the binary one with C doubled."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    binary = k == 2
    model = LogisticRegression(C=2 * C if binary else C, max_iter=max_iter, tol=1e-5, warm_start=init is not None)
    if init is not None:
        w0, b0 = np.asarray(init[0], np.float64), np.asarray(init[1], np.float64)
        model.coef_ = (w0[1:] - w0[:1]) if binary else w0.copy()
        model.intercept_ = (b0[1:] - b0[:1]) if binary else b0.copy()
    from threadpoolctl import threadpool_limits

    # one BLAS thread, for the reason single_thread() gives; the best of max_iter steps, like the torch solver
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.asarray(X, dtype=np.float64), target, sample_weight=sample_weight)
    if binary:
        d, c = model.coef_[0], model.intercept_[0]
        return (np.stack([-d / 2, d / 2]).astype(np.float32), np.array([-c / 2, c / 2], dtype=np.float32))
    return model.coef_.astype(np.float32), model.intercept_.astype(np.float32)


def _fit_torch(X, target, k, C, sample_weight, max_iter, init):
    import torch

    target = torch.from_numpy(target)
    feats = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    sample_weight = torch.from_numpy(sample_weight.astype(np.float32))
    if init is not None:
        weight = torch.tensor(init[0], dtype=torch.float32).requires_grad_(True)
        bias = torch.tensor(init[1], dtype=torch.float32).requires_grad_(True)
    else:
        weight = torch.zeros((k, feats.shape[1]), requires_grad=True)
        bias = torch.zeros(k, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = feats @ weight.T + bias
        loss = C * (torch.nn.functional.cross_entropy(logits, target, reduction="none") * sample_weight).sum()
        loss = loss + 0.5 * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), single_thread():
        optimizer.step(closure)
    return weight.detach().numpy().copy(), bias.detach().numpy().copy()


_THREADS_LOCK = threading.Lock()


@contextmanager
def single_thread():
    """Run small PyTorch problems on one thread.

    A fit is hundreds of tiny matrix products; spread over a thread pool they spend their time waiting for
    each other, badly so when the cores are also busy (the app extracts features in the background while
    the user clicks). Measured under load: 3,000 points x 448 features fit in 51 ms on one thread vs 168 ms on two.

    A thread that already runs PyTorch on one thread (the app's model thread sets that once when it starts;
    PyTorch's count is per thread once a thread has used it) passes straight through: no lock, no change.
    """
    import torch

    if torch.get_num_threads() == 1:
        yield
        return
    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def estimate_priors(proba: np.ndarray, train_prior: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Class priors of unlabelled pixels by EM on the model's posteriors (Saerens et al., 2002).

    A model trained with balanced class weights believes every class is equally common; on real images the
    defect is usually rare. Re-weighting the posteriors by ``prior / train_prior`` and re-averaging until the
    two agree gives the priors the model itself implies for the training images.
    """
    prior = train_prior.copy()
    for _ in range(iterations):
        adjusted = proba * (prior / train_prior)[None, :]
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = np.maximum(adjusted.mean(axis=0), 1e-6)
        if np.abs(new - prior).max() < 1e-6:
            prior = new
            break
        prior = new
    return prior / prior.sum()


def correct_priors(head: LinearHead, pixels: np.ndarray, strength: float) -> tuple[LinearHead, np.ndarray]:
    """Shift the intercepts by ``strength * log(prior / train_prior)``; returns the head and the priors.

    ``pixels`` are raw feature vectors sampled uniformly from the training images. ``strength`` 1 is the full
    Bayes correction; a partial one hedges against the EM estimate, which is only as good as the model.
    """
    present = head.intercept > ABSENT_LOGIT / 2
    scores = head_scores(head, pixels)[:, present]
    scores -= scores.max(axis=1, keepdims=True)
    proba = np.exp(scores)
    proba /= proba.sum(axis=1, keepdims=True)
    train_prior = np.full(int(present.sum()), 1.0 / present.sum())
    prior = estimate_priors(proba, train_prior)
    intercept = head.intercept.copy()
    intercept[present] += (strength * np.log(prior / train_prior)).astype(np.float32)
    priors = np.zeros(len(intercept))
    priors[present] = prior
    return LinearHead(head.coef, intercept, head.standardizer), priors


class ForestHead:
    """Random forest on standardised features: the classifier family of ilastik and napari-convpaint."""

    def __init__(self, model, n_classes: int, standardizer: Standardizer):
        self.model = model
        self.n_classes = n_classes
        self.standardizer = standardizer

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Log-probabilities ``(n, K)`` so that softmax after interpolation gives probabilities back."""
        proba = np.zeros((features.shape[0], self.n_classes), dtype=np.float32)
        proba[:, self.model.classes_] = self.model.predict_proba(self.standardizer.transform(features))
        return np.log(proba + 1e-4)


def head_scores(head, features: np.ndarray) -> np.ndarray:
    """Class scores ``(n, K)`` for raw feature rows, for either kind of head."""
    if isinstance(head, LinearHead):
        w, b = head.folded()
        return features @ w.T + b
    return head.scores(features)


class CrossValidationInterrupted(Exception):
    """Raised between folds when the caller's ``should_stop`` says the result is no longer wanted."""


class CrossValidationFinished(Exception):
    """Raised right after the estimate when the caller only wants the estimate (``only_estimate``): the
    rest of the fit (the final head, the NG rule's leave-one-image-out predictions) is skipped."""

    def __init__(self, result: "CrossValidationResult"):
        super().__init__("cross-validation finished")
        self.result = result


@dataclass
class CrossValidationResult:
    """The one cross-validation protocol's outcome: accuracy over ``n_scored`` held-out points."""

    accuracy: float | None
    method: str | None
    n_scored: int = 0
    n_folds: int = 0


def cross_validation_folds(y: np.ndarray, groups: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], str | None]:
    """The protocol's splits as ``(train, test)`` index arrays: leave-one-image-out when the points span
    several images, else stratified k-fold (k = min(5, smallest class count)); ``([], None)`` when too few."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold

    labels, counts = np.unique(y, return_counts=True)
    dummy = np.zeros((len(y), 1))
    if len(np.unique(groups)) >= 2:
        return list(LeaveOneGroupOut().split(dummy, y, groups)), "leave-one-image-out"
    if len(labels) >= 2 and counts.min() >= 2:
        k = int(min(5, counts.min()))
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(dummy, y)), f"{k}-fold"
    return [], None


def score_fold(classifier: PointClassifier, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
               n_classes: int, standardizer: Standardizer) -> int | None:
    """Held-out points of one fold predicted right, or None when the training part lacks a second class."""
    if len(np.unique(y[train])) < 2:
        return None
    head = classifier.fit(X[train], y[train], n_classes, standardizer)
    return int((head_scores(head, X[test]).argmax(axis=1) == y[test]).sum())


_CV_CONTEXT = threading.local()


class CrossValidationContext:
    """What :func:`cross_validation_context` hands out: the caller's stop test and the last result."""

    def __init__(self, should_stop=None, only_estimate: bool = False):
        self.should_stop = should_stop
        self.only_estimate = only_estimate
        self.result: CrossValidationResult | None = None


@contextmanager
def cross_validation_context(should_stop=None, only_estimate: bool = False):
    """Make every :func:`cross_validate` in this thread check ``should_stop()`` between folds (raising
    :class:`CrossValidationInterrupted`) and record its full :class:`CrossValidationResult` (with the
    number of points scored) on the yielded context; with ``only_estimate`` it then raises
    :class:`CrossValidationFinished`, ending the surrounding fit. The app uses this around
    ``Segmenter.fit`` so its estimate is the library's protocol, yet a click never waits for more than
    one fold."""
    ctx = CrossValidationContext(should_stop, only_estimate)
    previous = getattr(_CV_CONTEXT, "ctx", None)
    _CV_CONTEXT.ctx = ctx
    try:
        yield ctx
    finally:
        _CV_CONTEXT.ctx = previous


def check_interrupted() -> None:
    """Raise :class:`CrossValidationInterrupted` when the surrounding :func:`cross_validation_context` asks to
    stop: the other held-out work of a fit (the NG rule's leave-one-image-out predictions) yields to a click
    as the folds do. Outside a context it does nothing."""
    ctx = getattr(_CV_CONTEXT, "ctx", None)
    if ctx is not None and ctx.should_stop is not None and ctx.should_stop():
        raise CrossValidationInterrupted()


def run_cross_validation(classifier: PointClassifier, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                         n_classes: int, standardizer: Standardizer, should_stop=None) -> CrossValidationResult:
    """The protocol fold by fold; ``should_stop()`` is asked before each fold."""
    folds, method = cross_validation_folds(y, groups)
    correct = total = used = 0
    for train, test in folds:
        if should_stop is not None and should_stop():
            raise CrossValidationInterrupted()
        right = score_fold(classifier, X, y, train, test, n_classes, standardizer)
        if right is None:
            continue
        correct, total, used = correct + right, total + len(test), used + 1
    if total == 0:
        return CrossValidationResult(None, None, 0, 0)
    return CrossValidationResult(correct / total, method, total, used)


def cross_validate(classifier: PointClassifier, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                   n_classes: int, standardizer: Standardizer) -> tuple[float | None, str | None]:
    """Leave-one-image-out accuracy when points span several images, else stratified k-fold.

    Returns ``(None, None)`` when there are too few points for an estimate worth showing. Inside
    :func:`cross_validation_context` the run can be interrupted between folds and its result is recorded.
    """
    ctx = getattr(_CV_CONTEXT, "ctx", None)
    result = run_cross_validation(classifier, X, y, groups, n_classes, standardizer,
                                  should_stop=ctx.should_stop if ctx is not None else None)
    if ctx is not None:
        ctx.result = result
        if ctx.only_estimate:
            raise CrossValidationFinished(result)
    return result.accuracy, result.method

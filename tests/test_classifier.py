import numpy as np
import pytest

from pointseg.classifier import (
    ABSENT_LOGIT,
    PointClassifier,
    Standardizer,
    correct_priors,
    estimate_priors,
    fit_multinomial_logistic,
    head_scores,
)
from pointseg.errors import PointsegError


def _mixture(n, prior1, rng):
    y = (rng.random(n) < prior1).astype(int)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[:, 0] += 2.5 * y
    return X, y


@pytest.mark.parametrize("solver", ["torch", "sklearn"])
def test_logistic_matches_scikit_learns_objective(solver):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    w, b = fit_multinomial_logistic(X, y, np.array([0, 1, 2]), C=0.1, class_weight="balanced", solver=solver)
    ref = LogisticRegression(C=0.1, class_weight="balanced", max_iter=1000, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(w, ref.coef_, atol=2e-3)
    assert ((X @ w.T + b).argmax(1) == ref.predict(X)).mean() > 0.99


def test_class_balancing_moves_the_boundary_toward_the_common_class():
    rng = np.random.default_rng(1)
    X, y = _mixture(2000, 0.1, rng)
    rare_balanced = (X @ fit_multinomial_logistic(X, y, np.array([0, 1]), 1.0, "balanced")[0].T).argmax(1).mean()
    rare_plain = (X @ fit_multinomial_logistic(X, y, np.array([0, 1]), 1.0, None)[0].T).argmax(1).mean()
    assert rare_balanced > rare_plain


def test_em_recovers_the_prior_of_a_rare_class():
    rng = np.random.default_rng(2)
    X_train, y_train = _mixture(400, 0.5, rng)  # clicks: both classes equally often
    std = Standardizer(np.zeros(5, np.float32), np.ones(5, np.float32))
    head = PointClassifier(C=1.0).fit(X_train, y_train, 2, std)
    pixels, truth = _mixture(20000, 0.05, rng)  # the image: 5 % defect
    corrected, priors = correct_priors(head, pixels, strength=1.0)
    assert priors[1] == pytest.approx(0.05, abs=0.02)
    before = head_scores(head, pixels).argmax(1)
    after = head_scores(corrected, pixels).argmax(1)
    assert (after == truth).mean() > (before == truth).mean()
    half, _ = correct_priors(head, pixels, strength=0.5)
    shift = head.intercept[1] - head.intercept[0]
    assert shift > half.intercept[1] - half.intercept[0] > corrected.intercept[1] - corrected.intercept[0]


def test_em_leaves_absent_classes_absent():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    prior = estimate_priors(proba, np.array([0.5, 0.5]))
    assert prior.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    X, y = _mixture(200, 0.5, rng)
    std = Standardizer(np.zeros(5, np.float32), np.ones(5, np.float32))
    head = PointClassifier().fit(X, y, 3, std)
    corrected, priors = correct_priors(head, X, 1.0)
    assert corrected.intercept[2] == ABSENT_LOGIT and priors[2] == 0


def test_invalid_settings():
    with pytest.raises(PointsegError, match="unknown classifier"):
        PointClassifier("svm")
    with pytest.raises(PointsegError, match="C must be a positive number"):
        PointClassifier(C=0)
    X = np.zeros((4, 2), np.float32)
    with pytest.raises(PointsegError, match="class_weight"):
        fit_multinomial_logistic(X, np.array([0, 1, 0, 1]), np.array([0, 1]), 1.0, "auto")
    with pytest.raises(PointsegError, match="unknown solver"):
        fit_multinomial_logistic(X, np.array([0, 1, 0, 1]), np.array([0, 1]), 1.0, "balanced", solver="newton")


@pytest.mark.parametrize("solver", ["torch", "sklearn"])
def test_warm_start_reaches_the_same_solution(solver):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 30)).astype(np.float32)
    y = (X[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]])).argmax(1)
    cold = fit_multinomial_logistic(X, y, np.array([0, 1]), 0.1, "balanced", solver=solver)
    start = fit_multinomial_logistic(X[:-5], y[:-5], np.array([0, 1]), 0.1, "balanced", solver=solver)
    warm = fit_multinomial_logistic(X, y, np.array([0, 1]), 0.1, "balanced", init=start, solver=solver)
    np.testing.assert_allclose(warm[0], cold[0], atol=1e-3)
    np.testing.assert_allclose(warm[1], cold[1], atol=1e-3)


@pytest.mark.parametrize("classes", [2, 4])
def test_both_solvers_reach_one_optimum(classes, monkeypatch):
    """Two classes are where the solvers differ most: scikit-learn fits one vector for the logit difference,
    which must come back as the symmetric pair the torch solver finds, with the same penalty."""
    from pointseg import classifier

    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 25)).astype(np.float32)
    y = (X[:, :classes] + 0.8 * rng.normal(size=(500, classes))).argmax(1)
    present = np.arange(classes)
    a = fit_multinomial_logistic(X, y, present, 0.1, "balanced", solver="torch")
    b = fit_multinomial_logistic(X, y, present, 0.1, "balanced", solver="sklearn")
    np.testing.assert_allclose(a[0], b[0], atol=2e-3)
    np.testing.assert_allclose(a[1] - a[1].mean(), b[1] - b[1].mean(), atol=2e-3)
    # the size rule: scikit-learn for an interactive session's few hundred points, torch for thousands
    calls = []
    for name in ("_fit_sklearn", "_fit_torch"):
        original = getattr(classifier, name)
        monkeypatch.setattr(classifier, name, lambda *args, _n=name, _f=original: calls.append(_n) or _f(*args))
    fit_multinomial_logistic(X[:300], y[:300], present, 0.1, "balanced")
    fit_multinomial_logistic(np.tile(X, (5, 1)), np.tile(y, 5), present, 0.1, "balanced")
    assert calls == ["_fit_sklearn", "_fit_torch"]

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


def test_logistic_matches_scikit_learns_objective():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    w, b = fit_multinomial_logistic(X, y, np.array([0, 1, 2]), C=0.1, class_weight="balanced")
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
    with pytest.raises(PointsegError, match="C must be positive"):
        PointClassifier(C=0)
    X = np.zeros((4, 2), np.float32)
    with pytest.raises(PointsegError, match="class_weight"):
        fit_multinomial_logistic(X, np.array([0, 1, 0, 1]), np.array([0, 1]), 1.0, "auto")


def test_warm_start_reaches_the_same_solution():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 30)).astype(np.float32)
    y = (X[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]])).argmax(1)
    cold = fit_multinomial_logistic(X, y, np.array([0, 1]), 0.1, "balanced")
    start = fit_multinomial_logistic(X[:-5], y[:-5], np.array([0, 1]), 0.1, "balanced")
    warm = fit_multinomial_logistic(X, y, np.array([0, 1]), 0.1, "balanced", init=start)
    np.testing.assert_allclose(warm[0], cold[0], atol=1e-3)
    np.testing.assert_allclose(warm[1], cold[1], atol=1e-3)

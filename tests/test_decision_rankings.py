"""The next-image rankings screened beside the committee (``pointseg.decision``: ``expected_change``,
``committee_dense``, ``committee_coverage``, ``committee_defect``), each on a case whose answer is known."""
import numpy as np
import pytest

from pointseg.decision import (RANKINGS, committee_disagreement, coverage_clusters, density_scores, fit_committee,
                               flagged_disagreement, rank_images_for_annotation, runner_up_gradient)
from synthetic import fitted_two_texture, two_texture_image

BACKBONE = "efficientnet_lite0"  # ships with its package: no weights needed


@pytest.fixture(scope="module")
def fitted():
    seg, image, _, points = fitted_two_texture(BACKBONE)
    same_scene, _ = two_texture_image(seed=5)
    faint = (0.4 * same_scene.astype(np.float32) + 80).astype(np.uint8)  # the scene at low contrast
    return seg, image, points, [same_scene, faint]


def test_runner_up_gradient_is_the_cross_entropy_gradient_at_the_closest_calls():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 5))
    coef = rng.normal(size=(3, 5))
    logits = z @ coef.T
    grad = runner_up_gradient(logits, z, pixels=7)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, 1)[:, -2:]
    pick = np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:7]
    label = np.argsort(p, 1)[pick, -2]

    def loss(w):
        s = z[pick] @ w.T
        s = s - s.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(1)) - s[np.arange(7), label]))

    numeric = np.zeros_like(coef)
    for idx in np.ndindex(coef.shape):
        step = np.zeros_like(coef)
        step[idx] = 1e-6
        numeric[idx] = (loss(coef + step) - loss(coef - step)) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


def test_expected_change_ranking_scores_every_image(fitted):
    seg, _, _, candidates = fitted
    order = rank_images_for_annotation(seg, candidates, "expected_change")
    assert sorted(i for i, _ in order) == [0, 1] and all(v > 0 for _, v in order)


def test_flagged_disagreement_ignores_background_wavering_and_floors_specks():
    stack = np.zeros((2, 2, 20, 20))
    stack[:, 0] = 1.0
    stack[0, :, :, :10] = [[[0.7]], [[0.3]]]          # members waver on the left half, both call it background
    assert flagged_disagreement(stack, background=0) == 0.0
    stack[0, :, 0, 10] = [0.2, 0.8]        # one pixel one member calls a defect: var 0.16 per class, 0.32 summed
    assert flagged_disagreement(stack, background=0, floor=0.01) == pytest.approx(0.32 / 4)   # over >= 4 px
    assert flagged_disagreement(stack, background=0, floor=0.0) == pytest.approx(0.32)
    assert flagged_disagreement(stack, background=1) > 0  # the other class as background: everything flagged


def test_coverage_clusters_marks_the_kinds_no_annotated_image_shows():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0], [10, 0], [0, 10]])
    candidates = np.concatenate([c + rng.normal(0, 0.3, (4, 2)) for c in centres])
    annotated = centres[:1] + 0.1
    fresh = coverage_clusters(candidates, annotated, clusters=3)
    assert fresh.tolist() == [False] * 4 + [True] * 8
    assert not coverage_clusters(candidates, np.concatenate([annotated, centres[1:]]), clusters=3).any()


def test_committee_variants_reorder_the_committee_scores_as_documented(fitted):
    seg, image, points, candidates = fitted
    committee = fit_committee(seg, [image], [points])        # the ranking's committee (the same seed)
    base = [committee_disagreement(committee, im) for im in candidates]
    dense = dict(rank_images_for_annotation(seg, candidates, "committee_dense", annotated=[image], points=[points]))
    density = density_scores(seg, candidates)
    assert [dense[i] for i in range(2)] == pytest.approx([b * d for b, d in zip(base, density)])
    # one cluster per image: the two candidates are both uncovered, lifted alike, in the committee's order
    cover = rank_images_for_annotation(seg, candidates, "committee_coverage", annotated=[image], points=[points],
                                       clusters=3)
    assert [i for i, _ in cover] == list(np.argsort(base)[::-1])
    assert cover[1][1] - base[cover[1][0]] == pytest.approx(max(base) + 1.0)
    # one cluster: everything covered by the annotated image, the scores are the committee's own
    flat = dict(rank_images_for_annotation(seg, candidates, "committee_coverage", annotated=[image], points=[points],
                                           clusters=1))
    assert [flat[i] for i in range(2)] == pytest.approx(base)
    defect = rank_images_for_annotation(seg, candidates, "committee_defect", annotated=[image], points=[points])
    assert all(v >= 0 for _, v in defect)


def test_the_new_rankings_are_offered():
    assert {"expected_change", "committee_dense", "committee_coverage", "committee_defect"} <= set(RANKINGS)

"""The bootstrap committee behind the "next image to annotate" ranking (``pointseg.decision.fit_committee``,
``committee_disagreement``): refits on the clicks resampled within each class, scored by how much they
disagree on an image."""
import numpy as np
import pytest

import pointseg.decision as decision
from pointseg.decision import committee_disagreement, fit_committee, rank_images_for_annotation
from pointseg.errors import PointsegError
from synthetic import fitted_two_texture, two_texture_image

BACKBONE = "efficientnet_lite0"  # ships with its package: no weights needed


@pytest.fixture(scope="module")
def fitted():
    return fitted_two_texture(BACKBONE)


def test_every_member_keeps_each_class_count_and_they_differ(fitted):
    seg, image, _, points = fitted
    committee = fit_committee(seg, [image], [points], members=3, seed=1)
    assert len(committee) == 3 and all(m is not seg for m in committee)
    counts = {name: int((points[:, 2] == k).sum()) for k, name in enumerate(seg.classes_)}
    for m in committee:
        assert m.training_report_.points_per_class == counts      # resampled within each class
    coefs = [m.head_.coef for m in committee]
    assert not np.allclose(coefs[0], coefs[1])                     # different resamples, different models


def test_disagreement_is_zero_for_identical_members_and_ranks_a_changed_scene_first(fitted):
    seg, image, _, points = fitted
    assert committee_disagreement([seg, seg], image) == pytest.approx(0.0, abs=1e-12)
    same_scene, _ = two_texture_image(seed=5)
    faint = (0.4 * same_scene.astype(np.float32) + 80).astype(np.uint8)  # the scene at low contrast
    order = rank_images_for_annotation(seg, [same_scene, faint], "committee", annotated=[image], points=[points])
    assert order[0][0] == 1 and order[0][1] > order[1][1] > 0


def test_a_large_image_is_judged_on_a_whole_image_preview_that_orders_images_alike(fitted, monkeypatch):
    seg, image, _, points = fitted
    committee = fit_committee(seg, [image], [points], members=3)
    same_scene, _ = two_texture_image(seed=7)
    faint = (0.4 * same_scene.astype(np.float32) + 80).astype(np.uint8)
    full = [committee_disagreement(committee, im) for im in (same_scene, faint)]
    monkeypatch.setattr(decision, "COMMITTEE_PIXELS", same_scene.shape[0] * same_scene.shape[1] // 4)
    for m in committee:
        monkeypatch.setattr(m, "predict_full", lambda *a, **k: pytest.fail("a full-resolution prediction"))
    preview = [committee_disagreement(committee, im) for im in (same_scene, faint)]
    assert full[1] > full[0] and preview[1] > preview[0]       # the same order at half the resolution
    assert preview != full


def test_committee_rankings_need_the_points(fitted):
    seg, image, _, _ = fitted
    with pytest.raises(PointsegError, match="points"):
        rank_images_for_annotation(seg, [image], "committee", annotated=[image])

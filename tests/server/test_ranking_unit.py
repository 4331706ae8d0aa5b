"""AnnotationRanking's answer without a server: current scores first, earlier models' scores next (the list
does not fall back to name order after a refit), unscored images pending; diversity needs annotated images."""
from types import SimpleNamespace

import numpy as np

from pointseg.server.ranking import DESCRIPTOR, AnnotationRanking


def _img(i):
    return {"id": i, "name": f"im{i}", "n_points": 0, "n_scribbles": 0, "status": "ok"}


def test_current_scores_first_then_stale_then_pending():
    r = AnnotationRanking()
    model, features = SimpleNamespace(rev=7, version=3), SimpleNamespace(kind="hybrid")
    r._values = {(1, "uncertainty"): (("model", 3), 0.2), (2, "uncertainty"): (("model", 2), 0.9),
                 (3, "uncertainty"): (("model", 3), 0.5)}
    out = r._answer(model, features, [_img(i) for i in (1, 2, 3, 4)], [], "uncertainty", 1)
    assert [x["id"] for x in out["ranked"]] == [3, 1, 2] and [x["current"] for x in out["ranked"]] == [True, True, False]
    assert out["pending"] == [4] and not out["complete"] and out["annotated"] == 1
    r.forget_image(2)
    assert (2, "uncertainty") not in r._values


def test_uncertain_diverse_multiplies_uncertainty_by_the_distance_from_the_annotated():
    r = AnnotationRanking()
    model, features = SimpleNamespace(rev=1, version=1), SimpleNamespace(kind="hybrid")
    stamp = ("features", "hybrid", None)
    r._values = {(9, DESCRIPTOR): (stamp, np.array([0.0, 0.0])),                 # the annotated image
                 (1, DESCRIPTOR): (stamp, np.array([0.1, 0.0])), (1, "uncertainty"): (("model", 1), 0.9),
                 (2, DESCRIPTOR): (stamp, np.array([3.0, 3.0])), (2, "uncertainty"): (("model", 1), 0.3),
                 (3, DESCRIPTOR): (("features", "deep", None), np.array([5.0, 5.0])), (3, "uncertainty"): (("model", 1), 1.0)}
    out = r._answer(model, features, [_img(i) for i in (1, 2, 3)], [9], "uncertain_diverse", 1)
    assert [x["id"] for x in out["ranked"]] == [2, 1]       # far and somewhat unsure beats near and unsure
    assert out["pending"] == [3]                             # its descriptor is of another feature kind
    out = r._answer(model, features, [_img(i) for i in (1, 2)], [], "diversity", 0)
    assert out["ranked"] == [] and out["pending"] == [1, 2]  # nothing annotated to compare with


def test_descriptors_of_another_context_factor_are_stale():
    """A model refitted at context factor 4 (small images joined the project) describes images from maps
    made at x4: descriptors computed for the x1 model must be recomputed, not compared with the new ones."""
    r = AnnotationRanking()
    features = SimpleNamespace(kind="hybrid")
    native = SimpleNamespace(rev=1, version=1, segmenter=SimpleNamespace(context_upscale_=1))
    enlarged = SimpleNamespace(rev=2, version=2, segmenter=SimpleNamespace(context_upscale_=4))
    at = lambda m: r._stamp(DESCRIPTOR, m, features)
    assert at(native) != at(enlarged)
    r._values = {(9, DESCRIPTOR): (at(native), np.array([0.0, 0.0])),
                 (1, DESCRIPTOR): (at(native), np.array([1.0, 0.0]))}
    assert [x["id"] for x in r._answer(native, features, [_img(1)], [9], "diversity", 1)["ranked"]] == [1]
    out = r._answer(enlarged, features, [_img(1)], [9], "diversity", 1)
    assert out["ranked"] == [] and out["pending"] == [1]


def test_committee_coverage_puts_an_image_of_an_unshown_kind_first():
    """Two kinds of image, one annotated: the most disagreed-on image of the kind already shown comes after
    every image of the other kind (one descriptor cluster more than the annotated images, as the library)."""
    r = AnnotationRanking()
    features = SimpleNamespace(kind="hybrid")
    model = SimpleNamespace(rev=1, version=1, segmenter=SimpleNamespace(context_upscale_=1))
    stamp = r._stamp(DESCRIPTOR, model, features)
    shown, other = np.array([0.0, 0.0]), np.array([10.0, 10.0])
    r._values = {(9, DESCRIPTOR): (stamp, shown),                               # the annotated image
                 (1, DESCRIPTOR): (stamp, shown + 0.1), (1, "committee"): (("model", 1), 0.9),
                 (2, DESCRIPTOR): (stamp, shown - 0.1), (2, "committee"): (("model", 1), 0.5),
                 (3, DESCRIPTOR): (stamp, other), (3, "committee"): (("model", 1), 0.2),
                 (4, DESCRIPTOR): (stamp, other + 0.1), (4, "committee"): (("model", 1), 0.3)}
    out = r._answer(model, features, [_img(i) for i in (1, 2, 3, 4)], [9], "committee_coverage", 1)
    assert [x["id"] for x in out["ranked"]] == [4, 3, 1, 2]
    plain = r._answer(model, features, [_img(i) for i in (1, 2, 3, 4)], [9], "committee", 1)
    assert [x["id"] for x in plain["ranked"]] == [1, 2, 4, 3]

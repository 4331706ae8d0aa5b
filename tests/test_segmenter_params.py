"""Segmenter.get_params / set_params / clone in scikit-learn's sense (no network is loaded here)."""
import pytest

from pointseg import Segmenter
from pointseg.errors import PointsegError


def test_clone_copies_parameters_not_fitted_state():
    seg = Segmenter.preset("default", classes=["a", "b"], C=0.5, cross_validate=False)
    seg.head_ = object()                                      # as if fitted
    twin = seg.clone(C=2.0)
    assert twin.get_params() == {**seg.get_params(), "C": 2.0}
    assert not hasattr(twin, "head_") and seg.C == 0.5        # the original is untouched
    assert twin.cache is seg.cache
    warm = seg.clone(warm_start=True)                         # a warm-started clone starts from the solution
    assert warm.head_ is seg.head_


def test_set_params_returns_self_and_refuses_unknown_names():
    seg = Segmenter.preset("default")
    assert seg.set_params(smoothing=0.5, min_region=3) is seg
    assert (seg.smoothing, seg.min_region) == (0.5, 3)
    with pytest.raises(PointsegError, match="unknown Segmenter parameter"):
        seg.set_params(colour="#fff")

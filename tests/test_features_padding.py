"""``features.PaddedImage``: the image padded as ``np.pad`` pads it, made tile by tile (extraction no longer
holds a whole padded copy of a large image)."""
from __future__ import annotations

import numpy as np
import pytest

from pointseg.features import PaddedImage, _pad_reflect


@pytest.mark.parametrize("h,w,hp,wp,mode", [(45, 70, 64, 96, "reflect"), (10, 70, 32, 96, "edge"),
                                            (45, 9, 64, 32, "edge"), (64, 70, 64, 96, "reflect")])
def test_every_slice_equals_numpys_padded_array(h, w, hp, wp, mode):
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    padded = _pad_reflect(rgb, hp, wp)
    want = np.pad(rgb, ((0, hp - h), (0, wp - w), (0, 0)), mode=mode)
    assert isinstance(padded, PaddedImage) and padded.shape == want.shape
    np.testing.assert_array_equal(np.asarray(padded), want)
    rng = np.random.default_rng(1)
    for _ in range(200):
        y0, y1 = sorted(rng.integers(0, hp + 1, 2))
        x0, x1 = sorted(rng.integers(0, wp + 1, 2))
        np.testing.assert_array_equal(padded[y0:y1, x0:x1], want[y0:y1, x0:x1])


def test_an_image_already_at_its_padded_size_is_itself_and_inner_tiles_are_views():
    rgb = np.zeros((64, 96, 3), np.uint8)
    assert _pad_reflect(rgb, 64, 96) is rgb
    padded = _pad_reflect(rgb[:50], 64, 96)
    assert np.shares_memory(padded[0:32, 0:64], rgb)              # no copy away from the border

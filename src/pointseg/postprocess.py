"""Clean-up of a label map after classification.

A per-pixel classifier leaves specks: a few pixels of "defect" in a clean surface, a pinhole of background in
a part. Inspection users count and measure regions, so one stray speck is a false finding. Removing connected
regions below a size the user chooses (ilastik's and Labkit's size filter) is the cheapest, most predictable fix.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)


def remove_small_regions(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Relabel every connected region (8-connected) of fewer than ``min_size`` pixels with the label of the
    nearest pixel outside such regions, i.e. with the class around it.

    Returns a new array; ``labels`` is left alone. ``min_size <= 1`` returns ``labels`` unchanged. When every
    region is small there is nothing to take a label from, and the map is returned as it is.

    Examples
    --------
    >>> m = np.zeros((5, 5), np.int64); m[2, 2] = 1
    >>> int(remove_small_regions(m, 2).max())
    0
    """
    labels = np.asarray(labels)
    if min_size <= 1 or labels.size == 0:
        return labels
    small = np.zeros(labels.shape, dtype=bool)
    for k in np.unique(labels):
        regions, n = ndi.label(labels == k, structure=_EIGHT)
        if n == 0:
            continue
        tiny = np.bincount(regions.ravel()) < min_size
        tiny[0] = False
        if tiny.any():
            small |= tiny[regions]
    if not small.any() or small.all():
        return labels.copy()
    rows, cols = ndi.distance_transform_edt(small, return_distances=False, return_indices=True)
    return labels[rows, cols]

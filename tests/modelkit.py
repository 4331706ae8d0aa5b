"""Helpers for the model-file tests: a small trained model, and raw read/write that bypass validation.

The raw helpers let a test build exactly the damaged or hand-edited file a user could have — including
one whose checksum was recomputed (``reseal=True``), so that the field checks behind the checksum are
exercised too, not only the checksum.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthetic import points_from_truth, two_texture_image

CLASSES = ["left", "right", "disc"]


def train_small_model(path: Path, backbone: str = "efficientnet_lite0", context_upscale=1) -> Path:
    """Fit the default (hybrid) set-up on one small synthetic image and save it to ``path``.

    ``context_upscale=1`` by default: the model-file and export tests that use it are about the file and the
    graph, not the context; the default's ×4 for this 96 x 128 image would only make every export slower
    (tests/deploy/test_export_context_upscale.py checks the enlarged graphs)."""
    from pointseg import Segmenter

    image, truth = two_texture_image(h=96, w=128)
    seg = Segmenter(backbone, CLASSES, precision="fp32", cross_validate=False, context_upscale=context_upscale)
    seg.fit([image], [points_from_truth(truth, 6)])
    seg.save(path)
    return path


def read_raw(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The file's metadata and tensors exactly as stored, unchecked."""
    from safetensors.numpy import load

    data = Path(path).read_bytes()
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    return json.loads(header["__metadata__"]["pointseg"]), load(data)


def write_raw(path: Path, meta: dict, tensors: dict[str, np.ndarray], reseal: bool = True) -> Path:
    """Write a model file from parts; ``reseal`` stores a checksum that matches the (edited) contents."""
    from safetensors.numpy import save

    from pointseg.modelfile import CHECKSUM_KEY, content_checksum

    meta = dict(meta)
    if reseal and isinstance(meta.get("format_version"), int) and meta["format_version"] >= 2:
        try:
            meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
        except (ValueError, TypeError):  # NaN in the metadata: no canonical JSON, leave the old checksum
            pass
    Path(path).write_bytes(save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                metadata={"pointseg": json.dumps(meta)}))
    return Path(path)

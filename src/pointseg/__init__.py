"""pointseg: interactive few-shot semantic segmentation from a handful of clicks.

Click a few points per class, and a linear model on pretrained CNN features labels every pixel::

    from pointseg import Segmenter
    seg = Segmenter(classes=["normal", "defect"]).fit([image], [points])
    labels = seg.predict(new_image)
"""

from pointseg._version import __version__
from pointseg.errors import PointsegError

__all__ = ["Segmenter", "FeatureCache", "FeatureMap", "Prediction", "TrainingReport", "PointsegError", "__version__"]

_LAZY = {"Segmenter": "pointseg.segmenter", "Prediction": "pointseg.segmenter", "FeatureCache": "pointseg.features",
         "FeatureMap": "pointseg.features", "TrainingReport": "pointseg.classifier"}


def __getattr__(name: str):
    """Import the torch-backed API on first use, so torch-free parts (pointseg.deploy.runtime) stay torch-free."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pointseg' has no attribute {name!r}")

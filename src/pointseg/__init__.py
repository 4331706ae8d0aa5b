"""pointseg: interactive few-shot semantic segmentation from a handful of clicks.

Click a few points per class, and a linear model on pretrained CNN features labels every pixel::

    from pointseg import Segmenter
    seg = Segmenter(classes=["normal", "defect"]).fit([image], [points])
    labels = seg.predict(new_image)
"""

from pointseg._version import __version__
from pointseg.classifier import TrainingReport
from pointseg.errors import PointsegError
from pointseg.features import FeatureCache, FeatureMap
from pointseg.segmenter import Prediction, Segmenter

__all__ = ["Segmenter", "FeatureCache", "FeatureMap", "Prediction", "TrainingReport", "PointsegError", "__version__"]

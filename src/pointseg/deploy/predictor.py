"""``pointseg predict --engine``: the same predictor interface over the library (torch) or the exported graph.

:class:`GraphPredictor` gives the attributes and the ``predict_full`` that the predict command uses from a
:class:`~pointseg.segmenter.Segmenter`, computed by the model's ONNX graph on OpenVINO or onnxruntime
(exported once and cached, :func:`pointseg.deploy.export.cached_graph`), with ``min_region`` applied by the
runner as on the line PC.
"""

from __future__ import annotations

import numpy as np

from pointseg.errors import PointsegError

PREDICT_ENGINES = ("torch", "onnxruntime", "openvino")


class GraphPredictor:
    """A model file's exported graph, looking like a fitted Segmenter to `pointseg predict`."""

    def __init__(self, seg, runner):
        self.runner = runner
        self.classes_, self.colors_ = list(runner.classes), list(runner.colors)
        self.background_ = runner.background
        self.ng_rule_ = getattr(seg, "ng_rule_", None) or runner.rule
        self.ng_area_ = getattr(seg, "ng_area_", None)
        self.min_region = int(seg.min_region or 0)

    def predict_full(self, image, probabilities: bool = True):
        from pointseg.segmenter import Prediction

        self.runner.min_region = int(self.min_region or 0)
        result = self.runner.predict(image, probabilities=True)
        proba = result.probabilities
        uncertainty = 1.0 - proba.max(axis=0)
        return Prediction(result.labels.astype(np.int64), proba if probabilities else None, uncertainty)


def load_for_predict(model, engine: str | None, weights=None, cache=None):
    """A Segmenter (``engine`` None: backbone on the auto engine; ``"torch"``: all PyTorch) or a
    :class:`GraphPredictor` for ``"onnxruntime"`` / ``"openvino"``."""
    from pointseg.engines import forced_engine, resolve_engine
    from pointseg.segmenter import Segmenter

    if engine is None:
        return Segmenter.load(model, weights=weights, cache=cache)
    if engine not in PREDICT_ENGINES:
        raise PointsegError(f"unknown --engine {engine!r}; choose one of: {', '.join(PREDICT_ENGINES)}")
    resolve_engine(engine)  # a clear error when the runtime is not installed
    with forced_engine("torch"):
        seg = Segmenter.load(model, weights=weights, cache=cache)
    if engine == "torch":
        return seg
    from pointseg.deploy.export import cached_graph
    from pointseg.deploy.runtime import Runner

    return GraphPredictor(seg, Runner(cached_graph(model, weights), engine=engine))

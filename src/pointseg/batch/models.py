"""One loaded model per process, keyed by the model file's sha256: never loaded per task.

A batch sends its model file's bytes once: in-process they go straight into this cache; on a Dask cluster a
worker plugin puts them there when each worker starts (and on every worker that joins later, e.g. one
that replaces a dead worker), with torch limited to one thread so N single-threaded workers use N cores.
Tasks then carry only the small :class:`ModelKey`.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pointseg.errors import PointsegError

_MODELS: dict["ModelKey", object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelKey:
    sha256: str
    weights: str | None = None
    min_region: int | None = None  # the CLI's --min-region override
    engine: str | None = None  # BatchOptions.engine


@dataclass(frozen=True)
class ModelRef:
    """What a process needs to load the model: the file's bytes and how to load it. ``live``: the fitted
    model these bytes were saved from, when the caller has one in this process (never sent to workers)."""

    data: bytes
    key: ModelKey
    live: object = field(default=None, compare=False, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, weights=None, min_region=None, engine=None) -> "ModelRef":
        sha = hashlib.sha256(data).hexdigest()
        return cls(data, ModelKey(sha, None if weights is None else str(weights), min_region, engine))

    def with_live(self, model) -> "ModelRef":
        return ModelRef(self.data, self.key, model)

    def __getstate__(self):  # pickled for a worker plugin: the bytes, not this process's live object
        return {"data": self.data, "key": self.key, "live": None}

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)


def register(ref: ModelRef):
    """Load the model into this process's cache (once) and return it."""
    with _LOCK:
        seg = _MODELS.get(ref.key)
        if seg is None:
            seg = _load(ref)
            _MODELS[ref.key] = seg
        return seg


@contextmanager
def registered(ref: ModelRef):
    """The model of ``ref`` for an in-process run: its live object while the run lasts (tile tasks find it
    by key; it is not kept afterwards, the caller owns it), else loaded once into this process's cache."""
    if ref.live is None:
        yield register(ref)
        return
    with _LOCK:
        mine = ref.key not in _MODELS
        if mine:
            _MODELS[ref.key] = ref.live
    try:
        yield _MODELS[ref.key]
    finally:
        if mine:
            with _LOCK:
                _MODELS.pop(ref.key, None)


def model_for(key: ModelKey):
    seg = _MODELS.get(key)
    if seg is None:
        raise PointsegError(
            f"model {key.sha256[:12]}… is not loaded in this process; predict_many registers it "
            "(on a cluster through its worker plugin) before submitting tasks"
        )
    return seg


def _load(ref: ModelRef):
    from pointseg.features import FeatureCache

    folder = Path(tempfile.gettempdir()) / "pointseg-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ref.key.sha256}.pointseg"
    if not path.is_file():
        from pointseg.fileio import atomic_write_bytes

        atomic_write_bytes(path, ref.data)
    # a batch sees each image once: keeping feature maps would only grow memory with the folder
    seg = _load_for_engine(path, ref.key.engine, ref.key.weights, FeatureCache(max_bytes=0))
    if ref.key.min_region is not None:
        seg.min_region = ref.key.min_region
    if hasattr(seg, "extractor"):
        seg.extractor  # build the backbone now, not in the first task
    return seg


def _load_for_engine(path: Path, engine: str | None, weights, cache):
    """A Segmenter, or for a graph engine (onnxruntime / openvino) the exported model behind the same
    ``predict_full`` (:mod:`pointseg.deploy.predictor`, imported only then)."""
    if engine is None:
        from pointseg.segmenter import Segmenter

        return Segmenter.load(path, weights=weights, cache=cache)
    from pointseg.deploy.predictor import load_for_predict

    return load_for_predict(path, engine, weights=weights, cache=cache)



def worker_plugin(ref: ModelRef):
    """A ``distributed.WorkerPlugin`` that loads the model on each worker and runs torch single-threaded."""
    from distributed import WorkerPlugin

    class PointsegModel(WorkerPlugin):
        idempotent = False

        def __init__(self, ref: ModelRef):
            self.ref = ref
            self.name = f"pointseg-model-{ref.key.sha256[:16]}"

        def setup(self, worker) -> None:
            import torch

            from pointseg.engines.sessions import limit_threads

            torch.set_num_threads(1)
            limit_threads(1)  # the backbone engine's own pool too, or N workers oversubscribe the cores
            register(self.ref)

    return PointsegModel(ref)

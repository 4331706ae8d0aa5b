"""``predict_many``: one code path for a folder on a laptop and a million images on a cluster.

Without a client every image runs here, one after another, with no Dask import. With a
``distributed.Client`` every image is one task (a huge image: one task per tile, see
:mod:`pointseg.batch.tiled`), at most ``window`` images in flight; results still come back in input order.
Workers load the model once (a worker plugin), read their inputs and write their outputs themselves; the
client sees only small dicts. There is no shared mutable state between tasks.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pointseg import lazyio
from pointseg.batch.inputs import InputItem, expand_inputs
from pointseg.batch.manifest import Manifest, unchanged
from pointseg.batch.models import ModelRef, registered, worker_plugin
from pointseg.batch.tasks import BatchOptions, predict_image
from pointseg.errors import PointsegError

SUMMARY_NAME = "summary.csv"
#: summary columns that depend on timing, not on the result (left out when comparing runs)
TIMING_COLUMNS = ("seconds",)


@dataclass
class ImageResult:
    """One input's outcome, yielded in input order."""

    index: int
    item: InputItem
    measures: dict = field(default_factory=dict)  # height, width, fraction_*, regions_*, status
    outputs: list[str] = field(default_factory=list)  # relative to OUT
    error: str | None = None
    seconds: float = 0.0
    resumed: bool = False  # taken over from an earlier run's manifest
    fingerprint: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def predict_many(model, inputs: Iterable, output: str, client=None, *, options: BatchOptions | None = None,
                 weights=None, min_region: int | None = None, recursive: bool = False, resume: bool = False,
                 cancel: Callable[[], bool] | None = None, on_done: Callable[[ImageResult], None] | None = None,
                 window: int | None = None, reader: Callable[[InputItem], dict] | None = None
                 ) -> Iterator[ImageResult]:
    """Predict every image of ``inputs`` into ``output``, yielding an :class:`ImageResult` per image in input order.

    Parameters
    ----------
    model : path or URL of a ``.pointseg`` file, its bytes, or a fitted :class:`~pointseg.segmenter.Segmenter`
        (used as it is in this process, with its feature cache; sent as its file to a cluster).
    inputs : files, folders, globs, ``@list.txt`` and fsspec URLs (:func:`~pointseg.batch.inputs.expand_inputs`),
        or already expanded :class:`InputItem` objects.
    output : folder (path or URL) for the outputs, ``summary.csv`` and the manifest.
    client : a ``distributed.Client``; ``None`` runs in this process.
    options : what to write (:class:`BatchOptions`).
    resume : skip inputs an earlier run into ``output`` finished with the same model and options and whose
        content is unchanged (:func:`pointseg.batch.manifest.unchanged`).
    cancel : polled between results (and every 0.2 s on a cluster); when it returns True, pending tasks are
        cancelled and the iterator ends. Closing the iterator cancels the same way.
    on_done : called as each image finishes, in completion order (progress bars); results are still yielded
        in input order.
    window : images in flight at once on a cluster (default: 4 per worker thread, at least 16).
    reader : in-process only: ``reader(item)`` → ``{"image": ..., "fingerprint": ...}`` instead of reading
        ``item.location``, where the caller already holds the image or its features (the app passes the
        feature maps its features thread computed; ``image`` is anything ``predict_full`` takes).

    ``summary.csv`` is written when the iterator is exhausted (:func:`write_summary`).

    Examples
    --------
    >>> for r in predict_many("model.pointseg", ["parts/"], "out"):      # doctest: +SKIP
    ...     print(r.item.name, r.error or r.measures["fraction_defect"])
    """
    run = BatchRun(model, inputs, output, options=options, weights=weights, min_region=min_region,
                   recursive=recursive, resume=resume, reader=reader)
    yield from run.results(client, cancel=cancel, on_done=on_done, window=window)


class BatchRun:
    """A batch planned but not started: its inputs, what an earlier run into ``output`` finished already
    (:attr:`resumed`) and what is left (:attr:`todo`). Planning reads the manifest and the inputs'
    fingerprints and writes nothing but the output folder.

    :func:`predict_many` is ``BatchRun(...).results(...)``. The app plans when the user starts "predict
    all" (so the resumed progress shows at once), then draws one result at a time from :meth:`results` on
    its model thread, answering clicks between images.
    """

    def __init__(self, model, inputs: Iterable, output: str, *, options: BatchOptions | None = None,
                 weights=None, min_region: int | None = None, recursive: bool = False, resume: bool = False,
                 reader: Callable[[InputItem], dict] | None = None):
        self.options = options or BatchOptions()
        self.output = output
        self.reader = reader
        self.ref = model_ref(model, weights=weights, min_region=min_region, engine=self.options.engine)
        inputs = list(inputs)
        self.items: list[InputItem] = inputs if inputs and all(isinstance(i, InputItem) for i in inputs) \
            else expand_inputs(inputs, recursive)
        _check_output(output)
        self.manifest = Manifest(output, self.ref.key.sha256, self.options.for_manifest())
        self._previous = self.manifest.previous_entries() if resume else {}
        self._done, self._todo = _split_resumed(self.items, self._previous, output)

    @property
    def resumed(self) -> list[ImageResult]:
        """Results taken over from the earlier run, in input order (no work is done for them)."""
        return [self._done[i] for i in sorted(self._done)]

    @property
    def todo(self) -> list[InputItem]:
        """The items :meth:`results` will predict, in the order it predicts them."""
        return [self.items[i] for i in self._todo]

    def results(self, client=None, *, cancel: Callable[[], bool] | None = None,
                on_done: Callable[[ImageResult], None] | None = None, window: int | None = None
                ) -> Iterator[ImageResult]:
        """Run the batch: every item's result in input order (see :func:`predict_many`); once only."""
        if client is not None and self.reader is not None:
            raise PointsegError("a reader runs in this process only; on a cluster the workers read the inputs")
        here = {item.location for item in self.items}
        # entries of inputs not in this run stay (a later run over them resumes too)
        others = [e for loc, e in self._previous.items() if loc not in here]
        self.manifest.start([_entry(r) for r in self.resumed] + others)
        results: list[ImageResult] = []
        try:
            if client is None:
                runner = _run_local(self, cancel or _never, on_done)
            else:
                runner = _run_cluster(self.ref, self.items, self._todo, self._done, self.output, self.options,
                                      client, cancel or _never, self.manifest, on_done, window)
            for result in runner:
                results.append(result)
                yield result
            if len(results) == len(self.items):
                write_summary(results, self.output)
        finally:
            self.manifest.close()


def _never() -> bool:
    return False


def model_ref(model, weights=None, min_region=None, engine=None) -> ModelRef:
    """The :class:`ModelRef` of a model file's path/URL, its bytes, or a fitted Segmenter (the app's): a
    fitted model with no load-time override is used as it is in this process (``live``), never reloaded."""
    if isinstance(model, bytes):
        return ModelRef.from_bytes(model, weights=weights, min_region=min_region, engine=engine)
    if hasattr(model, "save") and not isinstance(model, (str, os.PathLike)):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="pointseg-") as tmp:
            model.save(Path(tmp) / "model.pointseg")
            data = (Path(tmp) / "model.pointseg").read_bytes()
        ref = ModelRef.from_bytes(data, weights=weights, min_region=min_region, engine=engine)
        return ref.with_live(model) if weights is None and min_region is None and engine is None else ref
    try:
        data = lazyio.read_bytes(str(model))
    except PointsegError:
        raise PointsegError(f"model file not found: {model}") from None
    return ModelRef.from_bytes(data, weights=weights, min_region=min_region, engine=engine)


def _check_output(output: str) -> None:
    if lazyio.is_local(output):
        path = lazyio.local_path(output)
        if path.exists() and not path.is_dir():
            raise PointsegError(f"output {output} is a file; give a folder for the label images and summary.csv")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PointsegError(f"cannot create the output folder {output}: {exc.strerror}") from None


def _split_resumed(items, previous: dict, output: str):
    """Results taken over from the manifest (same input unchanged, outputs present), and indices to do."""
    done: dict[int, ImageResult] = {}
    todo: list[int] = []
    for index, item in enumerate(items):
        entry = previous.get(item.location)
        if entry and entry.get("error") is None and entry.get("name") == item.name \
                and all(lazyio.exists(lazyio.join(output, o)) for o in entry.get("outputs", [])) \
                and unchanged(item.location, entry.get("fingerprint", {})):
            done[index] = ImageResult(index, item, entry["measures"], entry["outputs"], None,
                                      entry.get("seconds", 0.0), True, entry.get("fingerprint", {}))
        else:
            todo.append(index)
    return done, todo


def _entry(r: ImageResult) -> dict:
    return {"input": r.item.location, "name": r.item.name, "measures": r.measures, "outputs": r.outputs,
            "error": r.error, "seconds": round(r.seconds, 4), "fingerprint": r.fingerprint}


def _result(index: int, item: InputItem, value: dict) -> ImageResult:
    return ImageResult(index, item, value.get("measures", {}), value.get("outputs", []), value.get("error"),
                       float(value.get("seconds", 0.0)), False, value.get("fingerprint", {}))


def _finished(result: ImageResult, manifest: Manifest, on_done) -> ImageResult:
    if result.ok:
        manifest.add(_entry(result))
    if on_done is not None:
        on_done(result)
    return result


# ------------------------------------------------------------------------------------------ in-process
def _run_local(run: BatchRun, cancel, on_done):
    from pointseg.batch.tiled import run_tiled

    ref, options, output = run.ref, run.options, run.output
    with registered(ref) as seg:
        todo_set = set(run._todo)
        for index, item in enumerate(run.items):
            if index not in todo_set:
                yield run._done[index]
                continue
            if cancel():
                return
            try:
                value = predict_image(ref.key, item, output, options, seg=seg, reader=run.reader)
                if "plan" in value:
                    value = run_tiled(_call, ref.key, item, output, options, value["plan"])
            except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the batch
                value = _failure(item, exc)
            yield _finished(_result(index, item, value), run.manifest, on_done)


def _failure(item: InputItem, exc: BaseException) -> dict:
    """An unexpected failure of one image (a bug, a worker killed again and again): reported, not raised."""
    return {"error": f"{item.name}: {type(exc).__name__}: {exc}".splitlines()[0]}


def _call(fn, *args, **kwargs):
    """The in-process "submit": run now, return the value (tile jobs are written against a submit)."""
    return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------ on a cluster
def _run_cluster(ref, items, todo, done, output, options, client, cancel, manifest, on_done, window):
    from distributed import wait

    from pointseg.batch.tiled import run_tiled

    plugin = worker_plugin(ref)
    client.register_plugin(plugin)
    threads = sum(client.nthreads().values()) or 1
    window = window or max(16, 4 * threads)
    token = f"{ref.key.sha256[:8]}-{uuid.uuid4().hex[:8]}"  # keys unique per run: a cluster outlives runs
    pending: dict = {}  # future -> index
    ready: dict[int, ImageResult] = dict(done)
    queue = list(todo)
    next_out = 0

    def submit(fn, *args, **kwargs):
        return client.submit(fn, *args, pure=False, retries=1, **kwargs)

    try:
        while next_out < len(items):
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1
            if next_out >= len(items):
                break
            while queue and len(pending) < window:
                index = queue.pop(0)
                future = client.submit(predict_image, ref.key, items[index], output, options, pure=False,
                                       retries=1, priority=-index, key=f"pointseg-image-{token}-{index}")
                pending[future] = index
            if cancel():
                return
            try:
                finished = list(wait(list(pending), timeout=0.2, return_when="FIRST_COMPLETED").done)
            except TimeoutError:  # nothing finished yet: look at the cancel hook again
                continue
            for future, value in zip(finished, _gather(client, finished)):
                index = pending.pop(future)
                if isinstance(value, BaseException):  # e.g. KilledWorker after repeated crashes
                    value = _failure(items[index], value)
                if "plan" in value:  # an image to predict in tiles: its final task stands in for it
                    tiled = run_tiled(submit, ref.key, items[index], output, options, value["plan"])
                    pending[tiled] = index
                    continue
                ready[index] = _finished(_result(index, items[index], value), manifest, on_done)
    finally:
        if pending:
            client.cancel(list(pending), force=True)


def _gather(client, futures: list) -> list:
    """Results of finished futures in one round trip instead of one per future (the client loop should
    not be what limits many small images); a failed task's exception takes its place."""
    try:
        return client.gather(futures)
    except Exception:  # noqa: BLE001 - one failed: fetch them one by one to tell which
        out = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


# ------------------------------------------------------------------------------------------ summary
def summary_rows(results: list[ImageResult], classes: list[str] | None = None) -> list[dict]:
    """One row per image, in input order, with the same columns whatever ran it."""
    measure_keys: list[str] = []
    for r in results:
        measure_keys += [k for k in r.measures if k not in measure_keys]
    rows = []
    for r in results:
        row = {"image": r.item.name}
        row.update({k: r.measures.get(k, "") for k in measure_keys})
        row["labels"] = next((o for o in r.outputs if not o.endswith(("_overlay.png", "_preview.png"))
                              and "_proba." not in o), "")
        row["error"] = r.error or ""
        row["seconds"] = round(r.seconds, 3)
        rows.append(row)
    return rows


def write_summary(results: list[ImageResult], output: str) -> str:
    """Write ``summary.csv`` (input order) atomically into ``output``; returns its location."""
    from pointseg.outputs import summary_csv_bytes

    location = lazyio.join(output, SUMMARY_NAME)
    lazyio.write_bytes(location, summary_csv_bytes(summary_rows(results)))
    return location

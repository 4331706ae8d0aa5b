"""``predict_many``: one code path for a folder on a laptop and a million images on a cluster.

Without a client every image runs here, one after another, with no Dask import. With a
``distributed.Client`` every image is one task (a huge image: one task per tile, see
:mod:`pointseg.batch.tiled`), at most ``window`` images in flight; results still come back in input order.
Workers load the model once (a worker plugin), read their inputs and write their outputs themselves; the
client sees only small dicts. There is no shared mutable state between tasks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pointseg import lazyio
from pointseg.batch.inputs import InputItem, expand_inputs
from pointseg.batch.manifest import Manifest, unchanged
from pointseg.batch.models import ModelRef, register, worker_plugin
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
                 window: int | None = None) -> Iterator[ImageResult]:
    """Predict every image of ``inputs`` into ``output``, yielding an :class:`ImageResult` per image in input order.

    Parameters
    ----------
    model : path or URL of a ``.pointseg`` file, its bytes, or a fitted :class:`~pointseg.segmenter.Segmenter`.
    inputs : files, folders, globs, ``@list.txt`` and fsspec URLs (:func:`~pointseg.batch.inputs.expand_inputs`),
        or already expanded :class:`InputItem` objects.
    output : folder (path or URL) for the outputs, ``summary.csv`` and the manifest.
    client : a ``distributed.Client``; ``None`` runs in this process.
    options : what to write (:class:`BatchOptions`).
    resume : skip inputs an earlier run into ``output`` finished with the same model and options.
    cancel : polled between results (and every 0.2 s on a cluster); when it returns True, pending tasks are
        cancelled and the iterator ends. Closing the iterator cancels the same way.
    on_done : called as each image finishes, in completion order (progress bars); results are still yielded
        in input order.
    window : images in flight at once on a cluster (default: 4 per worker thread, at least 16).

    ``summary.csv`` is written when the iterator is exhausted (:func:`write_summary`).

    Examples
    --------
    >>> for r in predict_many("model.pointseg", ["parts/"], "out"):      # doctest: +SKIP
    ...     print(r.item.name, r.error or r.measures["fraction_defect"])
    """
    options = options or BatchOptions()
    data = _model_bytes(model)
    ref = ModelRef.from_bytes(data, weights=weights, min_region=min_region, engine=options.engine)
    inputs = list(inputs)
    items = inputs if inputs and all(isinstance(i, InputItem) for i in inputs) else expand_inputs(inputs, recursive)
    _check_output(output)
    manifest = Manifest(output, ref.key.sha256, options.for_manifest())
    previous = manifest.previous_entries() if resume else {}
    done, todo = _split_resumed(items, previous, output)
    manifest.start([_entry(r) for r in done.values()])
    runner = _run_local if client is None else _run_cluster
    results: list[ImageResult] = []
    try:
        for result in runner(ref, items, todo, done, output, options, client, cancel or _never, manifest,
                             on_done, window):
            results.append(result)
            yield result
        if len(results) == len(items):
            write_summary(results, output)
    finally:
        manifest.close()


def _never() -> bool:
    return False


def _model_bytes(model) -> bytes:
    """A model file's bytes from its path/URL, the bytes themselves, or a fitted Segmenter (the app's)."""
    if isinstance(model, bytes):
        return model
    if hasattr(model, "save") and hasattr(model, "head_"):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="pointseg-") as tmp:
            model.save(Path(tmp) / "model.pointseg")
            return (Path(tmp) / "model.pointseg").read_bytes()
    try:
        return lazyio.read_bytes(str(model))
    except PointsegError:
        raise PointsegError(f"model file not found: {model}") from None


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
                and unchanged(item.location, entry.get("fingerprint", {})) \
                and all(lazyio.exists(lazyio.join(output, o)) for o in entry.get("outputs", [])):
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
def _run_local(ref, items, todo, done, output, options, client, cancel, manifest, on_done, window):
    from pointseg.batch.tiled import run_tiled

    register(ref)
    todo_set = set(todo)
    for index, item in enumerate(items):
        if index not in todo_set:
            yield done[index]
            continue
        if cancel():
            return
        try:
            value = predict_image(ref.key, item, output, options)
            if "plan" in value:
                value = run_tiled(_call, ref.key, item, output, options, value["plan"])
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the batch
            value = _failure(item, exc)
        yield _finished(_result(index, item, value), manifest, on_done)


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

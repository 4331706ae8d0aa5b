"""predict_many and `pointseg predict` on a real dask.distributed LocalCluster (2 worker processes).

One cluster serves the whole module; the CLI runs attach to it with --scheduler (except the one that starts
its own with --workers 2, as a user does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from batchkit import TILE, mosaic, summary, write_images

distributed = pytest.importorskip("distributed")

from pointseg import lazyio  # noqa: E402
from pointseg.batch import BatchOptions, predict_many  # noqa: E402
from pointseg.batch.manifest import MANIFEST_NAME  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def cli(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli_popen(*args):
    return subprocess.Popen([sys.executable, "-m", "pointseg.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest_entries(out) -> list[dict]:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines()[1:]:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return entries


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    write_images(folder / "parts", 5)
    (folder / "parts" / "img002b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder / "parts"


def test_summary_is_the_same_in_process_with_1_and_2_workers_and_resumed(model_path, batch_folder, tmp_path,
                                                                         cluster):
    # the CLI with its own LocalCluster of 2 workers, as a user runs it
    result = cli("predict", model_path, batch_folder, "-o", tmp_path / "two", "--workers", "2", "--overlay")
    assert result.returncode == 1, result.stderr  # one bad image: the run completes, the status says so
    assert "dashboard" in result.stderr and "img002b_broken.png" in result.stderr
    # in-process, and through the module's cluster restricted to one worker
    zero = list(predict_many(model_path, [batch_folder], str(tmp_path / "zero"), options=BatchOptions(overlay=True)))
    assert [r.ok for r in zero] == [True, True, True, False, True, True]
    with distributed.Client(cluster) as client:
        one = [r for r in predict_many(model_path, [batch_folder], str(tmp_path / "one"),
                                       client=OneWorker(client), options=BatchOptions(overlay=True))]
    assert [r.ok for r in one] == [True, True, True, False, True, True]
    reference = summary(tmp_path / "zero" / "summary.csv")
    assert len(reference) == 6 and "cannot read image" in reference[3]["error"]
    assert reference[3]["image"] == "img002b_broken.png" and reference[3]["fraction_left"] == ""
    for mode in ("one", "two"):
        assert summary(tmp_path / mode / "summary.csv") == reference, mode
        for row in reference[:3]:
            assert (np.array(Image.open(tmp_path / mode / row["labels"]))
                    == np.array(Image.open(tmp_path / "zero" / row["labels"]))).all()
    resumed = cli("predict", model_path, batch_folder, "-o", tmp_path / "two", "--scheduler", cluster.scheduler_address,
                  "--overlay", "--resume")
    assert resumed.returncode == 1 and "5 from the earlier run" in resumed.stderr
    assert summary(tmp_path / "two" / "summary.csv") == reference


class OneWorker:
    """A client whose tasks all go to one worker (a 1-worker run on the shared cluster)."""

    def __init__(self, client):
        self._client = client
        self._worker = sorted(client.nthreads())[0]

    def submit(self, *args, **kwargs):
        return self._client.submit(*args, workers=[self._worker], allow_other_workers=False, **kwargs)

    def nthreads(self):
        return {self._worker: 1}

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_tiled_zarr_image_equals_the_single_process_prediction(model_path, tmp_path, client):
    from pointseg.batch.tiled import read_labels
    from pointseg.decision import decide_labels
    from pointseg.outputs import summarize
    from pointseg.segmenter import Segmenter

    image = mosaic(2 * TILE + 40, 2 * TILE + 90)  # 3 x 3 tiles
    store = lazyio.zarr_store(str(tmp_path / "slide.zarr"), read_only=False)
    import zarr

    zarr.open_array(store=store, mode="w", shape=image.shape, chunks=(128, 128, 3), dtype="u1")[:] = image
    seg = Segmenter.load(model_path)
    expected = seg.predict(image)
    out = tmp_path / "out"
    (result,) = predict_many(model_path, [f"file://{tmp_path / 'slide.zarr'}"], f"file://{out}", client=client,
                             options=BatchOptions(tile_above_pixels=100_000))
    assert result.ok, result.error
    assert result.outputs == ["slide.ome.zarr", "slide_preview.png"]
    labels = read_labels(str(out / "slide.ome.zarr"))
    assert labels.shape == expected.shape and (labels == expected).all()
    assert (read_labels(str(out / "slide.ome.zarr"), 1) == expected[::2, ::2]).all()
    want = summarize(expected, seg.classes_, None, seg.background_,
                     decide_labels(expected, None, seg.ng_rule_, seg.background_))
    assert {k: result.measures[k] for k in want} == want  # regions crossing tile borders count once
    assert want["ng_score"] > 100  # the largest region, merged across tiles
    assert want["regions_disc"] > 4
    assert not (out / ".pointseg-work").exists() or not any((out / ".pointseg-work").iterdir())
    attrs = json.loads((out / "slide.ome.zarr" / "labels" / "classes" / ".zattrs").read_text())
    assert [p["class"] for p in attrs["image-label"]["properties"]] == ["left", "right", "disc"]
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(out / "slide.ome.zarr" / "labels" / "classes")))())
    assert nodes and nodes[0].data[0].shape == expected.shape


def test_a_worker_killed_mid_run_is_replaced_and_its_task_retried(model_path, tmp_path, client):
    inputs = write_images(tmp_path / "in", 12, start=300)
    out = tmp_path / "out"
    killed = []
    results = []
    for result in predict_many(model_path, inputs, str(out), client=client):
        results.append(result)
        if not killed:
            busy = {w: tasks for w, tasks in client.processing().items() if tasks}
            victim = next(iter(busy))
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed.append(victim)
    assert killed and [r.ok for r in results] == [True] * 12
    assert all((out / f"img{i:03d}.png").is_file() for i in range(12))
    deadline = time.monotonic() + 60
    while len(client.nthreads()) < 2 and time.monotonic() < deadline:  # the nanny starts a new worker
        time.sleep(0.2)
    assert len(client.nthreads()) == 2 and killed[0] not in client.nthreads()


def test_resume_after_the_client_is_killed(model_path, tmp_path, cluster):
    inputs = tmp_path / "in"
    write_images(inputs, 30, start=400)
    out = tmp_path / "out"
    process = cli_popen("predict", model_path, inputs, "-o", out, "--scheduler", cluster.scheduler_address)
    deadline = time.monotonic() + 240
    while len(manifest_entries(out)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {e["outputs"][0]: (out / e["outputs"][0]).stat().st_mtime_ns for e in manifest_entries(out)}
    assert 3 <= len(finished) < 30, "the run was not interrupted mid-way"
    assert not (out / "summary.csv").exists()
    result = cli("predict", model_path, inputs, "-o", out, "--scheduler", cluster.scheduler_address, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} from the earlier run" in result.stderr
    rows = summary(out / "summary.csv")
    assert [r["image"] for r in rows] == [f"img{i:03d}.png" for i in range(30)] and not any(r["error"] for r in rows)
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was redone"
    for path in out.iterdir():  # no temporary or torn file is left, every label image opens
        assert not path.name.startswith(".") and path.suffix in (".png", ".csv", ".jsonl"), path.name
        if path.suffix == ".png":
            Image.open(path).load()


def test_memory_urls_in_process_and_file_urls_on_workers(model_path, tmp_path, client):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in write_images(tmp_path / "in", 2, start=500):
        memory.pipe_file(f"/batch-in/{path.name}", path.read_bytes())
    memory.pipe_file("/batch-model.pointseg", model_path.read_bytes())
    results = list(predict_many("memory://batch-model.pointseg", ["memory://batch-in"], "memory://batch-out"))
    assert [r.item.name for r in results] == ["img000.png", "img001.png"] and all(r.ok for r in results)
    assert memory.exists("/batch-out/img001.png") and memory.exists("/batch-out/summary.csv")
    in_memory = np.array(Image.open(memory.open("/batch-out/img001.png")))

    results = list(predict_many(f"file://{model_path}", [f"file://{tmp_path / 'in'}"], f"file://{tmp_path / 'out'}",
                                client=client))
    assert all(r.ok for r in results)
    assert (np.array(Image.open(tmp_path / "out" / "img001.png")) == in_memory).all()


def test_closing_the_iterator_cancels_pending_tasks(model_path, tmp_path, client):
    inputs = write_images(tmp_path / "in", 10, start=600)
    iterator = predict_many(model_path, inputs, str(tmp_path / "out"), client=client, window=4)
    first = next(iterator)
    iterator.close()
    assert first.ok
    deadline = time.monotonic() + 30
    while any(k.startswith("pointseg-image") for k in client.who_has()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert len(list((tmp_path / "out").glob("img*.png"))) < 10  # cancelled before the batch was done


def _compute_threads():
    import torch

    from pointseg.engines import sessions

    return torch.get_num_threads(), sessions._THREADS


def test_workers_run_torch_and_the_backbone_engine_on_one_thread_each(model_path, tmp_path, client):
    """N single-threaded workers must use N cores: the engine's own pool (OpenVINO, onnxruntime) is limited
    too, not only torch's."""
    inputs = write_images(tmp_path / "in", 2, start=700)
    assert all(r.ok for r in predict_many(model_path, inputs, str(tmp_path / "out"), client=client))
    assert set(client.run(_compute_threads).values()) == {(1, 1)}

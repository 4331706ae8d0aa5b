"""Resume decides by content, not by size and modification time (issue 10: the manifest holds per input its
content hash)."""

import os

import numpy as np
import zarr
from PIL import Image

from batchkit import write_images
from pointseg import lazyio
from pointseg.batch import predict_many
from pointseg.batch.manifest import fingerprint, unchanged


def _run(model_path, inputs, out):
    return {r.item.name: r for r in predict_many(str(model_path), [str(p) for p in inputs], str(out), resume=True)}


def test_rewritten_input_with_same_size_and_mtime_is_redone_unchanged_one_skipped(model_path, tmp_path):
    # BMP: uncompressed, so other pixels of the same size make a file of exactly the same byte count
    kept, changed = write_images(tmp_path / "in", 2, suffix=".bmp")
    out = tmp_path / "out"
    first = _run(model_path, [kept, changed], out)
    assert all(r.ok and not r.resumed for r in first.values())
    assert first[changed.name].fingerprint["digest"] == "content"

    stat = changed.stat()
    rgb = np.asarray(Image.open(changed).convert("RGB"))
    Image.fromarray(np.ascontiguousarray(rgb[::-1, ::-1])).save(changed)   # other pixels
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))             # ... same size, same mtime
    assert changed.stat().st_size == stat.st_size and changed.stat().st_mtime_ns == stat.st_mtime_ns
    os.utime(kept, ns=(kept.stat().st_atime_ns, kept.stat().st_mtime_ns + 5_000_000_000))  # only touched

    second = _run(model_path, [kept, changed], out)
    assert second[kept.name].resumed                                        # same content: skipped
    assert not second[changed.name].resumed and second[changed.name].ok     # rewritten: redone
    from pointseg.segmenter import Segmenter

    labels = np.asarray(Image.open(out / f"{changed.stem}.png"))
    assert (labels == Segmenter.load(model_path).predict(rgb[::-1, ::-1])).all()   # the new pixels' labels
    assert all(r.resumed for r in _run(model_path, [kept, changed], out).values())


def test_zarr_fingerprint_follows_metadata_and_chunks(tmp_path):
    path = tmp_path / "a.zarr"
    array = zarr.open_array(store=lazyio.zarr_store(str(path), read_only=False), mode="w", shape=(64, 64, 3),
                            chunks=(32, 32, 3), dtype="u1")
    array[:] = 7
    before = fingerprint(str(path))
    assert before["digest"] == "zarr-listing" and unchanged(str(path), before)
    array.attrs["note"] = "x"                              # metadata changed: another digest
    assert not unchanged(str(path), before)
    again = fingerprint(str(path))
    array[:32, :32] = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)  # a chunk rewritten
    assert not unchanged(str(path), again)


def test_older_manifest_entries_without_a_digest_are_redone(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    fp = fingerprint(str(f))
    assert fp["sha256"] and unchanged(str(f), fp)
    assert not unchanged(str(f), {"size": fp["size"], "mtime": fp["mtime"]})

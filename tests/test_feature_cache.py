"""FeatureCache's disk layer: bounded, never fatal when the disk fails, and clean after a crash."""
from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from pointseg import FeatureCache, FeatureMap


def feature_map(key: str, channels: int = 8, cells: int = 32, seed: int = 0) -> FeatureMap:
    data = np.random.default_rng(seed).normal(size=(channels, cells, cells)).astype(np.float32)
    return FeatureMap(data=data, image_size=(cells * 4, cells * 4), extent=(cells * 4, cells * 4), key=key,
                      extractor_id="test")


def npz_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.npz"))


def test_disk_layer_stays_within_its_bound_dropping_the_least_recently_used(tmp_path):
    one = FeatureCache(max_bytes=0, disk_dir=tmp_path)
    one.put(feature_map("probe"))
    size = npz_bytes(tmp_path)
    (tmp_path / "probe.npz").unlink()
    cache = FeatureCache(max_bytes=0, disk_dir=tmp_path, max_disk_bytes=int(size * 3.5))
    for i in range(3):
        cache.put(feature_map(f"k{i}", seed=i))
        time.sleep(0.02)  # distinct modification times
    assert cache.get("k0") is not None  # read: k0 is now the most recently used
    time.sleep(0.02)
    cache.put(feature_map("k3", seed=3))
    names = sorted(p.stem for p in tmp_path.glob("*.npz"))
    assert names == ["k0", "k2", "k3"] and npz_bytes(tmp_path) <= cache.max_disk_bytes
    # a new cache on the same folder counts what is there and keeps the bound
    reopened = FeatureCache(max_bytes=0, disk_dir=tmp_path, max_disk_bytes=int(size * 1.5))
    assert len(list(tmp_path.glob("*.npz"))) == 1 and reopened.disk_bytes == npz_bytes(tmp_path)


def test_default_bound_comes_from_the_limits_table(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSEG_FEATURE_CACHE_MB", "2")
    assert FeatureCache(disk_dir=tmp_path).max_disk_bytes == 2 * 1024 * 1024
    # a map larger than the whole budget is not written at all
    cache = FeatureCache(disk_dir=tmp_path, max_disk_bytes=1000)
    cache.put(feature_map("big"))
    assert not list(tmp_path.glob("*.npz")) and cache.get("big") is not None  # still served from memory


def test_a_failed_write_keeps_the_features_in_memory(tmp_path):
    blocker = tmp_path / "features"
    blocker.write_text("a file where the cache folder should be")
    cache = FeatureCache(disk_dir=blocker)
    fmap = feature_map("k")
    cache.put(fmap)  # does not raise
    assert cache.disk_errors == 1 and cache.get("k") is fmap


def test_extraction_survives_a_full_disk_and_leaves_no_temporary_files(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "full"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        from pointseg.features import FeatureExtractor

        cache = FeatureCache(disk_dir=disk)
        extractor = FeatureExtractor("efficientnet_lite0", precision="fp32", cache=cache, features="deep")
        image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        fmap = extractor.extract(image)
        assert fmap.data.shape[0] == extractor.channels and cache.disk_errors == 1
        assert extractor.extract(image) is fmap  # from memory
        assert [p.name for p in disk.iterdir()] == []
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_opening_removes_temporary_files_of_writers_that_are_gone(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"abc.{dead.pid}.1.tmp"
    stale.write_bytes(b"")
    old = tmp_path / "def.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    live = tmp_path / f"ghi.{os.getppid()}.1.tmp"  # a running writer's file, fresh: kept
    live.write_bytes(b"")
    FeatureCache(disk_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def _mapping_rss_kb(directory) -> int:
    """Resident kB of this process's mappings of (deleted) files in ``directory``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = str(directory) in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_a_paged_map_is_written_piece_by_piece_into_the_same_npz(tmp_path, monkeypatch):
    """The disk layer writes a memory-mapped deep map in pieces, dropping each piece's pages as it goes
    (np.savez faulted the whole map in first): at most one piece is resident at any time, and the file is
    what np.savez writes, read back equal."""
    import pointseg.features as features

    data = features.paged_array((6, 512, 1024), np.float16, tmp_path)       # 6 MB
    data[:] = np.random.default_rng(0).normal(size=data.shape).astype(np.float16)
    features.release_pages(data)
    resident = []
    release = features.release_pages

    def measured(array):
        resident.append(_mapping_rss_kb(tmp_path))
        release(array)

    monkeypatch.setattr(features, "release_pages", measured)
    rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    with open(tmp_path / "mine.npz", "wb") as fh:
        features._savez_paged(fh, chunk=1 << 20, data=data, rgb=rgb, image_size=np.array((2048, 4096)))
    assert len(resident) == 6 and max(resident) <= 1024 + 64                 # one 1 MB piece (+ fault-around)
    np.savez(tmp_path / "numpy.npz", data=np.asarray(data), rgb=rgb, image_size=np.array((2048, 4096)))
    with np.load(tmp_path / "mine.npz") as mine, np.load(tmp_path / "numpy.npz") as ref:
        assert sorted(mine.files) == sorted(ref.files)
        for name in ref.files:
            assert mine[name].dtype == ref[name].dtype
            np.testing.assert_array_equal(mine[name], ref[name])

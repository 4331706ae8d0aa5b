"""Input expansion and output names: nothing a batch writes may overwrite another image's result (#14 item 4)."""

import subprocess
import sys

import numpy as np
from PIL import Image

from batchkit import summary, write_images
from pointseg.batch.inputs import expand_inputs, unique_stems


def test_names_keep_the_relative_path_and_never_collide(tmp_path):
    for folder in ("d1", "d2"):
        write_images(tmp_path / folder, 1, suffix=".jpg")
    Image.open(tmp_path / "d1" / "img000.jpg").save(tmp_path / "d1" / "img000.png")
    write_images(tmp_path / "d1" / "sub", 1)
    items = expand_inputs([tmp_path / "d1", tmp_path / "d2"], recursive=True)
    assert [i.name for i in items] == ["d1/img000.jpg", "d1/img000.png", "d1/sub/img000.png", "d2/img000.jpg"]
    assert [i.stem for i in items] == ["d1/img000_jpg", "d1/img000_png", "d1/sub/img000", "d2/img000"]
    assert [i.name for i in expand_inputs([tmp_path / "d1"])] == ["img000.jpg", "img000.png"]  # no --recursive
    assert unique_stems(["a/x.png", "b/x.png", "a/x.png"]) == ["a/x", "b/x", "a/x-2"]


def test_globs_and_list_files(tmp_path):
    write_images(tmp_path / "a", 3)
    (tmp_path / "list.txt").write_text(f"# parts\n{tmp_path / 'a' / 'img002.png'}\n{tmp_path / 'a' / 'img000.png'}\n")
    assert [i.name for i in expand_inputs([str(tmp_path / "a" / "img00[01].png")])] == ["img000.png", "img001.png"]
    assert [i.location for i in expand_inputs([f"@{tmp_path / 'list.txt'}"])] == [
        str(tmp_path / "a" / "img002.png"), str(tmp_path / "a" / "img000.png")]


def test_cli_writes_one_result_per_input_for_same_named_images(model_path, tmp_path):
    write_images(tmp_path / "d1", 1, suffix=".jpg")
    write_images(tmp_path / "d2", 1, start=200, suffix=".jpg")
    Image.fromarray(np.asarray(Image.open(tmp_path / "d1" / "img000.jpg"))[:, ::-1]).save(tmp_path / "d1" / "img000.png")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pointseg.cli", "predict", str(model_path), str(tmp_path / "d1"),
                             str(tmp_path / "d2"), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = summary(out / "summary.csv")
    assert [r["image"] for r in rows] == ["d1/img000.jpg", "d1/img000.png", "d2/img000.jpg"]
    labels = [r["labels"] for r in rows]
    assert len(set(labels)) == 3 and all((out / name).is_file() for name in labels)
    # the mirrored image's labels are the mirror of the original's: each file holds its own image's result
    a, b = (np.array(Image.open(out / name)) for name in labels[:2])
    assert (a[:, ::-1] == b).mean() > 0.95 and (a != b).mean() > 0.2

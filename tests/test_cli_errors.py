"""Every CLI user error, run as a user runs it: one line on stderr, exit code 2, no traceback, no work wasted.

Disk faults use a real tiny tmpfs (full, or remounted read-only) where the tests run as root; elsewhere
those tests skip and say why.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from modelkit import train_small_model
from synthetic import points_from_truth, two_texture_image

sys.path.append(str(Path(__file__).parent / "evaluation"))


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    image, truth = two_texture_image(h=96, w=128)
    Image.fromarray(image).save(root / "part.png")
    pts = [[float(x), float(y), int(c)] for x, y, c in points_from_truth(truth, 4)]
    (root / "ann.json").write_text(json.dumps({"classes": ["left", "right", "disc"],
                                               "images": [{"path": "part.png", "points": pts}]}))
    train_small_model(root / "m.pointseg")
    (root / "a_file").write_text("not a folder")
    return root


def test_predict_output_that_is_a_file_or_below_a_file(project):
    assert_one_line_error(run("predict", project / "m.pointseg", project / "part.png", "-o", project / "a_file"),
                          "is a file; give a folder")
    assert_one_line_error(run("predict", project / "m.pointseg", project / "part.png", "-o",
                              project / "a_file" / "sub"), "cannot create the folder")


def test_train_output_is_checked_before_training(project):
    for target, fragment in ((project, "is a folder; give a file name"),
                             (Path("/proc/version"), "cannot write in /proc")):
        if not target.exists():
            continue
        result = run("train", project / "ann.json", "-o", target)
        assert_one_line_error(result, fragment)
        assert "training report" not in result.stdout  # refused before the features were computed


def test_bad_annotation_files_in_train(project, tmp_path):
    """The CLI applies the same validation and limits to annotation files as the server to its bodies."""
    (tmp_path / "null.json").write_text(json.dumps({"classes": ["a", "b"], "images": [
        {"path": "x.png"}, {"path": "y.png", "points": None}]}))
    assert_one_line_error(run("train", tmp_path / "null.json", "-o", tmp_path / "m.pointseg"),
                          "null.json: images[1].points: expected a list")
    (tmp_path / "deep.json").write_text("[" * 200_000)
    assert_one_line_error(run("train", tmp_path / "deep.json", "-o", tmp_path / "m.pointseg"), "too deeply")
    assert_one_line_error(run("train", tmp_path, "-o", tmp_path / "m.pointseg"), "is a folder")


def test_outputs_get_the_mode_the_umask_gives(project, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o022); from pointseg.cli import main; "
         "sys.argv = ['pointseg', *sys.argv[1:]]; main()", "predict", str(project / "m.pointseg"),
         str(project / "part.png"), "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert {"part.png", "summary.csv"} <= set(modes) and set(modes.values()) == {0o644}, modes


def test_demo_output_that_is_a_file(project):
    assert_one_line_error(run("demo", "-o", project / "a_file"), "is a file; give a folder")


def test_usage_errors_are_one_line_too(project):
    assert_one_line_error(run("serve", project / "srv", "--port", "70000"), "--port", "65535")
    assert_one_line_error(run("predict", project / "m.pointseg"), "Missing", "--help")
    assert_one_line_error(run("info", "--bogus"), "No such option: --bogus")


def test_evaluate_with_a_bad_option_value(tmp_path):
    from eval_helpers import make_dataset

    make_dataset(tmp_path / "ds", n=4)
    result = run("evaluate", tmp_path / "ds", "-m", "default:C=abc", "--seeds", "0", "-k", "1", "--test", "1")
    assert_one_line_error(result, "C must be a positive number, got 'abc'")


def test_bomb_png_in_predict_is_refused_from_its_header(project, tmp_path):
    from test_limits import bomb_png

    (tmp_path / "bomb.png").write_bytes(bomb_png(30000, 30000))
    result = run("predict", project / "m.pointseg", tmp_path / "bomb.png", "-o", tmp_path / "out")
    assert "Traceback" not in result.stderr
    assert "skipped" in result.stderr and "POINTSEG_MAX_PIXELS" in result.stderr
    assert "error" in (tmp_path / "out" / "summary.csv").read_text()


# ----------------------------------------------------------------------------------------- disk faults
@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m", read_only: bool = False, fill_to_kib: int | None = None,
          prepare=None):
    """A real small file system at ``where``: ``read_only`` (after ``prepare(where)``), or nearly full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the disk-fault tests run where CI is root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        if fill_to_kib is not None:
            (where / "filler").write_bytes(b"\0" * (fill_to_kib * 1024))
        if prepare is not None:
            prepare(where)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".pointseg"))


def test_full_disk_for_predict_and_train(project, tmp_path):
    with tmpfs(tmp_path / "full", size="64k", fill_to_kib=58) as disk:
        result = run("predict", project / "m.pointseg", project / "part.png", "-o", disk / "out",
                     "--overlay", "--probabilities", "npy")
        assert_one_line_error(result, "No space left on device", "free some disk space")
        result = run("train", project / "ann.json", "-o", disk / "m.pointseg")
        assert_one_line_error(result, "No space left on device")
        assert leftovers(disk) == [] and not (disk / "m.pointseg").exists()
        # whatever was written is whole: every label PNG present opens
        for png in (disk / "out").glob("*.png"):
            Image.open(png).load()


def _make_project(disk: Path) -> None:
    from pointseg.server.store import ProjectStore

    ProjectStore(disk / "project").close()


def test_read_only_disk_for_predict_train_and_serve(project, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True, prepare=_make_project) as disk:
        assert_one_line_error(run("predict", project / "m.pointseg", project / "part.png", "-o", disk / "out"),
                              "Read-only file system")
        result = run("train", project / "ann.json", "-o", disk / "m.pointseg")
        assert_one_line_error(result, "read-only")
        assert "training report" not in result.stdout
        assert_one_line_error(run("serve", disk / "project"), "cannot open the project", "writable")

"""predict_many without a cluster: no Dask import, the cancel hook, Ctrl+C in the CLI, the missing extra."""

import signal
import subprocess
import sys
import textwrap
import time

from batchkit import summary, write_images


def test_in_process_run_imports_no_dask_and_cancel_stops_it(model_path, tmp_path):
    inputs = write_images(tmp_path / "in", 4)
    code = textwrap.dedent(f"""
        import sys
        from pointseg.batch import predict_many
        seen = []
        results = list(predict_many({str(model_path)!r}, {[str(p) for p in inputs]!r}, {str(tmp_path / 'out')!r},
                                    cancel=lambda: len(seen) >= 2, on_done=seen.append))
        print(len(results), 'distributed' in sys.modules, 'dask' in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False", "False"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["img000.png", "img001.png"]


def test_ctrl_c_cancels_cleanly_and_resume_finishes(model_path, tmp_path):
    write_images(tmp_path / "in", 24)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "pointseg.cli", "predict", str(model_path), str(tmp_path / "in"),
                                "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list(out.glob("img*.png"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "cancelled after" in stderr and "--resume" in stderr and "Traceback" not in stderr
    result = subprocess.run([sys.executable, "-m", "pointseg.cli", "predict", str(model_path), str(tmp_path / "in"),
                             "-o", str(out), "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr and "from the earlier run" in result.stderr
    assert [r["image"] for r in summary(out / "summary.csv")] == [f"img{i:03d}.png" for i in range(24)]


def test_missing_distributed_extra_is_one_line_naming_it(model_path, tmp_path):
    write_images(tmp_path / "in", 1)
    code = ("import sys; sys.modules['distributed'] = None; sys.argv = ['pointseg', 'predict', "
            f"{str(model_path)!r}, {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'out')!r}, '--workers', '2']; "
            "from pointseg.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert 'pip install "pointseg[distributed]"' in result.stderr and "Traceback" not in result.stderr

import json

import typer
from typer.testing import CliRunner

from pointseg.evaluation.command import evaluate_command

app = typer.Typer()
app.command("evaluate")(evaluate_command)
app.command("noop")(lambda: None)          # two commands, so "evaluate" is addressed by name as in pointseg


def test_evaluate_command_writes_json_csv_and_plot(synth_dir, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(app, [
        "evaluate", str(synth_dir), "--method", "skimage-rf:n_jobs=1", "--protocol", "both", "--seeds", "0,1",
        "--train-images", "2", "--test", "2", "--clicks", "1,2", "--budget", "3", "--transfer-at", "all",
        "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--plot", str(out / "r.png"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "Corrective clicks" in r.output and "Random clicks" in r.output
    data = json.loads((out / "r.json").read_text())
    assert data["config"]["seeds"] == [0, 1] and data["config"]["transfer_at"] is None
    assert {run["protocol"] for run in data["runs"]} == {"random", "corrective"}
    assert (out / "r.csv").stat().st_size > 0 and (out / "r.png").stat().st_size > 0


def test_evaluate_command_reports_bad_input_in_one_line(synth_dir, tmp_path):
    r = CliRunner().invoke(app, ["evaluate", str(synth_dir), "-m", "skimage-rf", "--protocol", "sideways"])
    assert r.exit_code == 2 and "sideways" in r.output and "corrective" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nope"), "-m", "skimage-rf"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(synth_dir), "-m", "skimage-rf", "--seeds", "a,b"])
    assert r.exit_code == 2 and "not an integer" in r.output

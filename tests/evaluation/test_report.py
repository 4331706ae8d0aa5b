import csv
import json

from rich.console import Console

from eval_helpers import ConstantMethod, OracleMethod
from pointseg.evaluation.report import markdown_tables, plot_curves, print_tables, write_csv, write_json
from pointseg.evaluation.runner import EvalConfig, evaluate


def _results(synth):
    cfg = EvalConfig(seeds=(0, 1), train_images=2, test=2, clicks=(1, 3), budget=5, transfer_at=(3, 5),
                     report_at=(3, 5))
    return evaluate(synth, [OracleMethod(synth), ConstantMethod()], cfg)


def test_json_csv_table_and_markdown(synth, tmp_path):
    res = _results(synth)
    data = json.loads(write_json(res, tmp_path / "r.json").read_text())   # strict JSON: no NaN
    assert data["summary"]["corrective"]["constant"]["noc"]["90"]["mean"] == 5.0
    rows = list(csv.DictReader(open(write_csv(res, tmp_path / "r.csv"))))
    noc = [r for r in rows if r["metric"] == "noc@85" and r["method"] == "oracle" and r["seed"] == "mean"]
    assert len(noc) == 1 and float(noc[0]["value"]) == 2.0
    fg = [r for r in rows if r["metric"] == "fg_iou" and r["method"] == "constant" and r["seed"] == "0"]
    assert fg and all(float(r["value"]) == 0.0 for r in fg)
    console = Console(record=True, width=160)
    print_tables(res, console)
    text = console.export_text()
    assert "oracle" in text and "constant" in text and "NoC@85" in text and "defect IoU" in text
    md = markdown_tables(res)
    assert "| oracle | interactive | 1.000 / 1.000 | 1.000 / 1.000 | 2.00 ±0.00 |" in md.replace("  ", " ")


def test_plot_is_a_small_png_with_one_line_per_method(synth, tmp_path):
    res = _results(synth)
    path = plot_curves(res, tmp_path / "p.png")
    head = path.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000

"""``pointseg evaluate --protocol folder`` on a folder whose answer is known: the held-out images are of a
kind only two folder images show, so an order that finds those two must beat a random one."""
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pointseg.decision import DEFAULT_RANKING
from pointseg.evaluation.command import evaluate_command, folder_orders

app = typer.Typer()
app.command("evaluate")(evaluate_command)
app.command("noop")(lambda: None)

#: held out (evenly spaced over 14 stems with --test 3: im00, im06, im13) and two folder images: kind B
KIND_B = {"im00", "im06", "im13", "im03", "im09"}
FOLDER_B = {"im03", "im09"}


def make_two_kind_folder(root: Path) -> Path:
    """Kind A: a bright square (defect) on a dark flat background. Kind B: a black square (the same defect
    class) on a striped mid-grey background. A model that has seen only A cannot find B's defects."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(14):
        stem = f"im{i:02d}"
        rng = np.random.default_rng(i)
        mask = np.zeros((64, 80), np.uint8)
        top, left = 8 + 3 * (i % 5), 10 + 4 * (i % 6)
        mask[top:top + 16, left:left + 18] = 1
        if stem in KIND_B:
            img = np.where(mask == 1, 0.0, 120 + 25 * (np.sin(np.arange(80) / 2.0)[None, :] > 0))
        else:
            img = np.where(mask == 1, 200.0, 40.0)
        img = np.clip(img + rng.normal(0, 3, (64, 80)), 0, 255).astype(np.uint8)
        Image.fromarray(np.repeat(img[..., None], 3, 2)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "classes.json").write_text(json.dumps({"0": "normal", "1": "defect"}))
    return root


def _seeds_starting_on_kind_a(folder: list[str], n: int) -> list[int]:
    """Seeds whose first image (drawn as run_folder draws it) is of kind A, so the orders can differ."""
    out, seed = [], 0
    while len(out) < n:
        first = folder[int(np.random.default_rng([seed, 17]).integers(len(folder)))]
        if first not in KIND_B:
            out.append(seed)
        seed += 1
    return out


def test_folder_protocol_ranking_finds_the_images_the_held_out_set_needs(tmp_path):
    root = make_two_kind_folder(tmp_path / "ds")
    stems = sorted(p.stem for p in (root / "images").iterdir())
    folder = [s for s in stems if s not in {"im00", "im06", "im13"}]
    seeds = _seeds_starting_on_kind_a(folder, 3)
    out = tmp_path / "folder.json"
    r = CliRunner().invoke(app, [
        "evaluate", str(root), "-m", "efficientnet_lite0", "--protocol", "folder", "--order", "both",
        "--per-image", "3", "--budget", "6", "--test", "3", "--candidates", "0",
        "--seeds", ",".join(map(str, seeds)), "--json", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "| random |" in r.output and f"| {DEFAULT_RANKING} |" in r.output
    data = json.loads(out.read_text())
    result = data["methods"]["efficientnet_lite0"]
    assert data["protocol"] == "folder" and result["held_out"] == ["im00", "im06", "im13"]
    runs = {(run["seed"], run["order"]): run["curve"] for run in result["runs"]}
    # the ranking moves to a kind-B image every time (a random choice would, 2 times in 10)
    assert all(runs[(s, DEFAULT_RANKING)][1]["image"] in FOLDER_B for s in seeds)
    ranked = [runs[(s, DEFAULT_RANKING)][-1]["transfer"]["fg_iou"] for s in seeds]
    rand = [runs[(s, "random")][-1]["transfer"]["fg_iou"] for s in seeds]
    assert all(a >= b - 0.05 for a, b in zip(ranked, rand))
    summary = result["summary"]["orders"]
    assert summary[DEFAULT_RANKING]["fg_iou"]["6"]["mean"] > summary["random"]["fg_iou"]["6"]["mean"] + 0.1
    assert summary[DEFAULT_RANKING]["fg_iou"]["6"]["n"] == 3 and "clicks_vs_random" in summary[DEFAULT_RANKING]


def test_folder_orders_and_bad_options_are_one_line_errors(tmp_path):
    assert folder_orders("both") == ("random", DEFAULT_RANKING)
    assert folder_orders("random,margin,ranking") == ("random", "margin", DEFAULT_RANKING)
    root = make_two_kind_folder(tmp_path / "ds")
    r = CliRunner().invoke(app, ["evaluate", str(root), "--protocol", "folder", "--order", "sideways"])
    assert r.exit_code == 2 and "sideways" in r.output and "ranking" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(root), "--protocol", "folder", "--per-image", "9", "--budget", "3"])
    assert r.exit_code == 2 and "--per-image" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(root), "--protocol", "folder", "-m", "skimage-rf"])
    assert r.exit_code == 2 and "folder protocol needs" in r.output

"""The built-in example: a stained tissue section that ships inside scikit-image, labelled from 24 clicks.

It needs no download and no data of the user's, so it is the first thing to run after installing, and it
shows the whole job: train on clicks, report, predict, write a mask, an overlay and a summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: (x, y, class) clicks on skimage.data.immunohistochemistry(): 0 = empty slide, 1 = stroma, 2 = stained gland
DEMO_CLASSES = ["empty", "stroma", "gland"]
DEMO_COLORS = ["#8c8c8c", "#1f77b4", "#d62728"]
DEMO_POINTS = np.array([
    [20, 340, 0], [15, 420, 0], [25, 300, 0], [75, 6, 0], [30, 460, 0], [455, 412, 0],
    [200, 280, 1], [180, 380, 1], [230, 450, 1], [470, 300, 1], [480, 150, 1], [420, 420, 1],
    [150, 250, 1], [230, 330, 1], [400, 330, 1],
    [100, 100, 2], [200, 150, 2], [60, 200, 2], [380, 200, 2], [330, 60, 2], [320, 380, 2],
    [90, 400, 2], [100, 470, 2], [400, 100, 2],
], dtype=np.float64)


def demo_image() -> np.ndarray:
    from skimage import data

    return data.immunohistochemistry()


def run_demo(out_dir: str | Path, backbone: str | None = None, weights=None) -> dict:
    """Train on the demo clicks, predict the image, write outputs; returns paths and the report."""
    from pointseg.outputs import save_label_png, save_overlay, summarize, write_summary_csv
    from pointseg.presets import DEFAULT_BACKBONE
    from pointseg.segmenter import Segmenter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = demo_image()
    seg = Segmenter(backbone or DEFAULT_BACKBONE, DEMO_CLASSES, colors=DEMO_COLORS, weights=weights)
    seg.fit([image], [DEMO_POINTS])
    labels = seg.predict(image)
    paths = {
        "mask": out / "demo_labels.png",
        "overlay": out / "demo_overlay.png",
        "clicks": out / "demo_clicks.png",
        "report": out / "demo_report.json",
        "summary": out / "summary.csv",
        "model": out / "demo.pointseg",
    }
    save_label_png(labels, seg.colors_, paths["mask"])
    save_overlay(image, labels, seg.colors_, paths["overlay"])
    _save_clicks(image, paths["clicks"])
    write_summary_csv([{"image": "immunohistochemistry", **summarize(labels, seg.classes_)}], paths["summary"])
    report = seg.training_report_.as_dict()
    paths["report"].write_text(json.dumps(report, indent=2))
    seg.save(paths["model"])
    return {"paths": paths, "report": seg.training_report_, "labels": labels}


def _save_clicks(image: np.ndarray, path: Path) -> None:
    from PIL import Image, ImageDraw

    from pointseg.annotations import parse_color

    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    for x, y, c in DEMO_POINTS:
        color = parse_color(DEMO_COLORS[int(c)])
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=color, outline=(0, 0, 0), width=2)
    img.save(path)

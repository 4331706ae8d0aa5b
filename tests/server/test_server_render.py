"""Encodings sent to the browser and the "suggest where to click" picker."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pointseg.server.render import label_png, proba_png, suggest_clicks, uncertainty_png


def test_label_png_is_a_palette_image_of_the_class_indices():
    labels = np.zeros((60, 80), np.int64)
    labels[:, 40:] = 1
    labels[10:20, 10:20] = 2
    im = Image.open(io.BytesIO(label_png(labels, ["#112233", "#445566", "#778899"])))
    assert im.mode == "P" and im.size == (80, 60)
    assert (np.asarray(im) == labels).all()
    assert im.getpalette()[:9] == [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]


def test_probability_and_uncertainty_views_carry_opacity():
    p = np.linspace(0, 1, 100, dtype=np.float32)[None, :].repeat(10, 0)
    im = Image.open(io.BytesIO(proba_png(p, "#ff0000"))).convert("RGBA")
    alpha = np.asarray(im)[..., 3]
    assert alpha[:, 0].max() == 0 and alpha[:, -1].min() > 200      # opacity follows the probability
    im = Image.open(io.BytesIO(uncertainty_png(p * 0.5, 2))).convert("RGBA")
    assert np.asarray(im)[0, -1, 3] > 200                            # 0.5 is the most uncertain for 2 classes


def test_suggestions_find_the_uncertain_regions_and_skip_marked_ones():
    u = np.zeros((480, 640), np.float32)
    u[100:140, 500:540] = 0.5            # region A
    u[300:340, 100:140] = 0.45           # region B
    u[400:440, 300:340] = 0.4            # region C, already clicked
    picks = suggest_clicks(u, n=5, avoid=[(320, 420)])
    assert len(picks) == 2                                    # C is skipped, nothing else is uncertain
    (a, b) = picks
    assert 480 <= a["x"] <= 560 and 80 <= a["y"] <= 160 and a["score"] >= b["score"]
    assert 80 <= b["x"] <= 160 and 280 <= b["y"] <= 360
    assert suggest_clicks(np.zeros((100, 100), np.float32)) == []   # confident everywhere: no suggestion

"""What a prediction turns into on disk: label PNGs, overlays, probabilities and a summary table.

Label PNGs are palette images whose pixel values are class indices and whose palette holds the class colours,
so they open as coloured masks in any viewer and as class ids in any script.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pointseg.annotations import atomic_write_bytes, parse_color
from pointseg.errors import PointsegError


def palette_image(labels: np.ndarray, colors: list[str]) -> Image.Image:
    if labels.max(initial=0) > 255:
        raise PointsegError("label PNGs hold at most 256 classes")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [v for c in colors for v in parse_color(c)]
    img.putpalette(palette + [0] * (768 - len(palette)))
    return img


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_label_png(labels: np.ndarray, colors: list[str], path: str | os.PathLike) -> None:
    atomic_write_bytes(Path(path), encode_png(palette_image(labels, colors), compress_level=6))


def overlay(image: np.ndarray, labels: np.ndarray, colors: list[str], alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over the image (``H x W x 3`` uint8)."""
    lut = np.array([parse_color(c) for c in colors], dtype=np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + lut[labels] * alpha
    return np.clip(blended, 0, 255).astype(np.uint8)


def save_overlay(image: np.ndarray, labels: np.ndarray, colors: list[str], path: str | os.PathLike,
                 alpha: float = 0.45) -> None:
    atomic_write_bytes(Path(path), encode_png(Image.fromarray(overlay(image, labels, colors, alpha)), 6))


def save_probabilities(proba: np.ndarray, path: str | os.PathLike) -> None:
    """Probabilities ``(K, H, W)`` as float16, ``.npy`` or ``.tif`` by the file's suffix."""
    path = Path(path)
    data = proba.astype(np.float16)
    buffer = io.BytesIO()
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(buffer, data, photometric="minisblack", compression="zlib")
    elif path.suffix.lower() == ".npy":
        np.save(buffer, data)
    else:
        raise PointsegError(f"probabilities go to .npy or .tif files, not {path.suffix!r}")
    atomic_write_bytes(path, buffer.getvalue())


def summarize(labels: np.ndarray, classes: list[str], ng_area: float | None = None, background: int = 0,
              decision=None) -> dict:
    """Per-image row: fraction of each class, connected regions of each finding class, OK/NG.

    ``background`` is the good class (background, normal surface); every other class counts as a finding.
    Regions use 8-connectivity, so a diagonal crack counts once. The OK/NG ``status`` comes from
    ``ng_area`` (NG when more than that fraction of the image is findings) when given, else from
    ``decision`` (a :class:`pointseg.decision.Decision`: the model's learned rule, with its ``ng_score`` and
    ``ng_threshold`` columns).
    """
    from pointseg.regions import connected_regions

    total = labels.size
    row: dict = {}
    for k, name in enumerate(classes):
        row[f"fraction_{name}"] = round(float((labels == k).sum()) / total, 6)
    for k, name in enumerate(classes):
        if k == background:
            continue
        row[f"regions_{name}"] = connected_regions(labels == k).count
    if ng_area is not None:
        defect_fraction = 1.0 - row[f"fraction_{classes[background]}"]
        row["status"] = "NG" if defect_fraction > ng_area else "OK"
    elif decision is not None:
        row["status"] = decision.status
        row["ng_score"] = round(float(decision.score), 6)
        row["ng_threshold"] = round(float(decision.threshold), 6)
    return row


def write_summary_csv(rows: list[dict], path: str | os.PathLike) -> None:
    if not rows:
        return
    fields = list(rows[0].keys())
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buffer.getvalue().encode("utf-8"))

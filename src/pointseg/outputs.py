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


def label_png_bytes(labels: np.ndarray, colors: list[str]) -> bytes:
    return encode_png(palette_image(labels, colors), compress_level=6)


def save_label_png(labels: np.ndarray, colors: list[str], path: str | os.PathLike) -> None:
    atomic_write_bytes(Path(path), label_png_bytes(labels, colors))


def overlay(image: np.ndarray, labels: np.ndarray, colors: list[str], alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over the image (``H x W x 3`` uint8)."""
    lut = np.array([parse_color(c) for c in colors], dtype=np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + lut[labels] * alpha
    return np.clip(blended, 0, 255).astype(np.uint8)


def overlay_png_bytes(image: np.ndarray, labels: np.ndarray, colors: list[str], alpha: float = 0.45) -> bytes:
    return encode_png(Image.fromarray(overlay(image, labels, colors, alpha)), 6)


def save_overlay(image: np.ndarray, labels: np.ndarray, colors: list[str], path: str | os.PathLike,
                 alpha: float = 0.45) -> None:
    atomic_write_bytes(Path(path), overlay_png_bytes(image, labels, colors, alpha))


def probabilities_bytes(proba: np.ndarray, suffix: str) -> bytes:
    """Probabilities ``(K, H, W)`` as float16 in a ``.npy`` or ``.tif`` file's bytes."""
    data = proba.astype(np.float16)
    buffer = io.BytesIO()
    if suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(buffer, data, photometric="minisblack", compression="zlib")
    elif suffix.lower() == ".npy":
        np.save(buffer, data)
    else:
        raise PointsegError(f"probabilities go to .npy or .tif files, not {suffix!r}")
    return buffer.getvalue()


def save_probabilities(proba: np.ndarray, path: str | os.PathLike) -> None:
    """Probabilities ``(K, H, W)`` as float16, ``.npy`` or ``.tif`` by the file's suffix."""
    path = Path(path)
    atomic_write_bytes(path, probabilities_bytes(proba, path.suffix))


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

    pixels = np.bincount(labels.ravel(), minlength=len(classes))
    regions = [0 if k == background else connected_regions(labels == k).count for k in range(len(classes))]
    return summary_from_counts(pixels, regions, classes, ng_area, background, decision)


def summary_from_counts(pixels, regions, classes: list[str], ng_area: float | None = None, background: int = 0,
                        decision=None) -> dict:
    """The summary row from pixel counts and region counts per class (the background's is unused).

    Images predicted in tiles count pixels and regions per tile and merge them (:mod:`pointseg.batch`);
    both paths end here, so their rows agree.
    """
    total = int(sum(int(p) for p in pixels))
    row: dict = {}
    for k, name in enumerate(classes):
        row[f"fraction_{name}"] = round(float(int(pixels[k])) / total, 6)
    for k, name in enumerate(classes):
        if k != background:
            row[f"regions_{name}"] = int(regions[k])
    if ng_area is not None:
        defect_fraction = 1.0 - row[f"fraction_{classes[background]}"]
        row["status"] = "NG" if defect_fraction > ng_area else "OK"
    elif decision is not None:
        row["status"] = decision.status
        row["ng_score"] = round(float(decision.score), 6)
        row["ng_threshold"] = round(float(decision.threshold), 6)
    return row


def summary_csv_bytes(rows: list[dict]) -> bytes:
    """CSV of the rows; columns in order of first appearance (an error row may lack the measurements)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_summary_csv(rows: list[dict], path: str | os.PathLike) -> None:
    if not rows:
        return
    atomic_write_bytes(Path(path), summary_csv_bytes(rows))

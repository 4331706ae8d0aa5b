"""Points, scribbles and the JSON annotation file that carries them between tools.

File format (version 1)::

    {
      "version": 1,
      "classes": [{"name": "normal", "color": "#2ca02c"}, {"name": "defect", "color": "#d62728"}],
      "images": [
        {"path": "parts/p001.png",                       # relative to the JSON file, or absolute
         "points": [[120.5, 88, 0], [301, 40, "defect"]],   # [x, y, class]; class = index or name
         "scribbles": [{"class": 1, "width": 6, "points": [[10, 10], [60, 42], [90, 45]]}]},
        {"path": "parts/p002.png", "ok": true}               # defect-free: every pixel is background
      ]
    }

``x`` is the column and ``y`` the row, in pixels of that image (see :mod:`pointseg.sampling`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointseg.errors import AnnotationError
from pointseg.limits import (MAX_JSON_FILE_BYTES, MAX_POINTS_PER_FILE, MAX_SCRIBBLE_SAMPLES, MAX_SCRIBBLE_WIDTH,
                             max_points_per_file, max_scribble_samples, max_scribble_width, read_bounded)

FORMAT_VERSION = 1
#: a label PNG holds class indices 0..255
MAX_CLASSES = 256

#: colours for classes without one (tab10, starting with a calm green for the usual "normal" class)
DEFAULT_COLORS = (
    "#2ca02c", "#d62728", "#1f77b4", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def default_colors(n: int) -> list[str]:
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]


def parse_color(value: str, where: str = "color") -> tuple[int, int, int]:
    text = str(value).strip().lstrip("#")
    if len(text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise AnnotationError(f"{where}: {value!r} is not a colour; write it as '#rrggbb'")
    return tuple(int(text[i: i + 2], 16) for i in (0, 2, 4))


@dataclass
class Scribble:
    """A polyline of one class drawn with a brush ``width`` pixels wide."""

    label: int
    width: float
    points: np.ndarray  # (m, 2) [x, y]

    def as_dict(self) -> dict:
        return {"class": int(self.label), "width": float(self.width), "points": self.points.tolist()}


def rasterize_scribble(scribble: Scribble, spacing: float) -> np.ndarray:
    """Turn a scribble into points ``(n, 2)`` about ``spacing`` apart (one feature cell) along and across it.

    Sampling at the feature-cell pitch gives each covered cell roughly one vote, so a long scribble does
    not drown out the clicks of other classes while still teaching every cell it crosses.
    """
    pts = np.asarray(scribble.points, dtype=np.float64).reshape(-1, 2)
    half = max(scribble.width, 0.0) / 2.0
    if len(pts) == 1:
        segments = [(pts[0], pts[0])]
    else:
        segments = list(zip(pts[:-1], pts[1:]))
    # count before allocating: a long, wide brush could otherwise ask for billions of samples
    across = int(2 * half // spacing) + 1 if half >= spacing / 2 else 1
    along = sum(max(1, int(np.ceil(np.hypot(*(b - a)) / spacing))) + 1 for a, b in segments)
    limit = max_scribble_samples()
    if not np.isfinite(half) or along * across > limit:
        raise AnnotationError(
            f"a {scribble.width:g}-pixel-wide scribble of {len(pts)} points would give {along * across:,} training "
            f"samples, more than {limit:,}; draw it narrower or shorter, or set {MAX_SCRIBBLE_SAMPLES.env}"
        )
    offsets = np.arange(-half, half + 1e-9, spacing) if half >= spacing / 2 else np.zeros(1)
    offsets = offsets - (offsets.mean() if len(offsets) else 0.0)
    out = []
    for a, b in segments:
        d = b - a
        length = float(np.hypot(*d))
        steps = max(1, int(np.ceil(length / spacing)))
        t = np.linspace(0.0, 1.0, steps + 1)
        centre = a[None, :] + t[:, None] * d[None, :]
        normal = np.array([-d[1], d[0]]) / length if length > 0 else np.array([0.0, 0.0])
        for off in offsets:
            out.append(centre + off * normal[None, :])
    points = np.concatenate(out, axis=0)
    # drop near-duplicates at segment joints
    keys = np.round(points / (spacing / 2)).astype(np.int64)
    _, unique = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(unique)]


def validate_points(points, n_classes: int, image_size: tuple[int, int], where: str = "points") -> np.ndarray:
    """Return points as ``(n, 3)`` float64 [x, y, class] or raise an :class:`AnnotationError` naming the entry."""
    arr = np.asarray(points if points is not None else np.zeros((0, 3)), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise AnnotationError(f"{where}: expected an (n, 3) array of [x, y, class], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{where}: contains NaN or infinite values")
    h, w = image_size
    for i, (x, y, c) in enumerate(arr):
        if not (0 <= x < w and 0 <= y < h):
            raise AnnotationError(
                f"{where}[{i}]: point ({x:g}, {y:g}) lies outside the {w}x{h} image "
                f"(x must be in [0, {w}), y in [0, {h}))"
            )
        if c != int(c) or not 0 <= c < n_classes:
            raise AnnotationError(
                f"{where}[{i}]: class {c:g} is out of range; there are {n_classes} classes (0..{n_classes - 1})"
            )
    return arr


def validate_scribbles(scribbles, n_classes: int, image_size: tuple[int, int],
                       where: str = "scribbles") -> list[Scribble]:
    out = []
    for i, s in enumerate(scribbles or []):
        here = f"{where}[{i}]"
        if isinstance(s, Scribble):
            label, width, pts = s.label, s.width, s.points
        elif isinstance(s, dict):
            missing = {"class", "points"} - set(s)
            if missing:
                raise AnnotationError(f"{here}: missing {', '.join(sorted(missing))}; a scribble needs class, width, points")
            label, width, pts = s["class"], s.get("width", 1.0), s["points"]
        else:
            raise AnnotationError(f"{here}: expected an object with class, width and points")
        try:
            width = float(width)
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise AnnotationError(f"{here}: points must be a list of [x, y] pairs and width a number") from None
        if len(pts) == 0:
            raise AnnotationError(f"{here}: has no points")
        _check_width(width, here)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise AnnotationError(f"{here}: class must be a class index, got {label!r}")
        validate_points(np.column_stack([pts, np.full(len(pts), label)]), n_classes, image_size,
                        where=f"{here}.points")
        out.append(Scribble(int(label), width, pts))
    return out


def _check_width(width: float, where: str) -> None:
    limit = max_scribble_width()
    if not (np.isfinite(width) and 0 < width <= limit):
        raise AnnotationError(f"{where}: width {width:g} must be a number of pixels in (0, {limit}] "
                              f"(set {MAX_SCRIBBLE_WIDTH.env} for wider brushes)")


@dataclass
class ImageAnnotation:
    path: Path
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    scribbles: list[Scribble] = field(default_factory=list)
    ok: bool = False  # marked defect-free: every pixel is background (``"ok": true`` in the JSON)


@dataclass
class AnnotationSet:
    """Classes plus per-image points and scribbles: what ``pointseg train`` reads."""

    classes: list[str]
    colors: list[str]
    images: list[ImageAnnotation]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnnotationSet":
        """Read and validate an annotation file; every problem is one :class:`AnnotationError` line."""
        path = Path(path)
        if path.is_dir():
            raise AnnotationError(f"{path} is a folder; give the annotation JSON file inside it")
        try:
            text = read_bounded(path, MAX_JSON_FILE_BYTES, "an annotation file", AnnotationError).decode("utf-8")
            raw = json.loads(text)
        except FileNotFoundError:
            raise AnnotationError(f"annotation file not found: {path}") from None
        except OSError as exc:
            raise AnnotationError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AnnotationError(f"{path.name} is not UTF-8 text; save it as UTF-8 JSON") from None
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path.name} is not valid JSON: {exc}") from None
        except RecursionError:
            raise AnnotationError(f"{path.name} nests lists or objects too deeply to be an annotation file") from None
        return cls.from_dict(raw, base_dir=path.parent, source=path.name)

    @classmethod
    def from_dict(cls, raw: dict, base_dir: Path = Path("."), source: str = "annotations") -> "AnnotationSet":
        """Validate a parsed annotation file (types, class names, sizes) and build the set.

        Errors name the entry (``ann.json: images[2].points[5]: …``). Positions are checked against each
        image's size later, when the image is read (:func:`validate_points`).
        """
        if not isinstance(raw, dict):
            raise AnnotationError(f"{source}: top level must be an object with 'classes' and 'images'")
        version = raw.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise AnnotationError(f"{source}: format version {_short(version)} is not supported (this pointseg reads {FORMAT_VERSION})")
        names, colors = _parse_classes(raw.get("classes"), source)
        images_raw = raw.get("images")
        if not isinstance(images_raw, list) or not images_raw:
            raise AnnotationError(f"{source}: 'images' must be a non-empty list of {{path, points, scribbles}}")
        budget = _PointBudget(source)
        images = []
        for i, entry in enumerate(images_raw):
            where = f"{source}: images[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
                raise AnnotationError(f"{where} needs a 'path' string")
            img_path = Path(entry["path"])
            if not img_path.is_absolute():
                img_path = base_dir / img_path
            points = _parse_points(entry.get("points", []), names, f"{where}.points", budget)
            scribbles = _parse_scribbles(entry.get("scribbles", []), names, f"{where}.scribbles", budget)
            images.append(ImageAnnotation(img_path, points, scribbles, _parse_ok(entry, where)))
        return cls(names, colors, images)

    def to_dict(self, base_dir: Path | None = None) -> dict:
        def rel(p: Path) -> str:
            if base_dir is not None:
                try:
                    return os.path.relpath(p, base_dir)
                except ValueError:
                    pass
            return str(p)

        return {
            "version": FORMAT_VERSION,
            "classes": [{"name": n, "color": c} for n, c in zip(self.classes, self.colors)],
            "images": [
                {
                    "path": rel(img.path),
                    "points": [[float(x), float(y), int(c)] for x, y, c in img.points],
                    "scribbles": [s.as_dict() if isinstance(s, Scribble) else s for s in img.scribbles],
                    **({"ok": True} if img.ok else {}),
                }
                for img in self.images
            ],
        }

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(base_dir=path.parent.resolve()), indent=2))


def _short(value) -> str:
    """A value quoted for an error line, cut short (a hostile file can hold megabytes in one value)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _is_xy(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and _is_number(value[0]) and _is_number(value[1])


def _parse_classes(classes_raw, source: str) -> tuple[list[str], list[str]]:
    if not isinstance(classes_raw, list) or len(classes_raw) < 2:
        raise AnnotationError(f"{source}: 'classes' must list at least two classes, e.g. [{{\"name\": \"normal\"}}, {{\"name\": \"defect\"}}]")
    if len(classes_raw) > MAX_CLASSES:
        raise AnnotationError(f"{source}: {len(classes_raw)} classes, more than the {MAX_CLASSES} a label PNG can hold")
    names, colors = [], []
    palette = default_colors(len(classes_raw))
    for i, c in enumerate(classes_raw):
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise AnnotationError(f"{source}: classes[{i}] needs a non-empty 'name'")
        if c["name"] in names:
            raise AnnotationError(f"{source}: classes[{i}] repeats the name {_short(c['name'])}; class names must be unique")
        names.append(c["name"])
        color = c.get("color", palette[i])
        if not isinstance(color, str):
            raise AnnotationError(f"{source}: classes[{i}].color: {_short(color)} is not a colour; write it as '#rrggbb'")
        parse_color(color, f"{source}: classes[{i}].color")
        colors.append(color)
    return names, colors


class _PointBudget:
    """Counts points (clicks and scribble vertices) over a whole file against :data:`MAX_POINTS_PER_FILE`,
    before they are parsed: a file of a million points is refused in milliseconds, not after minutes."""

    def __init__(self, source: str):
        self.source, self.limit, self.used = source, max_points_per_file(), 0

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise AnnotationError(f"{where}: the file has more than {self.limit:,} points (clicks and scribble "
                                  f"points together); split it, or set {MAX_POINTS_PER_FILE.env} to allow more")


def _class_index(label, names: list[str], where: str) -> int:
    if isinstance(label, str):
        if label not in names:
            raise AnnotationError(f"{where}: unknown class {_short(label)}; known: {', '.join(names)}")
        return names.index(label)
    if not _is_number(label) or label != int(label) or not 0 <= label < len(names):
        raise AnnotationError(f"{where}: class {_short(label)} is neither a class name nor an index 0..{len(names) - 1}")
    return int(label)


def _entry_list(value, where: str, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise AnnotationError(f"{where}: expected a list of {what}, got {_short(value)} (write [] for none)")
    return value


def _parse_points(raw, names: list[str], where: str, budget: _PointBudget) -> np.ndarray:
    raw = _entry_list(raw, where, "[x, y, class]")
    budget.take(len(raw), where)
    points = np.empty((len(raw), 3), dtype=np.float64)
    for j, p in enumerate(raw):
        if not isinstance(p, (list, tuple)) or len(p) != 3 or not (_is_number(p[0]) and _is_number(p[1])):
            raise AnnotationError(f"{where}[{j}]: expected [x, y, class] with numbers x, y, got {_short(p)}")
        points[j] = (p[0], p[1], _class_index(p[2], names, f"{where}[{j}]"))
    return points


def _parse_scribbles(raw, names: list[str], where: str, budget: _PointBudget) -> list[Scribble]:
    raw = _entry_list(raw, where, "{class, width, points}")
    scribbles = []
    for j, s in enumerate(raw):
        here = f"{where}[{j}]"
        if not isinstance(s, dict) or "class" not in s or "points" not in s:
            raise AnnotationError(f"{here}: expected an object with class, width and points")
        label = _class_index(s["class"], names, f"{here}.class")
        width = s.get("width", 1.0)
        if not _is_number(width):
            raise AnnotationError(f"{here}.width: expected a number of pixels, got {_short(width)}")
        _check_width(float(width), here)
        pts = s["points"]
        if not isinstance(pts, (list, tuple)) or not pts:
            raise AnnotationError(f"{here}.points: expected a non-empty list of [x, y], got {_short(pts)}")
        budget.take(len(pts), here)
        bad = next((k for k, q in enumerate(pts) if not _is_xy(q)), None)
        if bad is not None:
            raise AnnotationError(f"{here}.points[{bad}]: expected [x, y] numbers, got {_short(pts[bad])}")
        scribbles.append(Scribble(label, float(width), np.asarray(pts, dtype=np.float64)))
    return scribbles


def _parse_ok(entry: dict, where: str) -> bool:
    """The image-level OK mark (``"ok": true``: a defect-free image, every pixel background)."""
    value = entry.get("ok", False)
    if not isinstance(value, bool):
        raise AnnotationError(f"{where}.ok must be true or false, got {value!r}")
    return value


# kept importable from here: other modules and branches import the writers from annotations
from pointseg.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402,F401

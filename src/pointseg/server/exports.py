"""What the project exports: the annotation file, summary rows, the results zip, the model file.

Plain functions over the store and the model service; the export routes run them as scheduler jobs on the
model thread (they predict with the current model and read feature maps, which only that thread does).
Names inside the zip are the CLI's (``labels/<stem>.png``), disambiguated only where two images share a
stem, and sanitised (no folders, no ``..``, no backslashes: a zip is safe to extract anywhere).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pointseg.fileio import atomic_write_bytes, default_file_mode
from pointseg.server.model_service import ModelService, ModelState, context_factor
from pointseg.server.store import ProjectStore, StoreError

#: the two zip variants download under distinct names
ZIP_NAMES = {False: "results-labels.zip", True: "results-probabilities.zip"}

_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")


def safe_stem(name: str) -> str:
    """A file stem safe in any zip extractor: the last part of ``name`` (either slash), without leading
    dots, with anything but letters, digits and ``._ ()+-`` replaced by ``_``."""
    last = re.split(r"[\\/]", name)[-1]
    stem = Path(last).stem if "." in last.lstrip(".") else last
    stem = _UNSAFE.sub("_", stem).lstrip(". ") or "image"
    return stem[:150]


def output_stems(images: list[dict]) -> dict[int, str]:
    """Image id → output stem: the CLI's ``<stem>``, plus ``-<id>`` only where stems collide."""
    stems = {img["id"]: safe_stem(img["name"]) for img in images}
    seen: dict[str, int] = {}
    for s in stems.values():
        seen[s.lower()] = seen.get(s.lower(), 0) + 1
    return {i: (s if seen[s.lower()] == 1 else f"{s}-{i}") for i, s in stems.items()}


def annotations_file(store: ProjectStore) -> Path:
    return store.dir / "export" / "annotations.json"


def annotations_json(store: ProjectStore) -> bytes:
    """The project's annotations in the file format ``pointseg train`` reads, with image paths relative to
    the file as written in the project (``export/annotations.json``), checked by the core's loader."""
    from pointseg.annotations import AnnotationSet

    ts = store.training_set()
    if len(ts.classes) < 2:
        raise StoreError("the annotation file needs at least two classes; add them first", 409)
    if not ts.image_ids:
        raise StoreError("no annotations yet; click some points first", 409)
    base = annotations_file(store).parent
    raw = {
        "version": 1,
        "classes": [{"name": n, "color": c} for n, c in zip(ts.classes, ts.colors)],
        "images": [{"path": _relative(store.image_file(i), base),
                    "points": [[x, y, int(c)] for x, y, c in pts],
                    "scribbles": scr, **({"ok": True} if ok else {})}
                   for i, pts, scr, ok in zip(ts.image_ids, ts.points, ts.scribbles,
                                              ts.ok or [False] * len(ts.image_ids))],
    }
    AnnotationSet.from_dict(raw, base_dir=base, source="annotations.json")  # same checks as train
    return json.dumps(raw, indent=2).encode()


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only a name can be given without a server path
        return Path(path).name


def write_annotations(store: ProjectStore) -> bytes:
    data = annotations_json(store)
    atomic_write_bytes(annotations_file(store), data)
    return data


def summary_rows(store: ProjectStore) -> list[dict]:
    rows = []
    for img in store.list_images():
        p = img["prediction"]
        if p is None:
            if img["status"] == "failed":
                rows.append({"image": img["name"], "status": "failed", "error": img["error"]})
            continue
        if p["status"] != "ok":
            rows.append({"image": img["name"], "status": "failed",
                         "error": (p["stats"] or {}).get("error", p["status"])})
        else:
            rows.append({"image": img["name"], "height": img["height"], "width": img["width"],
                         "model_rev": p["rev"], **(p["stats"] or {})})
    return rows


def write_summary(store: ProjectStore) -> Path:
    from pointseg.outputs import write_summary_csv

    rows = summary_rows(store)
    if not rows:
        raise StoreError("no predictions yet; run 'predict all' first", 409)
    path = store.dir / "export" / "summary.csv"
    write_summary_csv(rows, path)
    return path


def write_model(service: ModelService, model: ModelState) -> Path:
    return service.save(model, service.store.dir / "export" / "model.pointseg")


def results_zip(service: ModelService, model: ModelState, *, labels: bool, overlays: bool,
                probabilities: bool) -> Path:
    """Label PNGs, overlays, probabilities (float16 .npy), summary.csv, annotations.json and the model of
    every predicted image, in a temporary file under ``export/`` (the caller removes it once sent)."""
    from PIL import Image

    from pointseg.imageio import read_image
    from pointseg.outputs import encode_png, overlay, write_summary_csv

    store = service.store
    model.require()
    rows = summary_rows(store)
    if not any("error" not in r for r in rows):
        raise StoreError("no predictions yet; run 'predict all' first", 409)
    export = store.dir / "export"
    export.mkdir(exist_ok=True)
    fd, out = tempfile.mkstemp(prefix=".results-", suffix=".zip", dir=export)
    os.close(fd)
    os.chmod(out, default_file_mode())
    images = store.list_images()
    stems = output_stems(images)
    try:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for img in images:
                p = store.prediction(img["id"])
                if p is None or p["status"] != "ok" or not p["label_path"]:
                    continue
                stem = stems[img["id"]]
                if labels:
                    z.write(store.dir / p["label_path"], f"labels/{stem}.png")
                if overlays or probabilities:
                    fmap = service.features.get(img["id"], factor=context_factor(model))
                    pred = model.segmenter.predict_full(fmap, probabilities=probabilities)
                    if overlays:
                        rgb = read_image(store.image_file(img["id"]))
                        z.writestr(f"overlays/{stem}_overlay.png",
                                   encode_png(Image.fromarray(overlay(rgb, pred.labels, model.colors)), 1))
                    if probabilities:
                        buf = io.BytesIO()
                        np.save(buf, pred.probabilities.astype(np.float16))
                        z.writestr(f"probabilities/{stem}_proba.npy", buf.getvalue())
            with tempfile.TemporaryDirectory(dir=export) as tmp:
                write_summary_csv(rows, Path(tmp) / "summary.csv")
                z.write(Path(tmp) / "summary.csv", "summary.csv")
                service.save(model, Path(tmp) / "model.pointseg")
                z.write(Path(tmp) / "model.pointseg", "model.pointseg")
            z.writestr("annotations.json", annotations_json(store))
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise
    return Path(out)

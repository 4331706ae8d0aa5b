"""Property: any damaged or edited annotation file gives an AnnotationSet or a PointsegError, nothing else.

Files that load are then taken through what training does with them (points and scribbles checked against
the image size, scribbles rasterised), which must hold to the same property.
"""
from __future__ import annotations

import json

from hypothesis import given

from pointseg.annotations import AnnotationSet, rasterize_scribble, validate_points, validate_scribbles

from mutations import fuzz, byte_damage, document_edits, only_pointseg_errors

VALID = {
    "version": 1,
    "classes": [{"name": "normal", "color": "#2ca02c"}, {"name": "scratch", "color": "#d62728"}, "dent"],
    "images": [
        {"path": "a.png", "points": [[10.5, 8, 0], [30, 4, "scratch"], [2, 2, 2]],
         "scribbles": [{"class": "dent", "width": 6, "points": [[1, 1], [20, 12], [40, 12]]}]},
        {"path": "b.png", "points": [], "ok": True},
        {"path": "sub/c.png", "points": [[5, 5, 1]], "scribbles": [{"class": 0, "points": [[3, 3]]}]},
    ],
}
IMAGE_SIZE = (48, 64)  # (H, W) every image is taken to have


def use(ann: AnnotationSet) -> None:
    """What Segmenter.fit does with a loaded file before any feature is computed."""
    for image in ann.images:
        validate_points(image.points, len(ann.classes), IMAGE_SIZE, where="points")
        for scribble in validate_scribbles(image.scribbles, len(ann.classes), IMAGE_SIZE, where="scribbles"):
            rasterize_scribble(scribble, spacing=4.0)


def load_and_use(path) -> None:
    ann = AnnotationSet.load(path)
    use(ann)
    ann.save(path.with_name("saved.json"))  # what loads also saves, and loads again
    AnnotationSet.load(path.with_name("saved.json"))


def test_the_valid_file_loads(tmp_path):
    (tmp_path / "ann.json").write_text(json.dumps(VALID))
    load_and_use(tmp_path / "ann.json")


@fuzz(150)
@given(data=byte_damage(json.dumps(VALID, indent=1).encode()))
def test_damaged_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "ann.json"
    path.write_bytes(data)
    only_pointseg_errors(lambda: load_and_use(path))


@fuzz(150)
@given(doc=document_edits(VALID))
def test_edited_fields(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fields") / "ann.json"
    path.write_text(json.dumps(doc))
    only_pointseg_errors(lambda: load_and_use(path))

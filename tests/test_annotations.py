import json

import numpy as np
import pytest

from pointseg.annotations import AnnotationSet, Scribble, rasterize_scribble, validate_points, validate_scribbles
from pointseg.errors import AnnotationError


def _write(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_file_round_trip_with_class_names_and_relative_paths(tmp_path):
    path = _write(tmp_path, {
        "classes": [{"name": "normal"}, {"name": "defect", "color": "#ff0000"}],
        "images": [{"path": "a.png", "points": [[1, 2, 0], [3.5, 4, "defect"]],
                    "scribbles": [{"class": "defect", "width": 3, "points": [[0, 0], [5, 5]]}]}],
    })
    ann = AnnotationSet.load(path)
    assert ann.classes == ["normal", "defect"] and ann.colors[1] == "#ff0000"
    assert ann.images[0].path == tmp_path / "a.png"
    np.testing.assert_array_equal(ann.images[0].points, [[1, 2, 0], [3.5, 4, 1]])
    assert ann.images[0].scribbles[0].label == 1 and ann.images[0].scribbles[0].width == 3
    out = tmp_path / "sub" / "copy.json"
    ann.save(out)
    again = AnnotationSet.load(out)
    assert again.images[0].path.resolve() == (tmp_path / "a.png").resolve()
    np.testing.assert_array_equal(again.images[0].points, ann.images[0].points)


@pytest.mark.parametrize("data, message", [
    ({"classes": ["a"], "images": [{"path": "x"}]}, "at least two classes"),
    ({"classes": ["a", "a"], "images": [{"path": "x"}]}, "repeats the name"),
    ({"classes": ["a", {"name": "b", "color": "red"}], "images": [{"path": "x"}]}, r"classes\[1\].color"),
    ({"classes": ["a", "b"], "images": []}, "non-empty list"),
    ({"classes": ["a", "b"], "images": [{"points": []}]}, r"images\[0\] needs a 'path'"),
    ({"classes": ["a", "b"], "images": [{"path": "x", "points": [[1, 2, "c"]]}]}, r"images\[0\].points\[0\]: unknown class 'c'"),
    ({"classes": ["a", "b"], "images": [{"path": "x", "points": [[1, 2]]}]}, r"points\[0\]: expected \[x, y, class\]"),
    ({"version": 9, "classes": ["a", "b"], "images": [{"path": "x"}]}, "version 9"),
])
def test_invalid_files_name_the_bad_entry(tmp_path, data, message):
    with pytest.raises(AnnotationError, match=message):
        AnnotationSet.load(_write(tmp_path, data))


def test_not_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("{ nope")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        AnnotationSet.load(path)


def test_points_outside_the_image_or_with_unknown_class_are_refused():
    with pytest.raises(AnnotationError, match=r"points\[1\]: point \(10, 3\) lies outside the 10x8 image"):
        validate_points([[0, 0, 0], [10, 3, 1]], 2, (8, 10))
    with pytest.raises(AnnotationError, match="class 2 is out of range"):
        validate_points([[0, 0, 2]], 2, (8, 10))
    with pytest.raises(AnnotationError, match="shape"):
        validate_points([[0, 0]], 2, (8, 10))


def test_scribble_rasterises_to_points_one_cell_apart_covering_its_width():
    s = Scribble(1, 8.0, np.array([[10.0, 20.0], [50.0, 20.0]]))
    pts = rasterize_scribble(s, spacing=4.0)
    assert pts[:, 0].min() == pytest.approx(10) and pts[:, 0].max() == pytest.approx(50)
    assert pts[:, 1].min() >= 16 - 1e-9 and pts[:, 1].max() <= 24 + 1e-9
    assert len(np.unique(np.round(pts[:, 1]))) >= 2  # several rows across the brush
    along = np.sort(np.unique(np.round(pts[:, 0], 6)))
    assert np.allclose(np.diff(along), 4.0)


def test_scribble_validation():
    with pytest.raises(AnnotationError, match="width"):
        validate_scribbles([{"class": 0, "width": 0, "points": [[1, 1]]}], 2, (10, 10))
    with pytest.raises(AnnotationError, match=r"scribbles\[0\].points\[1\]"):
        validate_scribbles([{"class": 0, "width": 2, "points": [[1, 1], [20, 1]]}], 2, (10, 10))
    with pytest.raises(AnnotationError, match="missing"):
        validate_scribbles([{"width": 2, "points": [[1, 1]]}], 2, (10, 10))

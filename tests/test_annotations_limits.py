"""Hostile or broken annotation files: each is one AnnotationError line naming the entry, found fast."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pointseg.annotations import AnnotationSet, Scribble, rasterize_scribble, validate_scribbles
from pointseg.errors import AnnotationError


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _image(**entry):
    return {"classes": ["ok", "ng"], "images": [{"path": "a.png"}, {"path": "b.png"}, {"path": "c.png", **entry}]}


def refused(path, message):
    with pytest.raises(AnnotationError, match=message) as info:
        AnnotationSet.load(path)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("entry, message", [
    ({"points": None}, r"^ann.json: images\[2\].points: expected a list of \[x, y, class\], got None"),
    ({"points": 5}, r"images\[2\].points: expected a list .* got 5"),
    ({"points": [[1, 2, 0], "x"]}, r"images\[2\].points\[1\]: expected \[x, y, class\]"),
    ({"points": [[1, None, 0]]}, r"images\[2\].points\[0\]: expected \[x, y, class\] with numbers"),
    ({"points": [[1, float("nan"), 0]]}, r"images\[2\].points\[0\]"),
    ({"points": [[1, 2, 7]]}, r"points\[0\]: class 7 is neither a class name nor an index 0..1"),
    ({"points": [[1, 2, True]]}, r"points\[0\]: class True"),
    ({"scribbles": None}, r"images\[2\].scribbles: expected a list of \{class, width, points\}, got None"),
    ({"scribbles": 7}, r"images\[2\].scribbles: expected a list .* got 7"),
    ({"scribbles": [{"class": 0, "width": 1e9, "points": [[0, 0], [5, 5]]}]},
     r"images\[2\].scribbles\[0\]: width 1e\+09 must be a number of pixels in \(0, 1000\] .*POINTSEG_MAX_SCRIBBLE_WIDTH"),
    ({"scribbles": [{"class": 0, "width": "wide", "points": [[0, 0]]}]}, r"scribbles\[0\].width: expected a number"),
    ({"scribbles": [{"class": 0, "points": []}]}, r"scribbles\[0\].points: expected a non-empty list"),
    ({"scribbles": [{"class": 0, "points": [[0, 0], [1]]}]}, r"scribbles\[0\].points\[1\]: expected \[x, y\]"),
    ({"scribbles": [{"class": "zzz", "points": [[0, 0]]}]}, r"scribbles\[0\].class: unknown class 'zzz'"),
    ({"scribbles": [[0, 0]]}, r"scribbles\[0\]: expected an object with class, width and points"),
])
def test_wrong_types_name_the_entry(tmp_path, entry, message):
    refused(_write(tmp_path, _image(**entry)), message)


def test_a_folder_as_the_file(tmp_path):
    refused(tmp_path, "is a folder; give the annotation JSON file inside it")


def test_deeply_nested_json_is_refused_without_recursion_error(tmp_path):
    refused(_write(tmp_path, "[" * 200_000), "nests lists or objects too deeply")


def test_a_million_points_is_refused_quickly(tmp_path):
    points = [[1, 1, 0]] * 1_000_000
    path = _write(tmp_path, {"classes": ["ok", "ng"], "images": [{"path": "a.png", "points": points}]})
    # the list as a whole is refused (no entry index in the message): counted before any point is parsed
    refused(path, r"images\[0\].points: the file has more than 200,000 points.*POINTSEG_MAX_POINTS_PER_FILE")


def test_points_are_counted_over_the_whole_file_including_scribbles(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSEG_MAX_POINTS_PER_FILE", "10")
    data = _image(points=[[1, 1, 0]] * 6, scribbles=[{"class": 1, "points": [[0, 0]] * 5}])
    refused(_write(tmp_path, data), r"images\[2\].scribbles\[0\]: the file has more than 10 points")
    data = _image(points=[[1, 1, 0]] * 6, scribbles=[{"class": 1, "points": [[0, 0]] * 4}])
    assert len(AnnotationSet.load(_write(tmp_path, data)).images[2].points) == 6


def test_file_size_limit_is_checked_before_parsing(tmp_path, monkeypatch):
    path = _write(tmp_path, _image(points=[[1, 1, 0]] * 1000))
    monkeypatch.setenv("POINTSEG_MAX_JSON_MB", "0.001")
    refused(path, "more than an annotation file may have \\(1,048\\).*POINTSEG_MAX_JSON_MB")
    monkeypatch.setenv("POINTSEG_MAX_JSON_MB", "lots")
    with pytest.raises(Exception, match="POINTSEG_MAX_JSON_MB='lots' is not a non-negative number"):
        AnnotationSet.load(path)


def test_not_utf8_and_too_many_classes(tmp_path):
    (tmp_path / "latin.json").write_bytes(b'{"classes": ["\xe9", "b"]}')
    refused(tmp_path / "latin.json", "not UTF-8")
    refused(_write(tmp_path, {"classes": [f"c{i}" for i in range(300)], "images": [{"path": "a"}]}),
            "300 classes, more than the 256")


def test_scribble_width_and_sample_count_are_bounded_where_they_are_used():
    with pytest.raises(AnnotationError, match="width 1e\\+09"):
        validate_scribbles([{"class": 0, "width": 1e9, "points": [[1, 1]]}], 2, (10, 10))
    long_wide = Scribble(0, 1000.0, np.array([[0.0, 0.0], [100_000.0, 0.0]]))
    # 25,001 positions along x 251 across: counted, not allocated
    with pytest.raises(AnnotationError, match="6,275,251 training samples, more than 250,000.*POINTSEG_MAX_SCRIBBLE"):
        rasterize_scribble(long_wide, spacing=4.0)
    assert len(rasterize_scribble(Scribble(0, 8.0, np.array([[0.0, 0.0], [40.0, 0.0]])), spacing=4.0)) > 10

"""The project store on its own: schema versions, undo/redo semantics, atomicity."""
from __future__ import annotations

import sqlite3

import pytest

from pointseg.server.store import MIGRATIONS, SCHEMA_VERSION, ProjectStore, StoreError, project_lock


def _store_with_image(tmp_path):
    s = ProjectStore(tmp_path / "p")
    img, created = s.add_image(sha256="a" * 64, name="a.png", width=100, height=80, n_bytes=10,
                               source_path="/nowhere/a.png")
    assert created
    return s, img


def test_new_project_is_wal_and_current_schema(tmp_path):
    s = ProjectStore(tmp_path / "p")
    assert s.schema_version() == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "p" / "project.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_older_schema_is_migrated_in_place_keeping_data(tmp_path):
    """A project written at schema 1 (before model timings existed) opens and keeps its rows."""
    path = tmp_path / "p"
    path.mkdir()
    db = sqlite3.connect(path / "project.sqlite", isolation_level=None)
    for stmt in MIGRATIONS[0].split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO meta VALUES ('rev', '7')")
    db.execute("INSERT INTO classes(name, color, position, created_at) VALUES ('old', '#112233', 0, 0)")
    db.execute("INSERT INTO model_versions(rev, created_at, classes, report) VALUES (7, 0, '[]', '{}')")
    db.close()
    s = ProjectStore(path)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.rev() == 7
    assert [c["name"] for c in s.list_classes()] == ["old"]
    assert s.latest_model_version()["timings"] == {}


def test_newer_schema_is_refused_not_damaged(tmp_path):
    path = tmp_path / "p"
    ProjectStore(path).close()
    db = sqlite3.connect(path / "project.sqlite")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this pointseg"):
        ProjectStore(path)
    db = sqlite3.connect(path / "project.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_undo_redo_across_points_scribbles_and_eraser(tmp_path):
    s, img = _store_with_image(tmp_path)
    a, b = s.add_class("a"), s.add_class("b")
    s.add_annotations(img["id"], [{"kind": "point", "class_id": a["id"], "x": 10, "y": 10}])
    s.add_annotations(img["id"], [{"kind": "scribble", "class_id": b["id"], "width": 4,
                                   "points": [[50, 10], [50, 70]]}])
    assert len(s.annotations(img["id"])) == 2
    removed, _ = s.erase(img["id"], [[52, 40]], radius=1)          # hits the scribble (half width 2)
    assert len(removed) == 1 and [x["kind"] for x in s.annotations(img["id"])] == ["point"]
    s.undo(img["id"])                                             # undo the eraser
    assert len(s.annotations(img["id"])) == 2
    s.undo(img["id"])                                             # undo the scribble
    assert [x["kind"] for x in s.annotations(img["id"])] == ["point"]
    s.redo(img["id"])
    assert len(s.annotations(img["id"])) == 2
    # a new edit drops the redo history
    s.undo(img["id"])
    s.add_annotations(img["id"], [{"kind": "point", "class_id": b["id"], "x": 90, "y": 70}])
    edit, _ = s.redo(img["id"])
    assert edit is None
    assert sorted(x["kind"] for x in s.annotations(img["id"])) == ["point", "point"]


def test_rejected_edit_changes_nothing(tmp_path):
    s, img = _store_with_image(tmp_path)
    a = s.add_class("a")
    rev = s.rev()
    with pytest.raises(StoreError, match="outside the 100x80 image"):
        s.add_annotations(img["id"], [{"kind": "point", "class_id": a["id"], "x": 5, "y": 5},
                                      {"kind": "point", "class_id": a["id"], "x": 100, "y": 5}])
    assert s.annotations(img["id"]) == [] and s.rev() == rev   # all or nothing


def test_training_set_uses_class_order(tmp_path):
    s, img = _store_with_image(tmp_path)
    a, b = s.add_class("a"), s.add_class("b")
    s.add_annotations(img["id"], [{"kind": "point", "class_id": a["id"], "x": 1, "y": 2},
                                  {"kind": "point", "class_id": b["id"], "x": 3, "y": 4}])
    s.reorder_classes([b["id"], a["id"]])
    ts = s.training_set()
    assert ts.classes == ["b", "a"]
    assert ts.points == [[(1.0, 2.0, 1), (3.0, 4.0, 0)]]


def test_one_server_per_project(tmp_path):
    s = ProjectStore(tmp_path / "p")
    lock = project_lock(s.dir)
    with pytest.raises(StoreError, match="already running"):
        project_lock(s.dir)
    lock.close()
    project_lock(s.dir).close()

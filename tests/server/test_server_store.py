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


def _v3_project(path):
    """A project file exactly as schema 3 left it: an image, two classes, a point and its edit."""
    path.mkdir()
    db = sqlite3.connect(path / "project.sqlite", isolation_level=None)
    for v in range(3):
        for stmt in MIGRATIONS[v].split(";"):
            if stmt.strip():
                db.execute(stmt)
    db.execute("PRAGMA user_version=3")
    db.execute("INSERT INTO meta VALUES ('rev', '5')")
    db.execute("INSERT INTO images(sha256, name, width, height, n_bytes, source_path, added_at) "
               "VALUES ('b', 'b.png', 100, 80, 10, '/nowhere/b.png', 0)")
    db.execute("INSERT INTO classes(name, color, position, created_at, background) VALUES ('bg', '#000000', 0, 0, 1)")
    db.execute("INSERT INTO classes(name, color, position, created_at) VALUES ('scratch', '#ff0000', 1, 0)")
    db.execute("INSERT INTO annotations(image_id, class_id, kind, x, y, created_at) VALUES (1, 1, 'point', 3, 4, 0)")
    db.execute("INSERT INTO edits(image_id, kind, annotation_ids, created_at) VALUES (1, 'add', '[1]', 0)")
    db.close()


def test_v3_project_migrates_to_ok_flags_keeping_undo(tmp_path):
    """A schema-3 project opens at the current schema with every image unmarked, its undo history intact
    (the edits table is rebuilt for the new kinds), and the new OK edit undoes like a click."""
    _v3_project(tmp_path / "p")
    s = ProjectStore(tmp_path / "p")
    assert s.schema_version() == SCHEMA_VERSION == 4
    assert s.rev() == 5
    assert s.image(1)["ok"] is False and s.list_images()[0]["ok"] is False
    assert s.history(1) == {"can_undo": 1, "can_redo": 0}
    img, rev = s.set_ok(1, True)            # only a background point: allowed
    assert img["ok"] is True and rev == 6
    assert s.summary()["n_ok"] == 1
    assert s.undo(1)[0]["kind"] == "ok" and s.image(1)["ok"] is False
    assert s.undo(1)[0]["kind"] == "add" and s.annotations(1) == []
    assert s.redo(1)[0]["kind"] == "add"
    assert s.redo(1)[0]["kind"] == "ok" and s.image(1)["ok"] is True
    s.close()
    assert ProjectStore(tmp_path / "p").image(1)["ok"] is True          # persisted


def test_ok_image_refuses_defect_marks_and_vice_versa(tmp_path):
    s, img = _store_with_image(tmp_path)
    bg, scratch = s.add_class("bg"), s.add_class("scratch")
    s.add_annotations(img["id"], [{"kind": "point", "class_id": scratch["id"], "x": 5, "y": 5}] * 2)
    with pytest.raises(StoreError, match=r"2 of class 'scratch'\); erase them") as exc:
        s.set_ok(img["id"], True)
    assert exc.value.status == 409 and s.image(img["id"])["ok"] is False
    s.undo(img["id"])
    rev = s.set_ok(img["id"], True)[1]
    assert s.set_ok(img["id"], True)[1] is None and s.rev() == rev       # no-op: no edit, no new revision
    with pytest.raises(StoreError, match="marked OK") as exc:
        s.add_annotations(img["id"], [{"kind": "point", "class_id": scratch["id"], "x": 5, "y": 5}])
    assert exc.value.status == 409
    s.add_annotations(img["id"], [{"kind": "point", "class_id": bg["id"], "x": 5, "y": 5}])   # background: fine


def test_training_set_counts_an_ok_image_without_clicks(tmp_path):
    s, img = _store_with_image(tmp_path)
    other, _ = s.add_image(sha256="c" * 64, name="c.png", width=100, height=80, n_bytes=10,
                           source_path="/nowhere/c.png")
    s.add_class("bg")
    scratch = s.add_class("scratch")
    s.add_annotations(other["id"], [{"kind": "point", "class_id": scratch["id"], "x": 5, "y": 5}])
    before = s.training_set()
    assert before.image_ids == [other["id"]] and before.ok == [False]
    s.set_ok(img["id"], True)
    ts = s.training_set()
    assert ts.image_ids == sorted([img["id"], other["id"]])
    assert ts.ok == [i == img["id"] for i in ts.image_ids] and ts.n_ok == 1
    assert ts.points[ts.image_ids.index(img["id"])] == []
    assert ts.signature() != before.signature()
    from pointseg.server.model_service import insufficiency
    assert insufficiency(ts) is None and insufficiency(before) is not None

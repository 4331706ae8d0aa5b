"""The project store: one SQLite database (WAL mode) in the project folder.

Everything the user does is committed the moment it happens, in a single transaction, so
killing the server (even ``kill -9``) loses nothing and reopening the project shows exactly
the same state.  The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS`
upgrades older projects in place, and a project written by a newer pointseg is refused with
a clear message instead of being damaged.

Layout of a project folder::

    PROJECT_DIR/
      project.sqlite      (+ -wal / -shm while open)   images, classes, annotations, edits,
                                                        model versions, predictions
      images/             copies of uploaded images, named by content hash
      features/           the core FeatureCache's disk cache (float16 feature maps)
      thumbs/             previews, thumbnails, display PNGs: named by content hash + file size + mtime
      models/             the current model file (.pointseg)
      predictions/        label PNGs from "predict all"

Annotations are never physically removed by the eraser or by undo: they are flagged
``deleted`` and the edit that did it is recorded in ``edits``, which is what makes undo and
redo work across points, scribbles and the eraser, across restarts and across browser tabs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pointseg.annotations import DEFAULT_COLORS, parse_color
from pointseg.errors import PointsegError
from pointseg.presets import DEFAULT_FEATURES, DEFAULT_SMOOTHING

DB_NAME = "project.sqlite"
SCHEMA_VERSION = 4

_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    n_bytes     INTEGER NOT NULL,
    source_path TEXT,
    stored_path TEXT,
    added_at    REAL NOT NULL
);
CREATE TABLE classes (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    color      TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE edits (
    id             INTEGER PRIMARY KEY,
    image_id       INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('add', 'erase')),
    annotation_ids TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('done', 'undone', 'dropped')),
    created_at     REAL NOT NULL
);
CREATE INDEX edits_image ON edits(image_id, state);
CREATE TABLE annotations (
    id         INTEGER PRIMARY KEY,
    image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    class_id   INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('point', 'scribble')),
    x          REAL,
    y          REAL,
    width      REAL,
    path       TEXT,
    created_at REAL NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX annotations_image ON annotations(image_id, deleted);
CREATE TABLE model_versions (
    id         INTEGER PRIMARY KEY,
    rev        INTEGER NOT NULL,
    created_at REAL NOT NULL,
    classes    TEXT NOT NULL,
    report     TEXT NOT NULL,
    model_path TEXT
);
CREATE TABLE predictions (
    image_id   INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    rev        INTEGER NOT NULL,
    status     TEXT NOT NULL,
    label_path TEXT,
    stats      TEXT,
    updated_at REAL NOT NULL
);
"""

# v2: timings of each model version (train/predict ms) for the status line and the history.
_SCHEMA_V2 = """
ALTER TABLE model_versions ADD COLUMN timings TEXT NOT NULL DEFAULT '{}';
"""

# v3: the background ("OK") class is an explicit property of a class, not its position; method settings per
# project; which model (training signature) made each prediction, so badges follow the model; images that
# cannot be read are marked failed with a short reason.
_SCHEMA_V3 = """
ALTER TABLE classes ADD COLUMN background INTEGER NOT NULL DEFAULT 0;
UPDATE classes SET background = 1 WHERE id = (SELECT id FROM classes ORDER BY position, id LIMIT 1);
ALTER TABLE predictions ADD COLUMN model_sig TEXT;
ALTER TABLE images ADD COLUMN error TEXT;
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# v4: an image can be marked OK (defect-free: every pixel is known background), and marking / unmarking it is
# an undoable edit like a click, so the edits table is rebuilt to accept the two new kinds (SQLite cannot
# alter a CHECK constraint in place).
_SCHEMA_V4 = """
ALTER TABLE images ADD COLUMN ok INTEGER NOT NULL DEFAULT 0;
CREATE TABLE edits_v4 (
    id             INTEGER PRIMARY KEY,
    image_id       INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('add', 'erase', 'ok', 'unok')),
    annotation_ids TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('done', 'undone', 'dropped')),
    created_at     REAL NOT NULL
);
INSERT INTO edits_v4(id, image_id, kind, annotation_ids, state, created_at)
    SELECT id, image_id, kind, annotation_ids, state, created_at FROM edits;
DROP TABLE edits;
ALTER TABLE edits_v4 RENAME TO edits;
CREATE INDEX edits_image ON edits(image_id, state);
"""

#: ``MIGRATIONS[v]`` upgrades a database at ``user_version == v`` to ``v + 1``.
MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1, 1: _SCHEMA_V2, 2: _SCHEMA_V3, 3: _SCHEMA_V4}

#: the method settings a project may change in the page (item 12), with their defaults (None: the
#: library's default); validated by the API's pydantic model, stored as JSON values
DEFAULT_SETTINGS: dict[str, Any] = {"features": DEFAULT_FEATURES, "smoothing": DEFAULT_SMOOTHING, "C": None,
                                    "min_region": 0,
                                    "ng_area": None}


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class TrainingSet:
    """Everything ``Segmenter.fit`` needs, in class-position order, at one revision."""

    rev: int
    classes: list[str]
    colors: list[str]
    image_ids: list[int]
    points: list[list[tuple[float, float, int]]] = field(default_factory=list)
    scribbles: list[list[dict]] = field(default_factory=list)
    background: int = 0                                  # index of the background / OK class
    settings: dict = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    ok: list[bool] = field(default_factory=list)        # per image: marked OK (defect-free)

    def signature(self) -> str:
        """Everything a fit depends on, hashed: equal signatures mean the same model."""
        raw = json.dumps([self.classes, self.colors, self.image_ids, self.points, self.scribbles,
                          self.background, self.settings, self.ok], sort_keys=True)
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()

    @property
    def n_points(self) -> int:
        return sum(len(p) for p in self.points)

    @property
    def n_ok(self) -> int:
        return sum(self.ok)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()



def _valid_color(color: str) -> str:
    """``#rrggbb`` in lower case, by the library's one colour parser."""
    try:
        rgb = parse_color(color, "colour")
    except PointsegError as exc:
        raise StoreError(str(exc), 422) from None
    return "#%02x%02x%02x" % rgb


def _seg_dist2(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx, dy = bx - ax, by - ay
    n = dx * dx + dy * dy
    t = 0.0 if n == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / n))
    qx, qy = ax + t * dx - px, ay + t * dy - py
    return qx * qx + qy * qy


def _poly_dist(p: tuple[float, float], poly: list[list[float]]) -> float:
    if len(poly) == 1:
        return math.hypot(p[0] - poly[0][0], p[1] - poly[0][1])
    return math.sqrt(min(_seg_dist2(p[0], p[1], *a, *b) for a, b in zip(poly, poly[1:])))


class ProjectStore:
    """Thread-safe access to one project's database.

    One connection, serialised by a lock: every public method is one transaction.  SQLite
    runs in WAL mode with ``synchronous=FULL``, so a committed edit survives a process kill
    and a power cut.  A second server process on the same folder is refused (lock file).
    """

    def __init__(self, project_dir: str | os.PathLike, *, create: bool = True):
        self.dir = Path(project_dir).resolve()
        if not self.dir.exists():
            if not create:
                raise StoreError(f"project folder {self.dir} does not exist", 404)
            self.dir.mkdir(parents=True)
        if not self.dir.is_dir():
            raise StoreError(f"{self.dir} is not a folder; give a folder for the project", 400)
        for sub in ("images", "features", "thumbs", "models", "predictions"):
            (self.dir / sub).mkdir(exist_ok=True)
            # leftovers of writes cut short by a crash (the real files are only ever renamed into place)
            for stale in (self.dir / sub).glob(".upload-*"):
                stale.unlink(missing_ok=True)
            for stale in (self.dir / sub).glob(".tmp-*"):
                stale.unlink(missing_ok=True)
        self.path = self.dir / DB_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._db.row_factory = sqlite3.Row
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":  # pragma: no cover - exotic file systems
            raise StoreError(f"could not switch {self.path} to WAL mode (got {mode})", 500)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self):
        return _Transaction(self)

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this pointseg "
                    f"understands ({SCHEMA_VERSION}); upgrade pointseg to open it", 409)
            while version < SCHEMA_VERSION:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _split_sql(MIGRATIONS[version]):
                        self._db.execute(stmt)
                    version += 1
                    self._db.execute(f"PRAGMA user_version={version}")
                    if version == 1:
                        now = time.time()
                        self._db.executemany(
                            "INSERT INTO meta(key, value) VALUES (?, ?)",
                            [("rev", "0"), ("created_at", repr(now))])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _bump(self) -> int:
        rev = int(self._db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()[0]) + 1
        self._db.execute("UPDATE meta SET value=? WHERE key='rev'", (str(rev),))
        return rev

    def rev(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()[0])

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # ------------------------------------------------------------------ images
    def add_image(self, *, sha256: str, name: str, width: int, height: int, n_bytes: int,
                  source_path: str | None = None, stored_path: str | None = None) -> tuple[dict, bool]:
        """Register an image; returns ``(image, created)``.  The same content is added once."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM images WHERE sha256=?", (sha256,)).fetchone()
            if row is not None:
                return self._image_row(db, row), False
            cur = db.execute(
                "INSERT INTO images(sha256, name, width, height, n_bytes, source_path, stored_path,"
                " added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, name, width, height, n_bytes, source_path, stored_path, time.time()))
            self._bump()
            row = db.execute("SELECT * FROM images WHERE id=?", (cur.lastrowid,)).fetchone()
            return self._image_row(db, row), True

    def _image_row(self, db, row) -> dict:
        counts = db.execute(
            "SELECT kind, COUNT(*) FROM annotations WHERE image_id=? AND deleted=0 GROUP BY kind",
            (row["id"],)).fetchall()
        c = {k: n for k, n in counts}
        pred = db.execute("SELECT rev, status, stats, model_sig FROM predictions WHERE image_id=?",
                          (row["id"],)).fetchone()
        return _image_entry(row, c.get("point", 0), c.get("scribble", 0), pred, None)

    def list_images(self, model_sig: str | None = None) -> list[dict]:
        """All images with their status, in one query (the strip of a 10,000-image project).

        ``model_sig`` is the signature of the current model (:meth:`TrainingSet.signature`): a prediction
        made by another one is ``prediction_stale``."""
        with self._lock:
            rows = self._db.execute("""
                SELECT i.*, COALESCE(a.n_points, 0) AS n_points, COALESCE(a.n_scribbles, 0) AS n_scribbles,
                       p.rev AS p_rev, p.status AS p_status, p.stats AS p_stats, p.model_sig AS p_sig
                FROM images i
                LEFT JOIN (SELECT image_id, SUM(kind = 'point') AS n_points,
                                  SUM(kind = 'scribble') AS n_scribbles
                           FROM annotations WHERE deleted = 0 GROUP BY image_id) a ON a.image_id = i.id
                LEFT JOIN predictions p ON p.image_id = i.id
                ORDER BY i.name, i.id""").fetchall()
        return [_image_entry(r, r["n_points"], r["n_scribbles"],
                             None if r["p_status"] is None else {"rev": r["p_rev"], "status": r["p_status"],
                                                                  "stats": r["p_stats"], "model_sig": r["p_sig"]},
                             model_sig) for r in rows]

    def set_image_error(self, image_id: int, error: str | None) -> bool:
        """Mark an image failed (it cannot be read) or clear the mark; True when that changed anything."""
        with self._tx() as db:
            cur = db.execute("UPDATE images SET error=? WHERE id=? AND error IS NOT ?", (error, image_id, error))
            return cur.rowcount > 0

    def image(self, image_id: int) -> dict:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
            if row is None:
                raise StoreError(f"no image with id {image_id}", 404)
            return self._image_row(self._db, row)

    def image_file(self, image_id: int) -> Path:
        """The file holding the image's pixels (server side only; never sent to clients)."""
        with self._lock:
            row = self._db.execute("SELECT source_path, stored_path FROM images WHERE id=?",
                                   (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"no image with id {image_id}", 404)
        if row["stored_path"]:
            return self.dir / row["stored_path"]
        return Path(row["source_path"])

    def image_sha(self, image_id: int) -> str:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"no image with id {image_id}", 404)
        return row[0]

    def delete_image(self, image_id: int) -> int:
        with self._tx() as db:
            row = db.execute("SELECT stored_path FROM images WHERE id=?", (image_id,)).fetchone()
            if row is None:
                raise StoreError(f"no image with id {image_id}", 404)
            db.execute("DELETE FROM images WHERE id=?", (image_id,))
            rev = self._bump()
        if row["stored_path"]:
            try:
                (self.dir / row["stored_path"]).unlink()
            except OSError:
                pass
        return rev

    # ------------------------------------------------------------------ classes
    def list_classes(self) -> list[dict]:
        with self._lock:
            return self._classes(self._db)

    @staticmethod
    def _classes(db) -> list[dict]:
        rows = db.execute("SELECT id, name, color, position, background FROM classes ORDER BY position, id")
        counts = {(r[0], r[1]): r[2] for r in db.execute(
            "SELECT class_id, kind, COUNT(*) FROM annotations WHERE deleted=0 GROUP BY class_id, kind")}
        out = []
        for index, r in enumerate(rows.fetchall()):
            pts, scr = counts.get((r["id"], "point"), 0), counts.get((r["id"], "scribble"), 0)
            out.append({"id": r["id"], "name": r["name"], "color": r["color"], "index": index,
                        "background": bool(r["background"]), "n_annotations": pts + scr,
                        "n_points": pts, "n_scribbles": scr})
        return out

    @staticmethod
    def _ensure_background(db) -> None:
        """Exactly one class is the background: the first one when none is (a new or emptied project)."""
        if not db.execute("SELECT 1 FROM classes WHERE background=1").fetchone():
            db.execute("UPDATE classes SET background=1 WHERE id=(SELECT id FROM classes "
                       "ORDER BY position, id LIMIT 1)")

    def add_class(self, name: str, color: str | None = None) -> dict:
        name = name.strip()
        if not name:
            raise StoreError("class name is empty; give a name such as 'defect'", 422)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM classes WHERE name=?", (name,)).fetchone():
                raise StoreError(f"a class named {name!r} exists already; pick another name", 409)
            n = db.execute("SELECT COUNT(*), COALESCE(MAX(position), -1) FROM classes").fetchone()
            if color is None:
                used = {r[0] for r in db.execute("SELECT color FROM classes")}
                color = next((c for c in DEFAULT_COLORS if c not in used),
                             DEFAULT_COLORS[n[0] % len(DEFAULT_COLORS)])
            cur = db.execute("INSERT INTO classes(name, color, position, created_at) VALUES (?,?,?,?)",
                             (name, _valid_color(color), n[1] + 1, time.time()))
            self._ensure_background(db)
            self._bump()
            return next(c for c in self._classes(db) if c["id"] == cur.lastrowid)

    def update_class(self, class_id: int, *, name: str | None = None, color: str | None = None,
                     background: bool | None = None) -> dict:
        """Rename, recolour, or make this class the background / OK class (``background=True``; the
        background cannot be unset directly: choose another class as background instead)."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM classes WHERE id=?", (class_id,)).fetchone():
                raise StoreError(f"no class with id {class_id}", 404)
            if name is not None:
                name = name.strip()
                if not name:
                    raise StoreError("class name is empty", 422)
                if db.execute("SELECT 1 FROM classes WHERE name=? AND id<>?", (name, class_id)).fetchone():
                    raise StoreError(f"a class named {name!r} exists already; pick another name", 409)
                db.execute("UPDATE classes SET name=? WHERE id=?", (name, class_id))
            if color is not None:
                db.execute("UPDATE classes SET color=? WHERE id=?", (_valid_color(color), class_id))
            if background is False and db.execute("SELECT background FROM classes WHERE id=?",
                                                   (class_id,)).fetchone()[0]:
                raise StoreError("one class is always the background; make another class the background "
                                 "instead", 422)
            if background:
                db.execute("UPDATE classes SET background=(id=?)", (class_id,))
            self._bump()
            return next(c for c in self._classes(db) if c["id"] == class_id)

    def reorder_classes(self, ids: list[int]) -> list[dict]:
        with self._tx() as db:
            have = [r[0] for r in db.execute("SELECT id FROM classes")]
            if sorted(have) != sorted(ids):
                raise StoreError("the new order must list every class id exactly once", 422)
            for pos, cid in enumerate(ids):
                db.execute("UPDATE classes SET position=? WHERE id=?", (pos, cid))
            self._bump()
            return self._classes(db)

    def delete_class(self, class_id: int) -> int:
        """Delete a class and all its annotations (the page asks for confirmation first)."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM classes WHERE id=?", (class_id,)).fetchone():
                raise StoreError(f"no class with id {class_id}", 404)
            gone = {r[0] for r in db.execute("SELECT id FROM annotations WHERE class_id=?", (class_id,))}
            db.execute("DELETE FROM annotations WHERE class_id=?", (class_id,))
            db.execute("DELETE FROM classes WHERE id=?", (class_id,))
            self._ensure_background(db)
            self._drop_from_edits(db, gone)
            return self._bump()

    @staticmethod
    def _drop_from_edits(db, gone: set[int]) -> None:
        """Remove deleted annotations from the undo log; an edit left with none is removed, so no undo or
        redo step remains that would change nothing."""
        if not gone:
            return
        for e in db.execute("SELECT id, annotation_ids FROM edits").fetchall():
            ids = json.loads(e["annotation_ids"])
            keep = [i for i in ids if i not in gone]
            if len(keep) == len(ids):
                continue
            if keep:
                db.execute("UPDATE edits SET annotation_ids=? WHERE id=?", (json.dumps(keep), e["id"]))
            else:
                db.execute("DELETE FROM edits WHERE id=?", (e["id"],))

    # ------------------------------------------------------------------ annotations
    @staticmethod
    def _ann(row) -> dict:
        d = {"id": row["id"], "image_id": row["image_id"], "class_id": row["class_id"],
             "kind": row["kind"], "created_at": row["created_at"]}
        if row["kind"] == "point":
            d.update(x=row["x"], y=row["y"])
        else:
            d.update(width=row["width"], points=json.loads(row["path"]))
        return d

    def annotations(self, image_id: int) -> list[dict]:
        with self._lock:
            self._check_image(self._db, image_id)
            rows = self._db.execute(
                "SELECT * FROM annotations WHERE image_id=? AND deleted=0 ORDER BY id", (image_id,))
            return [self._ann(r) for r in rows.fetchall()]

    def _check_image(self, db, image_id: int) -> sqlite3.Row:
        row = db.execute("SELECT width, height, ok FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"no image with id {image_id}", 404)
        return row

    def _new_edit(self, db, image_id: int, kind: str, ids: list[int]) -> int:
        # a new edit makes the redo history of this image unreachable
        db.execute("UPDATE edits SET state='dropped' WHERE image_id=? AND state='undone'", (image_id,))
        cur = db.execute("INSERT INTO edits(image_id, kind, annotation_ids, created_at) VALUES (?,?,?,?)",
                         (image_id, kind, json.dumps(ids), time.time()))
        return cur.lastrowid

    def add_annotations(self, image_id: int, items: list[dict]) -> tuple[list[dict], int]:
        """Add points ``{kind:'point', class_id, x, y}`` and scribbles
        ``{kind:'scribble', class_id, width, points:[[x,y],...]}`` as one undoable edit."""
        if not items:
            raise StoreError("no annotations given", 422)
        with self._tx() as db:
            size = self._check_image(db, image_id)
            w, h = size["width"], size["height"]
            classes = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, name, background FROM classes")}
            is_ok = bool(size["ok"])
            now = time.time()
            ids = []
            for i, it in enumerate(items):
                if it["class_id"] not in classes:
                    raise StoreError(f"annotation {i}: no class with id {it['class_id']}", 422)
                name, background = classes[it["class_id"]]
                if is_ok and not background:
                    raise StoreError(f"image {image_id} is marked OK (defect-free), so it cannot have marks of "
                                     f"class {name!r}; unmark it first (key K)", 409)
                pts = [(it["x"], it["y"])] if it["kind"] == "point" else it["points"]
                for x, y in pts:
                    if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < w and 0 <= y < h):
                        raise StoreError(f"annotation {i}: point ({x:g}, {y:g}) is outside the "
                                         f"{w}x{h} image", 422)
                if it["kind"] == "point":
                    cur = db.execute(
                        "INSERT INTO annotations(image_id, class_id, kind, x, y, created_at)"
                        " VALUES (?,?,?,?,?,?)", (image_id, it["class_id"], "point", it["x"], it["y"], now))
                else:
                    cur = db.execute(
                        "INSERT INTO annotations(image_id, class_id, kind, width, path, created_at)"
                        " VALUES (?,?,?,?,?,?)",
                        (image_id, it["class_id"], "scribble", float(it["width"]),
                         json.dumps([[float(x), float(y)] for x, y in pts]), now))
                ids.append(cur.lastrowid)
            self._new_edit(db, image_id, "add", ids)
            rev = self._bump()
            rows = db.execute(f"SELECT * FROM annotations WHERE id IN ({','.join('?' * len(ids))})", ids)
            return [self._ann(r) for r in rows.fetchall()], rev

    def erase(self, image_id: int, path: list[list[float]], radius: float) -> tuple[list[int], int | None]:
        """Remove (flag) every annotation within ``radius`` of the polyline ``path``."""
        with self._tx() as db:
            self._check_image(db, image_id)
            rows = db.execute("SELECT * FROM annotations WHERE image_id=? AND deleted=0",
                              (image_id,)).fetchall()
            hit = []
            for r in rows:
                if r["kind"] == "point":
                    d = _poly_dist((r["x"], r["y"]), path)
                    reach = radius
                else:
                    sp = json.loads(r["path"])
                    d = min(_poly_dist(tuple(p), sp) for p in path)
                    if len(path) > 1:
                        d = min(d, min(_poly_dist(tuple(p), path) for p in sp))
                    reach = radius + r["width"] / 2
                if d <= reach:
                    hit.append(r["id"])
            if not hit:
                return [], None
            db.execute(f"UPDATE annotations SET deleted=1 WHERE id IN ({','.join('?' * len(hit))})", hit)
            self._new_edit(db, image_id, "erase", hit)
            return hit, self._bump()

    def set_ok(self, image_id: int, ok: bool) -> tuple[dict, int | None]:
        """Mark an image OK (defect-free: every pixel is background) or unmark it, as one undoable edit;
        returns ``(image, rev)`` (rev None: it was so already). An image with marks of a defect class is
        refused (409, naming them): the two would contradict each other, and the fit would fail."""
        with self._tx() as db:
            row = self._check_image(db, image_id)
            if bool(row["ok"]) == ok:
                return self._image_row(db, db.execute("SELECT * FROM images WHERE id=?", (image_id,))
                                       .fetchone()), None
            if ok:
                defects = db.execute(
                    "SELECT c.name, COUNT(*) FROM annotations a JOIN classes c ON c.id = a.class_id "
                    "WHERE a.image_id=? AND a.deleted=0 AND c.background=0 GROUP BY c.id ORDER BY c.position",
                    (image_id,)).fetchall()
                if defects:
                    named = ", ".join(f"{n} of class {name!r}" for name, n in defects)
                    raise StoreError(f"image {image_id} has marks of a defect class ({named}); erase them "
                                     "before marking it OK (defect-free)", 409)
            db.execute("UPDATE images SET ok=? WHERE id=?", (int(ok), image_id))
            self._new_edit(db, image_id, "ok" if ok else "unok", [])
            rev = self._bump()
            return self._image_row(db, db.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()), rev

    def _apply(self, db, edit, undo: bool) -> None:
        if edit["kind"] in ("ok", "unok"):
            db.execute("UPDATE images SET ok=? WHERE id=?", (int((edit["kind"] == "ok") != undo), edit["image_id"]))
            return
        ids = json.loads(edit["annotation_ids"])
        if not ids:
            return
        removes = (edit["kind"] == "add") == undo
        db.execute(f"UPDATE annotations SET deleted=? WHERE id IN ({','.join('?' * len(ids))})",
                   [1 if removes else 0, *ids])

    def undo(self, image_id: int) -> tuple[dict | None, int]:
        """Undo the latest edit on this image; returns ``(edit, rev)`` (edit None: nothing to undo)."""
        return self._step(image_id, undo=True)

    def redo(self, image_id: int) -> tuple[dict | None, int]:
        """Redo the earliest undone edit (the reverse order of undo); ``(edit, rev)`` as for :meth:`undo`."""
        return self._step(image_id, undo=False)

    def _step(self, image_id: int, undo: bool) -> tuple[dict | None, int]:
        state, new_state, order = ("done", "undone", "DESC") if undo else ("undone", "done", "ASC")
        with self._tx() as db:
            self._check_image(db, image_id)
            e = db.execute(f"SELECT * FROM edits WHERE image_id=? AND state=? ORDER BY id {order} LIMIT 1",
                           (image_id, state)).fetchone()
            if e is None:
                return None, self._rev(db)
            self._apply(db, e, undo=undo)
            db.execute("UPDATE edits SET state=? WHERE id=?", (new_state, e["id"]))
            return {"id": e["id"], "kind": e["kind"]}, self._bump()

    def history(self, image_id: int) -> dict:
        with self._lock:
            n_undo = self._db.execute("SELECT COUNT(*) FROM edits WHERE image_id=? AND state='done'",
                                      (image_id,)).fetchone()[0]
            n_redo = self._db.execute("SELECT COUNT(*) FROM edits WHERE image_id=? AND state='undone'",
                                      (image_id,)).fetchone()[0]
            return {"can_undo": n_undo, "can_redo": n_redo}

    @staticmethod
    def _rev(db) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()[0])

    # ------------------------------------------------------------------ training set
    def training_set(self) -> TrainingSet:
        """All live annotations, as ``Segmenter.fit`` wants them, at one consistent revision."""
        with self._lock:
            db = self._db
            classes = self._classes(db)
            index = {c["id"]: c["index"] for c in classes}
            ts = TrainingSet(rev=self._rev(db), classes=[c["name"] for c in classes],
                             colors=[c["color"] for c in classes], image_ids=[],
                             background=next((c["index"] for c in classes if c["background"]), 0),
                             settings=self._settings(db))
            rows = db.execute("SELECT * FROM annotations WHERE deleted=0 ORDER BY image_id, id").fetchall()
            by_image: dict[int, tuple[list, list]] = {}
            for r in rows:
                pts, scr = by_image.setdefault(r["image_id"], ([], []))
                if r["kind"] == "point":
                    pts.append((r["x"], r["y"], index[r["class_id"]]))
                else:
                    scr.append({"class": index[r["class_id"]], "width": r["width"],
                                "points": json.loads(r["path"])})
            # an OK image is training material without a single click (all its pixels are background)
            ok_ids = {r[0] for r in db.execute("SELECT id FROM images WHERE ok=1")}
            for image_id in ok_ids:
                by_image.setdefault(image_id, ([], []))
            for image_id in sorted(by_image):
                pts, scr = by_image[image_id]
                ts.image_ids.append(image_id)
                ts.points.append(pts)
                ts.scribbles.append(scr)
                ts.ok.append(image_id in ok_ids)
            return ts

    # ------------------------------------------------------------------ models and predictions
    def add_model_version(self, rev: int, classes: list[str], report: dict, timings: dict,
                          model_path: str | None = None, keep: int = 200) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO model_versions(rev, created_at, classes, report, model_path, timings)"
                " VALUES (?,?,?,?,?,?)",
                (rev, time.time(), json.dumps(classes), json.dumps(report), model_path, json.dumps(timings)))
            db.execute("DELETE FROM model_versions WHERE id <= ?", (cur.lastrowid - keep,))
            return cur.lastrowid

    def latest_model_version(self) -> dict | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM model_versions ORDER BY id DESC LIMIT 1").fetchone()
            if r is None:
                return None
            return {"id": r["id"], "rev": r["rev"], "created_at": r["created_at"],
                    "classes": json.loads(r["classes"]), "report": json.loads(r["report"]),
                    "timings": json.loads(r["timings"]), "model_path": r["model_path"]}

    def model_versions(self, limit: int = 50) -> list[dict]:
        """The most recent model versions, newest first (revision, time, report, timings)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM model_versions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r["id"], "rev": r["rev"], "created_at": r["created_at"], "classes": json.loads(r["classes"]),
                 "report": json.loads(r["report"]), "timings": json.loads(r["timings"])} for r in rows]

    def set_prediction(self, image_id: int, rev: int, status: str, label_path: str | None,
                       stats: dict | None, model_sig: str | None = None) -> None:
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone():
                return  # deleted meanwhile
            db.execute(
                "INSERT INTO predictions(image_id, rev, status, label_path, stats, updated_at, model_sig)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(image_id) DO UPDATE SET rev=excluded.rev,"
                " status=excluded.status, label_path=excluded.label_path, stats=excluded.stats,"
                " updated_at=excluded.updated_at, model_sig=excluded.model_sig",
                (image_id, rev, status, label_path, json.dumps(stats) if stats else None, time.time(),
                 model_sig))

    def prediction(self, image_id: int) -> dict | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM predictions WHERE image_id=?", (image_id,)).fetchone()
            if r is None:
                return None
            return {"rev": r["rev"], "status": r["status"], "label_path": r["label_path"],
                    "stats": json.loads(r["stats"]) if r["stats"] else None, "model_sig": r["model_sig"]}

    # ------------------------------------------------------------------ method settings
    @staticmethod
    def _settings(db) -> dict:
        out = dict(DEFAULT_SETTINGS)
        for key, value in db.execute("SELECT key, value FROM settings"):
            if key in out:
                out[key] = json.loads(value)
        return out

    def settings(self) -> dict:
        with self._lock:
            return self._settings(self._db)

    def update_settings(self, changes: dict) -> tuple[dict, int]:
        """Store validated method settings (a retrain follows: they are part of the training signature)."""
        unknown = sorted(set(changes) - set(DEFAULT_SETTINGS))
        if unknown:
            raise StoreError(f"unknown setting(s) {', '.join(unknown)}", 422)
        with self._tx() as db:
            db.executemany("INSERT INTO settings(key, value) VALUES (?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           [(k, json.dumps(v)) for k, v in changes.items()])
            return self._settings(db), self._bump()

    def summary(self) -> dict:
        with self._lock:
            db = self._db
            return {
                "rev": self._rev(db),
                "n_images": db.execute("SELECT COUNT(*) FROM images").fetchone()[0],
                "n_annotations": db.execute("SELECT COUNT(*) FROM annotations WHERE deleted=0").fetchone()[0],
                "n_ok": db.execute("SELECT COUNT(*) FROM images WHERE ok=1").fetchone()[0],
                "n_classes": db.execute("SELECT COUNT(*) FROM classes").fetchone()[0],
                "schema_version": db.execute("PRAGMA user_version").fetchone()[0],
            }


def _image_entry(row, n_points: int, n_scribbles: int, pred, model_sig: str | None) -> dict:
    """One image as the API lists it (``prediction_stale``: made by a model other than ``model_sig``)."""
    error = row["error"]
    entry = {
        "id": row["id"], "name": row["name"], "width": row["width"], "height": row["height"],
        "n_bytes": row["n_bytes"], "sha256": row["sha256"], "uploaded": row["stored_path"] is not None,
        "n_points": n_points, "n_scribbles": n_scribbles, "ok": bool(row["ok"]),
        "status": "failed" if error else "ok", "error": error,
        "prediction": None, "prediction_stale": False,
    }
    if pred is not None:
        stats = pred["stats"]
        entry["prediction"] = {"rev": pred["rev"], "status": pred["status"],
                               "stats": json.loads(stats) if isinstance(stats, str) else stats}
        entry["prediction_stale"] = model_sig is not None and pred["model_sig"] != model_sig
    return entry


class _Transaction:
    """``with store._tx() as db:`` — BEGIN IMMEDIATE … COMMIT under the store lock."""

    def __init__(self, store: ProjectStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, exc_type, exc, tb) -> None:
        # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL, SQLITE_IOERR): a second
        # ROLLBACK would then fail and hide the error that matters ("database or disk is full")
        db = self.store._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            elif db.in_transaction:
                db.execute("ROLLBACK")
        finally:
            self.store._lock.release()


def _split_sql(script: str) -> Iterable[str]:
    """Split a migration script into statements (no semicolons inside our literals)."""
    for stmt in script.split(";"):
        if stmt.strip():
            yield stmt.strip()


def project_lock(project_dir: Path) -> Any:
    """Hold an exclusive lock on the project so two servers never share one folder."""
    import fcntl

    fh = open(project_dir / ".pointseg-serve.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StoreError(f"another pointseg serve is already running on {project_dir}; "
                         "stop it first or open the URL it printed", 409) from None
    return fh

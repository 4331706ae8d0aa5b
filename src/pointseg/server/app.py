"""HTTP API and static page of ``pointseg serve``.

Routes stay short: state lives in :mod:`pointseg.server.store` (SQLite), heavy work in
:mod:`pointseg.server.worker` (threads), encodings in :mod:`pointseg.server.render`.  Clients refer to
images by id only; no route takes or returns a server path.

Safety: the app is meant for 127.0.0.1.  When it is bound elsewhere a token is required on every
``/api`` request (``Authorization: Bearer``, ``X-Pointseg-Token``, the cookie set by opening the printed
URL, or ``?token=``).  On loopback the ``Host`` header must name the loopback (defeats DNS rebinding),
and state-changing requests carrying a foreign ``Origin`` are refused (no CORS, no CSRF).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from starlette.background import BackgroundTask

from pointseg.errors import PointsegError
from pointseg.imageio import IMAGE_SUFFIXES, read_image
from pointseg.server import render
from pointseg.annotations import atomic_write_bytes
from pointseg.server.store import ProjectStore, StoreError, sha256_file
from pointseg.server.worker import PRIO_PREFETCH, PRIO_VIEW, EventHub, FeatureStore, NoModel, Worker

from pointseg.presets import DEFAULT_BACKBONE  # noqa: E402

log = logging.getLogger("pointseg.server")
STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: suffixes a browser shows as they are; anything else is converted once to PNG for display
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
THUMB_SIZE = 176
#: file names the page may load from static/ (ES modules, the style sheet, the icon)
STATIC_NAME = re.compile(r"[a-z][a-z0-9_-]*\.(js|css|svg)")


class Settings(BaseModel):
    project_dir: Path
    host: str = "127.0.0.1"
    token: str | None = None
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    precision: str = "auto"
    max_upload_bytes: int = 256 * 1024 * 1024
    debounce_ms: float = 10.0


# ---------------------------------------------------------------------------------------------- bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointIn(_Body):
    kind: Literal["point"] = "point"
    class_id: int
    x: float
    y: float


class ScribbleIn(_Body):
    kind: Literal["scribble"]
    class_id: int
    width: float = Field(gt=0, le=1000)
    points: list[tuple[float, float]] = Field(min_length=1, max_length=20000)


def _kind(value) -> str:
    """Items without ``kind`` are points; unknown kinds fail validation with a clear message."""
    kind = value.get("kind", "point") if isinstance(value, dict) else getattr(value, "kind", "point")
    return kind if kind in ("point", "scribble") else "point"


class AnnotationsIn(_Body):
    items: list[Annotated[Union[Annotated[PointIn, Tag("point")], Annotated[ScribbleIn, Tag("scribble")]],
                          Discriminator(_kind)]] = Field(min_length=1, max_length=5000)


class EraseIn(_Body):
    points: list[tuple[float, float]] = Field(min_length=1, max_length=20000)
    radius: float = Field(gt=0, le=5000)


class ClassIn(_Body):
    name: str = Field(min_length=1, max_length=80)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")


class ClassPatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=80)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")


class OrderIn(_Body):
    ids: list[int] = Field(max_length=1000)


class BatchIn(_Body):
    image_ids: list[int] | None = None


# ---------------------------------------------------------------------------------------------- app
def create_app(settings: Settings, *, store: ProjectStore | None = None) -> FastAPI:
    store = store or ProjectStore(settings.project_dir)
    events = EventHub()
    features = FeatureStore(store, backbone=settings.backbone, weights=settings.weights,
                            precision=settings.precision)
    worker = Worker(store, features, events, debounce_s=settings.debounce_ms / 1000)
    token = settings.token
    loopback = settings.host in LOOPBACK_HOSTS

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        # compute features of annotated images first (training needs them), then the rest in order
        ts = store.training_set()
        for i in ts.image_ids:
            worker.request_features(i, PRIO_PREFETCH)
        yield
        worker.stop()

    app = FastAPI(title="pointseg", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.worker, app.state.events, app.state.settings = store, worker, events, settings

    # ----------------------------------------------------------------------------------- guards
    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        host = _host_name(request.headers.get("host") or "")
        if loopback and host not in LOOPBACK_HOSTS:
            return _err(421, f"unexpected Host {host!r}; open the app at http://127.0.0.1 as printed")
        origin = request.headers.get("origin")
        if origin and request.method not in ("GET", "HEAD", "OPTIONS"):
            want = f"{request.url.scheme}://{request.headers.get('host')}"
            if origin != want:
                return _err(403, "cross-origin requests are refused (no CORS)")
        if request.method == "OPTIONS":
            return _err(405, "no CORS: cross-origin requests are refused")
        set_cookie = False
        if token is not None and (path.startswith("/api/") or path == "/api"):
            given = _token_from(request)
            if given is None or not secrets.compare_digest(given, token):
                return _err(401, "missing or wrong access token; open the URL with ?token=… printed by "
                                 "pointseg serve")
        elif token is not None and path == "/" and request.query_params.get("token"):
            set_cookie = secrets.compare_digest(request.query_params["token"], token)
        limit = settings.max_upload_bytes * 4 + (1 << 20)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return _err(413, f"request body of {int(length):,} bytes is larger than the limit of {limit:,}")
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'")
        if set_cookie:
            response.set_cookie("pointseg_token", token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return _err(exc.status, str(exc))

    @app.exception_handler(PointsegError)
    async def _core_error(request: Request, exc: PointsegError):
        return _err(422, str(exc))

    @app.exception_handler(NoModel)
    async def _no_model(request: Request, exc: NoModel):
        return _err(409, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _err(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return _err(422, f"{where or 'request'}: {first.get('msg')}{more}")

    # ----------------------------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        # the page is a handful of ES modules: serve any plain file name of static/, never a path
        if not STATIC_NAME.fullmatch(name) or not (STATIC / name).is_file():
            raise HTTPException(404, "not found")
        media = "text/javascript" if name.endswith(".js") else None
        return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    # ----------------------------------------------------------------------------------- project
    @app.get("/api/project")
    def project():
        params = features.base.get_params()
        method = {k: params[k] for k in ("backbone", "features", "smoothing", "classifier", "C") if k in params}
        return {"name": store.dir.name, "backbone": settings.backbone, "method": method, **store.summary(),
                "token_required": token is not None, **worker.status(),
                "max_upload_bytes": settings.max_upload_bytes}

    @app.get("/api/status")
    def status():
        return {"rev": store.rev(), **worker.status()}

    @app.get("/api/events")
    async def stream(request: Request):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)

        def push(event: dict) -> None:
            loop.call_soon_threadsafe(_offer, queue, event)

        unsubscribe = events.subscribe(push)

        async def gen():
            try:
                yield _sse({"type": "hello", "rev": store.rev(), **worker.status()})
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=10)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            break
                        yield ": keep-alive\n\n"
                        continue
                    yield _sse(event)
            finally:
                unsubscribe()

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _changed(rev: int, **extra) -> None:
        worker.notify_edit(rev)
        events.publish({"type": "changed", "rev": rev, **extra})

    # ----------------------------------------------------------------------------------- images
    @app.get("/api/images")
    def images():
        return {"rev": store.rev(), "images": store.list_images()}

    @app.post("/api/images", status_code=201)
    async def upload(files: Annotated[list[UploadFile], File(description="image files")]):
        added, errors = [], []
        for up in files:
            try:
                img, created = await run_in_threadpool(_ingest_upload, store, up, settings.max_upload_bytes)
                added.append({**img, "created": created})
            except StoreError as exc:
                errors.append((exc.status, str(exc)))
            finally:
                await up.close()
        if added:
            _changed(store.rev(), what="images")
        if errors:
            status = errors[0][0]
            detail = "; ".join(m for _, m in errors)
            return JSONResponse({"detail": detail, "added": added}, status_code=status)
        return {"added": added}

    @app.get("/api/images/{image_id}")
    def image(image_id: int):
        img = store.image(image_id)
        ready = worker.request_features(image_id, PRIO_VIEW)
        # prefetch the neighbours in the list so "next" is instant
        ids = [i["id"] for i in store.list_images()]
        if image_id in ids:
            k = ids.index(image_id)
            for j in (k + 1, k - 1):
                if 0 <= j < len(ids):
                    worker.request_features(ids[j], PRIO_PREFETCH)
        return {**img, "features_ready": ready, "annotations": store.annotations(image_id),
                "history": store.history(image_id)}

    @app.delete("/api/images/{image_id}")
    def delete_image(image_id: int):
        rev = store.delete_image(image_id)
        worker.forget_image(image_id)
        _changed(rev, what="images")
        return {"rev": rev}

    @app.get("/api/images/{image_id}/file")
    def image_file(image_id: int):
        return _display_file(store, image_id)

    @app.get("/api/images/{image_id}/thumb")
    def thumb(image_id: int):
        return _thumbnail(store, image_id)

    # ----------------------------------------------------------------------------------- annotations
    @app.get("/api/images/{image_id}/annotations")
    def annotations(image_id: int):
        return {"rev": store.rev(), "annotations": store.annotations(image_id),
                "history": store.history(image_id)}

    @app.post("/api/images/{image_id}/annotations", status_code=201)
    def add_annotations(image_id: int, body: AnnotationsIn):
        anns, rev = store.add_annotations(image_id, [i.model_dump() for i in body.items])
        _changed(rev, what="annotations", image_id=image_id)
        return {"rev": rev, "annotations": anns, "history": store.history(image_id)}

    @app.post("/api/images/{image_id}/erase")
    def erase(image_id: int, body: EraseIn):
        ids, rev = store.erase(image_id, [list(p) for p in body.points], body.radius)
        if rev is not None:
            _changed(rev, what="annotations", image_id=image_id)
        return {"rev": rev if rev is not None else store.rev(), "removed": ids,
                "history": store.history(image_id)}

    def _history_step(image_id: int, step) -> dict:
        edit, rev = step(image_id)
        if edit is not None:
            _changed(rev, what="annotations", image_id=image_id)
        return {"rev": rev, "edit": edit, "annotations": store.annotations(image_id),
                "history": store.history(image_id)}

    @app.post("/api/images/{image_id}/undo")
    def undo(image_id: int):
        return _history_step(image_id, store.undo)

    @app.post("/api/images/{image_id}/redo")
    def redo(image_id: int):
        return _history_step(image_id, store.redo)

    # ----------------------------------------------------------------------------------- classes
    @app.get("/api/classes")
    def classes():
        return {"rev": store.rev(), "classes": store.list_classes()}

    @app.post("/api/classes", status_code=201)
    def add_class(body: ClassIn):
        c = store.add_class(body.name, body.color)
        _changed(store.rev(), what="classes")
        return c

    @app.patch("/api/classes/{class_id}")
    def patch_class(class_id: int, body: ClassPatch):
        c = store.update_class(class_id, name=body.name, color=body.color)
        _changed(store.rev(), what="classes")
        return c

    @app.put("/api/classes/order")
    def order_classes(body: OrderIn):
        out = store.reorder_classes(body.ids)
        _changed(store.rev(), what="classes")
        return {"classes": out}

    @app.delete("/api/classes/{class_id}")
    def delete_class(class_id: int):
        rev = store.delete_class(class_id)
        _changed(rev, what="classes")
        return {"rev": rev}

    # ----------------------------------------------------------------------------------- predictions
    async def _result(image_id: int, min_rev: int | None, timeout: float):
        store.image(image_id)  # 404 early
        if min_rev is not None and min_rev > store.rev():
            raise HTTPException(422, f"min_rev {min_rev} is ahead of the project (revision {store.rev()})")
        fut = worker.request_prediction(image_id, min_rev)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=timeout)
        except asyncio.TimeoutError:
            raise HTTPException(504, "the model is still working on this image; try again") from None

    @app.get("/api/images/{image_id}/overlay.png")
    async def overlay(image_id: int,
                      view: Literal["labels", "proba", "uncertainty"] = "labels",
                      class_index: Annotated[int, Query(ge=0, le=255)] = 0,
                      min_rev: Annotated[int | None, Query(ge=0)] = None,
                      timeout: Annotated[float, Query(gt=0, le=300)] = 60.0):
        t0 = time.perf_counter()
        res = await _result(image_id, min_rev, timeout)
        t1 = time.perf_counter()
        if view == "proba" and class_index >= len(res.classes):
            raise HTTPException(422, f"class_index {class_index} is out of range (the model has "
                                     f"{len(res.classes)} classes)")
        data = await run_in_threadpool(_encode, res, view, class_index)
        t2 = time.perf_counter()
        timings = {**res.timings, "wait_ms": round((t1 - t0) * 1000, 1),
                   "encode_ms": round((t2 - t1) * 1000, 1)}
        return Response(data, media_type="image/png", headers={
            "Cache-Control": "no-store", "X-Model-Rev": str(res.rev), "X-Model-Version": str(res.version),
            "X-Timings": json.dumps(timings, separators=(",", ":"))})

    @app.get("/api/images/{image_id}/suggestions")
    async def suggestions(image_id: int, n: Annotated[int, Query(ge=1, le=20)] = 5,
                          min_rev: Annotated[int | None, Query(ge=0)] = None):
        res = await _result(image_id, min_rev, 60.0)
        avoid = []
        for a in store.annotations(image_id):
            avoid.extend([(a["x"], a["y"])] if a["kind"] == "point" else [tuple(p) for p in a["points"]])
        picks = await run_in_threadpool(render.suggest_clicks, res.uncertainty, n=n, avoid=avoid)
        return {"rev": res.rev, "suggestions": picks}

    @app.get("/api/images/{image_id}/stats")
    async def stats(image_id: int, min_rev: Annotated[int | None, Query(ge=0)] = None):
        res = await _result(image_id, min_rev, 60.0)
        return {"rev": res.rev, **(await run_in_threadpool(render.label_stats, res.labels, res.classes))}

    @app.get("/api/model")
    def model():
        return worker.status()["model"]

    @app.get("/api/model/versions")
    def model_versions(limit: Annotated[int, Query(ge=1, le=1000)] = 50):
        return {"versions": store.model_versions(limit)}

    @app.post("/api/predict-all", status_code=202)
    def predict_all(body: BatchIn | None = None):
        ids = [i["id"] for i in store.list_images()]
        if body is not None and body.image_ids is not None:
            unknown = sorted(set(body.image_ids) - set(ids))
            if unknown:
                raise HTTPException(404, f"no images with ids {unknown}")
            ids = body.image_ids
        return worker.start_batch(ids)

    @app.get("/api/predict-all")
    def predict_all_status():
        return worker.status()["batch"]

    @app.delete("/api/predict-all")
    def cancel_predict_all():
        return worker.cancel_batch()

    @app.get("/api/images/{image_id}/prediction.png")
    def stored_prediction(image_id: int):
        p = store.prediction(image_id)
        if p is None or not p["label_path"]:
            raise HTTPException(404, f"image {image_id} has no stored prediction yet; run 'predict all'")
        return FileResponse(store.dir / p["label_path"], media_type="image/png",
                            headers={"Cache-Control": "no-store", "X-Model-Rev": str(p["rev"])})

    # ----------------------------------------------------------------------------------- export
    @app.get("/api/export/annotations.json")
    def export_annotations():
        data = _annotations_json(store)
        atomic_write_bytes(store.dir / "export" / "annotations.json", data)
        return Response(data, media_type="application/json", headers=_attachment("annotations.json"))

    @app.get("/api/export/model.pointseg")
    def export_model():
        path = store.dir / "export" / "model.pointseg"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".model-{secrets.token_hex(4)}.pointseg")
        worker.save_model_now(tmp)
        tmp.replace(path)
        return FileResponse(path, media_type="application/octet-stream", filename="model.pointseg")

    @app.get("/api/export/summary.csv")
    def export_summary():
        rows = _summary_rows(store)
        if not rows:
            raise HTTPException(409, "no predictions yet; run 'predict all' first")
        from pointseg.outputs import write_summary_csv

        path = store.dir / "export" / "summary.csv"
        write_summary_csv(rows, path)
        return FileResponse(path, media_type="text/csv", filename="summary.csv")

    @app.get("/api/export/results.zip")
    def export_zip(labels: bool = True, overlays: bool = True, probabilities: bool = False):
        path = _results_zip(store, worker, labels=labels, overlays=overlays, probabilities=probabilities)
        return FileResponse(path, media_type="application/zip", filename="pointseg-results.zip",
                            background=BackgroundTask(os.unlink, path))

    return app


# ---------------------------------------------------------------------------------------------- helpers
def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _host_name(header: str) -> str:
    """``Host`` header without the port (``[::1]:8765`` → ``[::1]``)."""
    if header.startswith("["):
        return header.split("]")[0] + "]"
    return header.rsplit(":", 1)[0]


def _offer(queue: asyncio.Queue, event: dict) -> None:
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:  # a stalled tab misses events; it re-syncs on the next one
        pass


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


def _token_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return (request.headers.get("x-pointseg-token") or request.cookies.get("pointseg_token")
            or request.query_params.get("token"))


def _attachment(name: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _encode(res, view: str, k: int) -> bytes:
    key = (view, k if view == "proba" else 0)
    data = res.encoded.get(key)
    if data is None:
        if view == "labels":
            data = render.label_png(res.labels, res.colors)
        elif view == "proba":
            data = render.proba_png(res.proba[k], res.colors[k])
        else:
            data = render.uncertainty_png(res.uncertainty, len(res.classes))
        res.encoded[key] = data
    return data


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header when possible; a full read otherwise."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "F") or path.suffix.lower() not in (".tif", ".tiff"):
                return im.width, im.height
    except Exception:  # noqa: BLE001
        pass
    arr = read_image(path)
    return arr.shape[1], arr.shape[0]


def register_folder(store: ProjectStore, folder: Path) -> tuple[int, int, list[str]]:
    """Add every image of a folder (by reference, not copied); returns (added, known, problems)."""
    from pointseg.imageio import list_images

    added = known = 0
    problems = []
    for path in list_images([folder]):
        try:
            w, h = image_size(path)
            _, created = store.add_image(sha256=sha256_file(path), name=path.name, width=w, height=h,
                                         n_bytes=path.stat().st_size, source_path=str(path.resolve()))
            added += created
            known += not created
        except (PointsegError, OSError) as exc:
            problems.append(f"{path.name}: {exc}")
    return added, known, problems


def _ingest_upload(store: ProjectStore, up: UploadFile, max_bytes: int) -> tuple[dict, bool]:
    name = Path(up.filename or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise StoreError(f"{name}: unsupported file type {suffix or '(none)'}; upload PNG, JPEG, BMP "
                         "or TIFF images", 415)
    images = store.dir / "images"
    fd, tmp = tempfile.mkstemp(dir=images, prefix=".upload-", suffix=suffix)
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            while chunk := up.file.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise StoreError(f"{name}: larger than the upload limit of {max_bytes // 2**20} MiB", 413)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if size == 0:
            raise StoreError(f"{name}: the file is empty", 422)
        try:
            arr = read_image(tmp)
        except PointsegError as exc:
            msg = str(exc).replace(Path(tmp).name, name)
            raise StoreError(msg if name in msg else f"{name}: {msg}", 422) from None
        sha = sha256_file(tmp)
        rel = f"images/{sha[:32]}{suffix}"
        os.replace(tmp, store.dir / rel)
        tmp = None
        return store.add_image(sha256=sha, name=name, width=arr.shape[1], height=arr.shape[0],
                               n_bytes=size, stored_path=rel)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _display_file(store: ProjectStore, image_id: int):
    path = store.image_file(image_id)
    if not path.is_file():
        raise StoreError(f"the file of image {image_id} is missing on the server (moved or deleted?)", 410)
    suffix = path.suffix.lower()
    if suffix in BROWSER_SUFFIXES:
        from PIL import Image

        with Image.open(path) as im:
            plain = im.mode in ("1", "L", "P", "RGB", "RGBA", "LA")
        if plain:
            media = {".png": "image/png", ".bmp": "image/bmp"}.get(suffix, "image/jpeg")
            return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})
    # 16-bit, TIFF, …: show exactly what the network sees (the core's rescaling), converted once
    sha = store.image_sha(image_id)
    out = store.dir / "thumbs" / f"{sha[:32]}-display.png"
    if not out.is_file():
        from PIL import Image

        from pointseg.outputs import encode_png

        atomic_write_bytes(out, encode_png(Image.fromarray(read_image(path)), compress_level=1))
    return FileResponse(out, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _thumbnail(store: ProjectStore, image_id: int):
    sha = store.image_sha(image_id)
    out = store.dir / "thumbs" / f"{sha[:32]}.jpg"
    if not out.is_file():
        from PIL import Image

        path = store.image_file(image_id)
        if not path.is_file():
            raise StoreError(f"the file of image {image_id} is missing on the server", 410)
        arr = read_image(path)
        im = Image.fromarray(arr)
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82)
        atomic_write_bytes(out, buf.getvalue())
    return FileResponse(out, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def _annotations_json(store: ProjectStore) -> bytes:
    """The project's annotations in the file format ``pointseg train`` reads (validated by the core)."""
    from pointseg.annotations import AnnotationSet

    ts = store.training_set()
    if len(ts.classes) < 2:
        raise StoreError("the annotation file needs at least two classes; add them first", 409)
    if not ts.image_ids:
        raise StoreError("no annotations yet; click some points first", 409)
    raw = {
        "version": 1,
        "classes": [{"name": n, "color": c} for n, c in zip(ts.classes, ts.colors)],
        "images": [{"path": str(store.image_file(i)),
                    "points": [[x, y, int(c)] for x, y, c in pts],
                    "scribbles": scr}
                   for i, pts, scr in zip(ts.image_ids, ts.points, ts.scribbles)],
    }
    AnnotationSet.from_dict(raw, base_dir=store.dir, source="annotations.json")  # same checks as train
    return json.dumps(raw, indent=2).encode()


def _summary_rows(store: ProjectStore) -> list[dict]:
    rows = []
    for img in store.list_images():
        p = img["prediction"]
        if p is None:
            continue
        if p["status"] != "ok":
            rows.append({"image": img["name"], "error": (p["stats"] or {}).get("error", p["status"])})
        else:
            rows.append({"image": img["name"], "height": img["height"], "width": img["width"],
                         "model_rev": p["rev"], **(p["stats"] or {})})
    return rows


def _results_zip(store: ProjectStore, worker: Worker, *, labels: bool, overlays: bool,
                 probabilities: bool) -> str:
    """Label PNGs, overlays, probabilities (float16 .npy) and summary.csv of every predicted image."""
    from pointseg.outputs import encode_png, overlay, write_summary_csv

    m = worker.model
    if m.status != "ok":
        raise NoModel(m.message)
    rows = _summary_rows(store)
    if not rows:
        raise StoreError("no predictions yet; run 'predict all' first", 409)
    fd, out = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for img in store.list_images():
            p = store.prediction(img["id"])
            if p is None or p["status"] != "ok" or not p["label_path"]:
                continue
            stem = Path(img["name"]).stem + f"-{img['id']}"
            need_pred = overlays or probabilities
            if labels:
                z.write(store.dir / p["label_path"], f"labels/{stem}.png")
            if need_pred:
                fmap = worker.features.get(img["id"])
                pred = m.segmenter.predict_full(fmap, probabilities=probabilities)
                if overlays:
                    from PIL import Image

                    rgb = read_image(store.image_file(img["id"]))
                    z.writestr(f"overlays/{stem}_overlay.png",
                               encode_png(Image.fromarray(overlay(rgb, pred.labels, m.colors)), 1))
                if probabilities:
                    buf = io.BytesIO()
                    np.save(buf, pred.probabilities.astype(np.float16))
                    z.writestr(f"probabilities/{stem}_proba.npy", buf.getvalue())
        tmpdir = Path(tempfile.mkdtemp())
        write_summary_csv(rows, tmpdir / "summary.csv")
        z.write(tmpdir / "summary.csv", "summary.csv")
        (tmpdir / "summary.csv").unlink()
        tmpdir.rmdir()
        z.writestr("annotations.json", _annotations_json(store))
        mp = Path(tempfile.mkdtemp()) / "model.pointseg"
        worker.save_model_now(mp)
        z.write(mp, "model.pointseg")
        mp.unlink()
        mp.parent.rmdir()
    return out

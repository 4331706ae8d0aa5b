"""The FastAPI application of ``pointseg serve``: services, guards, error handlers and the routers.

:func:`create_app` wires :class:`~pointseg.server.deps.Services` (store, model service, scheduler, events)
into ``app.state`` for the routes' ``Depends``, wraps everything in
:class:`~pointseg.server.guards.GuardMiddleware`, turns every known failure into a one-line JSON error
without server paths, and includes one router per area (:mod:`pointseg.server.routes`).
"""
from __future__ import annotations

import errno
import logging
import sqlite3
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pointseg.errors import OutputError, PointsegError
from pointseg.server.deps import Services, Settings
from pointseg.server.guards import (GuardMiddleware, MAX_FILES_PER_UPLOAD, is_loopback, public_message,
                                    scrub_paths, storage_error)
from pointseg.server.media import image_size, register_folder  # noqa: F401 - used by `serve`
from pointseg.server.model_service import NoModel
from pointseg.server.routes import ROUTERS
from pointseg.server.scheduler import PRIO_PREFETCH
from pointseg.server.store import ProjectStore, StoreError

log = logging.getLogger("pointseg.server")

__all__ = ["Settings", "create_app", "register_folder", "image_size"]


def create_app(settings: Settings, *, store: ProjectStore | None = None,
               services: Services | None = None) -> FastAPI:
    """The app for one project. ``services`` may be given (tests build their own); the scheduler's
    threads start with the app's lifespan and stop with it."""
    services = services or Services.build(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services.scheduler.start()
        # compute features of annotated images first (training needs them), then the rest in order
        for i in services.store.training_set().image_ids:
            services.scheduler.request_features(i, PRIO_PREFETCH)
        yield
        services.scheduler.stop()

    app = FastAPI(title="pointseg", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.services = services
    app.add_middleware(GuardMiddleware, token=settings.token, loopback=is_loopback(settings.host),
                       upload_limit=MAX_FILES_PER_UPLOAD * settings.max_upload_bytes + (1 << 20),
                       json_limit=settings.max_json_bytes)
    _add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    _one_line_errors_in_schema(app)
    return app


#: every error the API returns: ``{"detail": "one line"}``
ERROR_SCHEMA = {"type": "object", "title": "Error", "required": ["detail"],
                "properties": {"detail": {"type": "string", "title": "Detail"}}}


def _one_line_errors_in_schema(app: FastAPI) -> None:
    """The OpenAPI schema says what validation errors really look like here: one line, not FastAPI's list."""
    default = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = default()
            schema.setdefault("components", {}).setdefault("schemas", {})["HTTPValidationError"] = ERROR_SCHEMA
        return app.openapi_schema

    app.openapi = openapi


def _version() -> str:
    from pointseg import __version__

    return __version__


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": scrub_paths(message.strip().splitlines()[0] if message.strip() else
                                               "error")}, status_code=status)


def _disk_status(exc: OSError) -> int:
    """507 for a full disk, 503 for one that cannot be written now, 500 for anything else."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return 503
    return 500


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return _err(exc.status, str(exc))

    @app.exception_handler(PointsegError)
    async def _core_error(request: Request, exc: PointsegError):
        return _err(422, str(exc))

    @app.exception_handler(OutputError)          # the project's own files could not be written
    async def _output_error(request: Request, exc: OutputError):
        return _err(_disk_status(exc), str(exc))

    @app.exception_handler(NoModel)
    async def _no_model(request: Request, exc: NoModel):
        return _err(409, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return _err(exc.status_code, str(exc.detail))

    @app.exception_handler(sqlite3.Error)
    async def _db(request: Request, exc: sqlite3.Error):
        status, message = storage_error(exc)
        log.warning("database error on %s: %s", request.url.path, exc)
        return _err(status, message)

    @app.exception_handler(OSError)
    async def _os(request: Request, exc: OSError):
        status = _disk_status(exc)
        if status == 507:
            return _err(507, "the disk holding the project is full; free some space and try again")
        if status == 503:
            return _err(503, f"the project folder cannot be written: {public_message(exc)}")
        log.exception("I/O error on %s", request.url.path)
        return _err(500, f"I/O error: {public_message(exc)}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _err(422, f"{where or 'request'}: {first.get('msg')}{more}")

"""Exports: the annotation file, the model file, summary.csv and the results zip.

Anything that needs the model runs as a scheduler job on the model thread (never on the request thread);
the route only waits for it.
"""
from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from pointseg.server import exports
from pointseg.server.deps import ServicesDep, StoreDep

router = APIRouter(prefix="/api/export", tags=["export"])


def _attachment(name: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


async def _job(services, fn):
    return await asyncio.wrap_future(services.scheduler.submit(fn))


@router.get("/annotations.json", responses={200: {"content": {"application/json": {}}}})
async def export_annotations(store: StoreDep):
    """The annotations in ``pointseg train``'s format; image paths are relative to the file as it is
    written in the project (``export/annotations.json``)."""
    data = await run_in_threadpool(exports.write_annotations, store)
    return Response(data, media_type="application/json", headers=_attachment("annotations.json"))


@router.get("/model.pointseg", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def export_model(services: ServicesDep):
    path = await _job(services, lambda m: exports.write_model(services.models, m))
    return FileResponse(path, media_type="application/octet-stream", filename="model.pointseg")


@router.get("/summary.csv", response_class=FileResponse, responses={200: {"content": {"text/csv": {}}}})
async def export_summary(store: StoreDep):
    path = await run_in_threadpool(exports.write_summary, store)
    return FileResponse(path, media_type="text/csv", filename="summary.csv")


@router.get("/results.zip", response_class=FileResponse, responses={200: {"content": {"application/zip": {}}}})
async def export_zip(services: ServicesDep, labels: bool = True, overlays: bool = True,
                     probabilities: bool = False):
    """Label PNGs (the CLI's names), overlays, optionally probabilities, summary, annotations and model.
    Downloads as ``results-labels.zip`` or ``results-probabilities.zip``."""
    path = await _job(services, lambda m: exports.results_zip(
        services.models, m, labels=labels, overlays=overlays, probabilities=probabilities))
    return FileResponse(path, media_type="application/zip", filename=exports.ZIP_NAMES[probabilities],
                        background=BackgroundTask(os.unlink, path))

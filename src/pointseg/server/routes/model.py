"""The model and its predictions: live overlays, suggestions, stats, the model's state and history, and
"predict all"."""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from pointseg import limits
from pointseg.server import render
from pointseg.server.deps import SchedulerDep, ServicesDep, StoreDep
from pointseg.server.model_service import Result
from pointseg.server.scheduler import WHOLE, Want
from pointseg.server.schemas import (BatchIn, BatchOut, ImageId, ModelOut, ModelVersionsOut, StatsOut,
                                     SuggestionsOut)
from pointseg.server.store import StoreError

router = APIRouter(prefix="/api", tags=["model"])

MinRev = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
View = Literal["labels", "proba", "uncertainty"]
ClassIndex = Annotated[int, Query(ge=0, le=255)]
Timeout = Annotated[float, Query(gt=0, le=300)]
Box = Annotated[str | None, Query(pattern=r"^\d{1,9},\d{1,9},\d{1,9},\d{1,9}$",
                                  description="x0,y0,x1,y1 in image pixels (x1, y1 exclusive)")]
Scale = Annotated[float, Query(gt=0, le=1, description="output pixels per image pixel (1: full resolution)")]


def region_want(box: str | None, scale: float, image: dict) -> Want:
    """The region a ``box=x0,y0,x1,y1&scale=s`` query names, checked against the image and
    :data:`pointseg.limits.MAX_REGION_PIXELS` (422 with one line otherwise); no box: the whole image."""
    if box is None:
        if scale != 1:
            raise HTTPException(422, "scale needs a box: ask for box=0,0,width,height to preview the whole image")
        return WHOLE
    x0, y0, x1, y1 = (int(v) for v in box.split(","))
    w, h = image["width"], image["height"]
    if not (x0 < x1 <= w and y0 < y1 <= h):
        raise HTTPException(422, f"box {box} is not a non-empty box x0,y0,x1,y1 inside the {w} x {h} image")
    out = math.ceil((y1 - y0) * scale) * math.ceil((x1 - x0) * scale)
    if out > limits.max_region_pixels():
        raise HTTPException(422, f"box {box} at scale {scale:g} is {out:,} output pixels, more than one region "
                                 f"may have ({limits.max_region_pixels():,}); ask for a smaller box or scale, "
                                 f"or set {limits.MAX_REGION_PIXELS.env}")
    if scale == 1 and (x0, y0, x1, y1) == (0, 0, w, h):
        return WHOLE                     # the whole overlay: cached per model version, shared with stats
    return Want("region", (y0, y1, x0, x1), scale)


async def _result(services, image_id: int, min_rev: int | None, timeout: float, want: Want = WHOLE) -> Result:
    store = services.store
    store.image(image_id)  # 404 early
    if min_rev is not None and min_rev > store.rev():
        raise HTTPException(422, f"min_rev {min_rev} is ahead of the project (revision {store.rev()})")
    fut = services.scheduler.request_prediction(image_id, min_rev, want)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=timeout)
    except asyncio.TimeoutError:
        raise HTTPException(504, "the model is still working on this image; try again") from None


def _encode(res: Result, view: str, k: int) -> bytes:
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


@router.get("/images/{image_id}/overlay.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def overlay(image_id: ImageId, services: ServicesDep, view: View = "labels", class_index: ClassIndex = 0,
                  min_rev: MinRev = None, timeout: Timeout = 60.0, box: Box = None, scale: Scale = 1.0):
    """The live prediction as a palette PNG: the whole image, or with ``box`` (and ``scale``) only that
    region — what the viewer shows, at screen resolution — in time proportional to the region. At scale 1 a
    region equals the same crop of the whole overlay. ``X-Box`` / ``X-Scale`` say what the PNG covers."""
    want = region_want(box, scale, services.store.image(image_id))
    return await _overlay_response(services, image_id, view, class_index, min_rev, timeout, want)


@router.get("/images/{image_id}/first-view.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def first_view(image_id: ImageId, services: ServicesDep, view: View = "labels", class_index: ClassIndex = 0,
                     min_rev: MinRev = None, timeout: Timeout = 60.0):
    """A new image's coarse overlay, before its features exist: the model on the image downscaled to 512
    pixels on its long side (``X-Scale``), in a fraction of a second; the exact overlay follows from
    ``overlay.png`` once the features are computed (``features`` events report their progress)."""
    return await _overlay_response(services, image_id, view, class_index, min_rev, timeout, Want("coarse"))


async def _overlay_response(services, image_id: int, view: str, class_index: int, min_rev: int | None,
                            timeout: float, want: Want) -> Response:
    t0 = time.perf_counter()
    res = await _result(services, image_id, min_rev, timeout, want)
    t1 = time.perf_counter()
    if view == "proba" and class_index >= len(res.classes):
        raise HTTPException(422, f"class_index {class_index} is out of range (the model has "
                                 f"{len(res.classes)} classes)")
    data = await run_in_threadpool(_encode, res, view, class_index)
    t2 = time.perf_counter()
    timings = {**res.timings, "wait_ms": round((t1 - t0) * 1000, 1), "encode_ms": round((t2 - t1) * 1000, 1)}
    y0, y1, x0, x1 = res.box or (0, res.labels.shape[0], 0, res.labels.shape[1])
    return Response(data, media_type="image/png", headers={
        "Cache-Control": "no-store", "X-Model-Rev": str(res.rev), "X-Model-Version": str(res.version),
        "X-Box": f"{x0},{y0},{x1},{y1}", "X-Scale": f"{res.scale:.9g}",
        "X-Timings": json.dumps(timings, separators=(",", ":"))})


@router.get("/images/{image_id}/suggestions", response_model=SuggestionsOut)
async def suggestions(image_id: ImageId, services: ServicesDep, n: Annotated[int, Query(ge=1, le=20)] = 5,
                      min_rev: MinRev = None):
    res = await _result(services, image_id, min_rev, 60.0)
    avoid = []
    for a in services.store.annotations(image_id):
        avoid.extend([(a["x"], a["y"])] if a["kind"] == "point" else [tuple(p) for p in a["points"]])
    picks = await run_in_threadpool(render.suggest_clicks, res.uncertainty, n=n, avoid=avoid)
    return {"rev": res.rev, "suggestions": picks}


@router.get("/images/{image_id}/stats", response_model=StatsOut)
async def stats(image_id: ImageId, services: ServicesDep, min_rev: MinRev = None):
    """Class fractions and regions of the live prediction (regions count every class but the background)."""
    res = await _result(services, image_id, min_rev, 60.0)
    out = await run_in_threadpool(render.label_stats, res.labels, res.classes, res.background,
                                  services.store.settings().get("ng_area"))
    return {"rev": res.rev, **out}


@router.get("/images/{image_id}/prediction.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def stored_prediction(image_id: ImageId, store: StoreDep):
    store.image(image_id)
    p = store.prediction(image_id)
    if p is None or not p["label_path"]:
        raise StoreError(f"image {image_id} has no stored prediction yet; run 'predict all'", 404)
    return FileResponse(store.dir / p["label_path"], media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Model-Rev": str(p["rev"])})


@router.get("/model", response_model=ModelOut)
def model(scheduler: SchedulerDep):
    return scheduler.status()["model"]


@router.get("/model/versions", response_model=ModelVersionsOut)
def model_versions(store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50):
    return {"versions": store.model_versions(limit)}


@router.post("/predict-all", status_code=202, response_model=BatchOut)
def predict_all(store: StoreDep, scheduler: SchedulerDep, body: BatchIn | None = None):
    """Predict every image (or ``image_ids``) and store the results. Images already predicted by the
    current model are skipped, so a run after Stop resumes; while the model retrains the run waits."""
    ids = [i["id"] for i in store.list_images()]
    if body is not None and body.image_ids is not None:
        unknown = sorted(set(body.image_ids) - set(ids))
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" …" if len(unknown) > 10 else "")
            raise HTTPException(404, f"no images with ids {shown}")
        ids = list(dict.fromkeys(body.image_ids))
    return scheduler.start_batch(ids)


@router.get("/predict-all", response_model=BatchOut)
def predict_all_status(scheduler: SchedulerDep):
    return scheduler.status()["batch"]


@router.delete("/predict-all", response_model=BatchOut)
def cancel_predict_all(scheduler: SchedulerDep):
    return scheduler.cancel_batch()

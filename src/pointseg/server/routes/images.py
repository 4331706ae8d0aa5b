"""Images: the list (with prediction and failure status), uploads, one image, its file and thumbnail."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pointseg.server import media
from pointseg.server.deps import SchedulerDep, ServicesDep, StoreDep
from pointseg.decision import DEFAULT_RANKING
from pointseg.server.guards import MAX_FILES_PER_UPLOAD
from pointseg.server.ranking import APP_RANKINGS, RankingOut
from pointseg.server.scheduler import PRIO_PREFETCH, PRIO_VIEW
from pointseg.server.schemas import ImageDetailOut, ImageId, ImagesOut, RevOut, UploadOut
from pointseg.server.store import StoreError

router = APIRouter(prefix="/api/images", tags=["images"])


@router.get("", response_model=ImagesOut)
def images(services: ServicesDep):
    """Every image with its annotation counts, its stored prediction (``prediction_stale`` when made by
    another model than the current annotations and settings give) and ``status: failed`` with an
    ``error`` when it cannot be read."""
    store = services.store
    return {"rev": store.rev(), "images": store.list_images(model_sig=services.current_signature())}


@router.post("", status_code=201, response_model=UploadOut)
async def upload(files: Annotated[list[UploadFile], File(description="image files")],
                 services: ServicesDep):
    store, limit = services.store, services.settings.max_upload_bytes
    if len(files) > MAX_FILES_PER_UPLOAD:
        raise StoreError(f"at most {MAX_FILES_PER_UPLOAD} files per upload request; send them in groups", 413)
    added, errors = [], []
    for up in files:
        try:
            img, created = await run_in_threadpool(media.ingest_upload, store, up, limit)
            added.append({**img, "created": created})
        except StoreError as exc:
            errors.append((exc.status, str(exc)))
        finally:
            await up.close()
    if added:
        services.scheduler.changed(store.rev(), what="images")
    if errors:
        return JSONResponse({"detail": "; ".join(m for _, m in errors), "added": added},
                            status_code=errors[0][0])
    return {"added": added}


@router.get("/ranking", response_model=RankingOut)
def ranking(services: ServicesDep,
            kind: Annotated[str, Query(description=f"{DEFAULT_RANKING} (the default), or one of: "
                                                 f"{', '.join(k for k in APP_RANKINGS if k != DEFAULT_RANKING)}")]
            = DEFAULT_RANKING,
            wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for scores")] = 2.0):
    """The unannotated images, most useful to annotate next first (``pointseg.decision``'s ranking with the
    current model), then the ones not scored yet (``pending``: features not computed, or still scoring).
    409 while there is no model."""
    return services.ranking.rank(services, kind=kind, wait_s=wait)


@router.get("/{image_id}", response_model=ImageDetailOut)
def image(image_id: ImageId, store: StoreDep, scheduler: SchedulerDep):
    img = store.image(image_id)
    ready = scheduler.request_features(image_id, PRIO_VIEW)
    # prefetch the neighbours in the list so "next" is instant
    ids = [i["id"] for i in store.list_images()]
    if image_id in ids:
        k = ids.index(image_id)
        for j in (k + 1, k - 1):
            if 0 <= j < len(ids):
                scheduler.request_features(ids[j], PRIO_PREFETCH)
    return {**img, "features_ready": ready, "annotations": store.annotations(image_id),
            "history": store.history(image_id)}


@router.delete("/{image_id}", response_model=RevOut)
def delete_image(image_id: ImageId, store: StoreDep, scheduler: SchedulerDep, services: ServicesDep):
    rev = store.delete_image(image_id)
    scheduler.forget_image(image_id)
    services.ranking.forget_image(image_id)
    scheduler.changed(rev, what="images")
    return {"rev": rev}


@router.get("/{image_id}/file")
def image_file(image_id: ImageId, store: StoreDep):
    return media.display_file(store, image_id)


@router.get("/{image_id}/thumb")
def thumb(image_id: ImageId, services: ServicesDep):
    return media.thumbnail(services.store, image_id, services.models.previews)

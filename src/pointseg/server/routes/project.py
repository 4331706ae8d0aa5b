"""The project as a whole: its summary, the model/batch status, and its method settings."""
from __future__ import annotations

from fastapi import APIRouter

from pointseg.server.deps import SchedulerDep, ServicesDep, StoreDep
from pointseg.server.schemas import ProjectOut, SettingsOut, SettingsPatch, StatusOut

router = APIRouter(prefix="/api", tags=["project"])


@router.get("/project", response_model=ProjectOut)
def project(services: ServicesDep):
    s, store, scheduler = services.settings, services.store, services.scheduler
    params = services.features.base.get_params()
    method = {k: params[k] for k in ("backbone", "features", "smoothing", "classifier", "C", "context_upscale")
              if k in params}
    return {"name": store.dir.name, "backbone": s.backbone, "method": method, "settings": store.settings(),
            **store.summary(), "token_required": s.token is not None, **scheduler.status(),
            "max_upload_bytes": s.max_upload_bytes}


@router.get("/status", response_model=StatusOut)
def status(store: StoreDep, scheduler: SchedulerDep):
    return {"rev": store.rev(), **scheduler.status()}


@router.get("/settings", response_model=SettingsOut)
def get_settings(store: StoreDep):
    """Method settings of this project (features, smoothing, C, min_region, ng_area)."""
    return store.settings()


@router.put("/settings", response_model=SettingsOut)
def put_settings(body: SettingsPatch, store: StoreDep, scheduler: SchedulerDep):
    """Change some method settings (only the fields given; ``C: null`` restores the default C); the
    model retrains with them, and the exported model records them."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("features", "smoothing", "min_region"):
        if key in changes and changes[key] is None:
            del changes[key]          # these have no "default" value other than the one stored
    settings, rev = store.update_settings(changes)
    scheduler.changed(rev, what="settings")
    scheduler.publish({"type": "settings", "rev": rev, "settings": settings})
    return settings

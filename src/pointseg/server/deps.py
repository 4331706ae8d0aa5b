"""The app's services, built once per app and handed to routes with FastAPI's ``Depends``.

Routes declare what they use (``store: StoreDep``, ``scheduler: SchedulerDep``); tests can swap any of them
with ``app.dependency_overrides`` and drive the routes in-process with FastAPI's TestClient.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from pointseg.presets import DEFAULT_BACKBONE
from pointseg.server.media import PreviewCache
from pointseg.server.model_service import FeatureStore, ModelService
from pointseg.server.ranking import AnnotationRanking
from pointseg.server.scheduler import EventHub, Scheduler
from pointseg.server.store import ProjectStore


class Settings(BaseModel):
    """How ``pointseg serve`` was started (not the project's method settings: those live in the store)."""

    project_dir: Path
    host: str = "127.0.0.1"
    token: str | None = None
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    precision: str = "auto"
    max_upload_bytes: int = 256 * 1024 * 1024          # of one image (pointseg.limits.MAX_UPLOAD_BYTES)
    max_json_bytes: int = 16 * 1024 * 1024             # of a JSON body (pointseg.limits.MAX_JSON_BODY_BYTES)
    debounce_ms: float = 10.0


@dataclass
class Services:
    settings: Settings
    store: ProjectStore
    features: FeatureStore
    models: ModelService
    scheduler: Scheduler
    events: EventHub
    ranking: AnnotationRanking = field(default_factory=AnnotationRanking)
    _sig: tuple[int, str] = (-1, "")
    _sig_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, store: ProjectStore | None = None) -> "Services":
        store = store or ProjectStore(settings.project_dir)
        features = FeatureStore(store, backbone=settings.backbone, weights=settings.weights,
                                precision=settings.precision, features=store.settings()["features"])
        models = ModelService(store, features, previews=PreviewCache(store))
        events = EventHub()
        scheduler = Scheduler(models, events, debounce_s=settings.debounce_ms / 1000)
        return cls(settings, store, features, models, scheduler, events)

    def current_signature(self) -> str:
        """Signature of the model the current annotations and settings make (whether or not it is
        trained yet): a stored prediction with another one is stale."""
        rev = self.store.rev()
        with self._sig_lock:
            if self._sig[0] == rev:
                return self._sig[1]
        sig = self.store.training_set().signature()
        with self._sig_lock:
            self._sig = (rev, sig)
        return sig


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_store(request: Request) -> ProjectStore:
    return request.app.state.services.store


def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.services.scheduler


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[ProjectStore, Depends(get_store)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]

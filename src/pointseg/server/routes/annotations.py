"""Annotations of one image: list, add (points and scribbles, one undoable edit), erase, the OK mark, undo,
redo."""
from __future__ import annotations

from fastapi import APIRouter

from pointseg.server.deps import SchedulerDep, StoreDep
from pointseg.server.schemas import (AnnotationsIn, AnnotationsOut, EraseIn, EraseOut, HistoryStepOut, ImageId, OkIn,
                                     OkOut)

router = APIRouter(prefix="/api/images/{image_id}", tags=["annotations"])


@router.get("/annotations", response_model=AnnotationsOut)
def annotations(image_id: ImageId, store: StoreDep):
    return {"rev": store.rev(), "annotations": store.annotations(image_id), "history": store.history(image_id)}


@router.post("/annotations", status_code=201, response_model=AnnotationsOut)
def add_annotations(image_id: ImageId, body: AnnotationsIn, store: StoreDep, scheduler: SchedulerDep):
    anns, rev = store.add_annotations(image_id, [i.model_dump() for i in body.items])
    scheduler.changed(rev, what="annotations", image_id=image_id)
    return {"rev": rev, "annotations": anns, "history": store.history(image_id)}


@router.post("/erase", response_model=EraseOut)
def erase(image_id: ImageId, body: EraseIn, store: StoreDep, scheduler: SchedulerDep):
    ids, rev = store.erase(image_id, [list(p) for p in body.points], body.radius)
    if rev is not None:
        scheduler.changed(rev, what="annotations", image_id=image_id)
    return {"rev": rev if rev is not None else store.rev(), "removed": ids, "history": store.history(image_id)}


@router.put("/ok", response_model=OkOut)
def set_ok(image_id: ImageId, body: OkIn, store: StoreDep, scheduler: SchedulerDep):
    """Mark the image OK (defect-free: every pixel is background, so the model learns from it without a click)
    or unmark it; undoable like a click. 409 when it has marks of a defect class (erase them first)."""
    img, rev = store.set_ok(image_id, body.ok)
    if rev is not None:
        scheduler.changed(rev, what="annotations", image_id=image_id)
    return {"rev": rev if rev is not None else store.rev(), "image": img, "history": store.history(image_id)}


def _history_step(image_id: int, store, scheduler, undo: bool) -> dict:
    edit, rev = store.undo(image_id) if undo else store.redo(image_id)
    if edit is not None:
        scheduler.changed(rev, what="annotations", image_id=image_id)
    return {"rev": rev, "edit": edit, "annotations": store.annotations(image_id),
            "history": store.history(image_id)}


@router.post("/undo", response_model=HistoryStepOut)
def undo(image_id: ImageId, store: StoreDep, scheduler: SchedulerDep):
    return _history_step(image_id, store, scheduler, undo=True)


@router.post("/redo", response_model=HistoryStepOut)
def redo(image_id: ImageId, store: StoreDep, scheduler: SchedulerDep):
    return _history_step(image_id, store, scheduler, undo=False)

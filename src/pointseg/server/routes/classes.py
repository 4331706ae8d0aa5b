"""Classes: list (with annotation counts and the background flag), add, rename/recolour/make background,
reorder, delete (with its annotations)."""
from __future__ import annotations

from fastapi import APIRouter

from pointseg.server.deps import SchedulerDep, StoreDep
from pointseg.server.schemas import ClassesOut, ClassId, ClassIn, ClassOut, ClassPatch, OrderIn, OrderOut, RevOut

router = APIRouter(prefix="/api/classes", tags=["classes"])


@router.get("", response_model=ClassesOut)
def classes(store: StoreDep):
    """Classes in order; ``background`` marks the one background / OK class (every other class is a
    finding); ``n_points`` / ``n_scribbles`` say what a delete would take with it."""
    return {"rev": store.rev(), "classes": store.list_classes()}


@router.post("", status_code=201, response_model=ClassOut)
def add_class(body: ClassIn, store: StoreDep, scheduler: SchedulerDep):
    c = store.add_class(body.name, body.color)
    scheduler.changed(store.rev(), what="classes")
    return c


@router.put("/order", response_model=OrderOut)
def order_classes(body: OrderIn, store: StoreDep, scheduler: SchedulerDep):
    out = store.reorder_classes(body.ids)
    scheduler.changed(store.rev(), what="classes")
    return {"classes": out}


@router.patch("/{class_id}", response_model=ClassOut)
def patch_class(class_id: ClassId, body: ClassPatch, store: StoreDep, scheduler: SchedulerDep):
    c = store.update_class(class_id, name=body.name, color=body.color, background=body.background)
    scheduler.changed(store.rev(), what="classes")
    return c


@router.delete("/{class_id}", response_model=RevOut)
def delete_class(class_id: ClassId, store: StoreDep, scheduler: SchedulerDep):
    """Delete a class and its annotations (not undoable; the edits it empties leave the undo history)."""
    rev = store.delete_class(class_id)
    scheduler.changed(rev, what="classes")
    return {"rev": rev}

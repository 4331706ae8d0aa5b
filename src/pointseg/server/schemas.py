"""Typed request and response bodies of the API (pydantic), shared by the routers.

Request bodies refuse unknown fields; ids are bounded to SQLite's integer range (an id of 2^64 is a 404 or
a 422, never an overflow); response models describe what the page relies on and allow extra fields, so the
OpenAPI schema is a true contract (the fuzz test checks every response against it).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag

from pointseg import limits

#: SQLite's largest integer: ids beyond it cannot exist
MAX_ID = 2**63 - 1

Id = Annotated[int, Field(ge=0, le=MAX_ID)]
ImageId = Annotated[int, Path(ge=0, le=MAX_ID, description="image id")]
ClassId = Annotated[int, Path(ge=0, le=MAX_ID, description="class id")]
Coord = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- requests
class PointIn(_Body):
    kind: Literal["point"] = "point"
    class_id: Id
    x: Coord
    y: Coord


class ScribbleIn(_Body):
    kind: Literal["scribble"]
    class_id: Id
    width: float = Field(gt=0, le=limits.max_scribble_width())
    points: list[tuple[Coord, Coord]] = Field(min_length=1, max_length=limits.max_points_per_request())


def _kind(value) -> str:
    """Items without ``kind`` are points; unknown kinds fail validation with a clear message."""
    kind = value.get("kind", "point") if isinstance(value, dict) else getattr(value, "kind", "point")
    return kind if kind in ("point", "scribble") else "point"


class AnnotationsIn(_Body):
    items: list[Annotated[Union[Annotated[PointIn, Tag("point")], Annotated[ScribbleIn, Tag("scribble")]],
                          Discriminator(_kind)]] = Field(min_length=1, max_length=5000)


class OkIn(_Body):
    ok: StrictBool = Field(description="true: the image is defect-free (every pixel is background); false: unmark it")


class EraseIn(_Body):
    points: list[tuple[Coord, Coord]] = Field(min_length=1, max_length=limits.max_points_per_request())
    radius: float = Field(gt=0, le=5000)


Color = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
Name = Annotated[str, Field(min_length=1, max_length=80, pattern=r"\S")]


class ClassIn(_Body):
    name: Name
    color: Color | None = None


class ClassPatch(_Body):
    name: Name | None = None
    color: Color | None = None
    background: bool | None = Field(default=None, description="make this class the background / OK class")


class OrderIn(_Body):
    ids: list[Id] = Field(max_length=1000)


class BatchIn(_Body):
    image_ids: list[Id] | None = Field(default=None, max_length=1_000_000)


class SettingsPatch(_Body):
    """Method settings (all optional: a PUT changes what it names)."""

    features: Literal["hybrid", "deep"] | None = None
    smoothing: float | None = Field(default=None, ge=0, le=20, allow_inf_nan=False,
                                    description="sigma in pixels of the score smoothing (0 = off)")
    C: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False,
                            description="inverse L2 strength of the logistic head (null: the default)")
    min_region: int | None = Field(default=None, ge=0, le=10_000_000,
                                   description="regions smaller than this many pixels are absorbed")
    ng_area: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                  description="an image is NG when findings cover more than this fraction")


# ---------------------------------------------------------------------------------------------- responses
class ClassOut(_Out):
    id: int
    name: str
    color: str
    index: int
    background: bool
    n_annotations: int
    n_points: int
    n_scribbles: int


class ClassesOut(_Out):
    rev: int
    classes: list[ClassOut]


class OrderOut(_Out):
    classes: list[ClassOut]


class RevOut(_Out):
    rev: int


class SettingsOut(_Out):
    features: Literal["hybrid", "deep"]
    smoothing: float
    C: float | None
    min_region: int
    ng_area: float | None


class PredictionOut(_Out):
    rev: int
    status: str
    stats: dict[str, Any] | None


class ImageOut(_Out):
    id: int
    name: str
    width: int
    height: int
    n_bytes: int
    n_points: int
    n_scribbles: int
    ok: bool = Field(description="marked OK (defect-free): every pixel is known background")
    status: Literal["ok", "failed"]
    error: str | None
    prediction: PredictionOut | None
    prediction_stale: bool


class ImagesOut(_Out):
    rev: int
    images: list[ImageOut]


class HistoryOut(_Out):
    can_undo: int
    can_redo: int


class ImageDetailOut(ImageOut):
    """One image as the viewer opens it: its marks and undo state, and whether its features are ready."""

    features_ready: bool
    annotations: list[dict[str, Any]]
    history: HistoryOut


class UploadedOut(ImageOut):
    created: bool = Field(description="false: the same bytes were already in the project")


class UploadOut(_Out):
    added: list[UploadedOut]


class OkOut(_Out):
    rev: int
    image: ImageOut
    history: HistoryOut


class AnnotationsOut(_Out):
    rev: int
    annotations: list[dict[str, Any]]
    history: HistoryOut


class EraseOut(_Out):
    rev: int
    removed: list[int] = Field(description="ids of the annotations erased")
    history: HistoryOut


class HistoryEditOut(_Out):
    id: int
    kind: str


class HistoryStepOut(AnnotationsOut):
    """An undo or redo: the edit taken back (null: nothing to undo / redo) and the image's annotations."""

    edit: HistoryEditOut | None


class BatchOut(_Out):
    id: int
    running: bool
    done: int
    total: int
    failed: int
    waiting: bool = Field(description="waiting for the model to finish (re)training")
    skipped: int = Field(description="images taken over from an earlier run (resumed) or already current")
    resumed: bool
    rev: int | None = Field(description="revision of the model predicting (null before the first run)")
    cancelled: bool
    seconds: float
    message: str | None = Field(description="why the run stopped early, if it did")


class ModelOut(_Out):
    """The model the server predicts with (:meth:`ModelState.public`)."""

    rev: int = Field(description="annotation revision it was trained on (-1: none yet)")
    version: int
    status: Literal["none", "ok", "insufficient", "error"]
    message: str = Field(description="why there is no usable model, and what to do (empty when ok)")
    classes: list[str]
    colors: list[str]
    background: int = Field(description="index of the background / OK class")
    signature: str
    report: dict[str, Any] | None = Field(description="training report (point accuracy, cross-validation …)")
    timings: dict[str, Any]
    cv_done: bool


class FeatureCacheOut(_Out):
    cache_hits: int
    cache_misses: int


class PreviewsOut(_Out):
    pending: int = Field(description="images whose preview (for first views and thumbnails) the background "
                                     "has still to make")


class StatusOut(_Out):
    """What the page polls: the project revision, the model, "predict all", whether it is retraining."""

    rev: int
    model: ModelOut
    batch: BatchOut
    training: bool = Field(description="edits newer than the model: a fit is pending or running")
    edit_rev: int
    cancelled_fits: int
    features: FeatureCacheOut
    previews: PreviewsOut


class ProjectOut(StatusOut):
    """The project as a whole: its name, method, settings, counts and the status."""

    name: str
    backbone: str
    method: dict[str, Any] = Field(description="the method's main parameters (backbone, features, smoothing …)")
    settings: SettingsOut
    n_images: int
    n_annotations: int
    n_classes: int
    schema_version: int
    token_required: bool
    max_upload_bytes: int


class ModelVersionOut(_Out):
    id: int
    rev: int
    created_at: float
    classes: list[str]
    report: dict[str, Any]
    timings: dict[str, Any]


class ModelVersionsOut(_Out):
    versions: list[ModelVersionOut]


class SuggestionOut(_Out):
    """A place to click next: the centre of an uncertain region."""

    x: float
    y: float
    score: float = Field(description="mean uncertainty of the region, 0..1")
    radius: float


class SuggestionsOut(_Out):
    rev: int
    suggestions: list[SuggestionOut]


class StatsOut(_Out):
    """The live prediction's summary row: ``fraction_<class>`` for every class, ``regions_<class>`` for every
    finding class, ``status`` (OK/NG) when the project has an NG setting."""

    rev: int

"""The page itself: ``/`` and its three static files (not part of the API schema)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
STATIC_FILES = {"app.js", "style.css", "favicon.svg"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
async def static(name: str):
    if name not in STATIC_FILES:
        raise HTTPException(404, "not found")
    return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
async def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

"""The page itself: ``/`` and its static files, a handful of ES modules (not part of the API schema)."""
from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
#: file names the page may load from static/ (ES modules, the style sheet, the icon): a plain name, never a path
STATIC_NAME = re.compile(r"[a-z][a-z0-9_-]*\.(js|css|svg)")

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
async def static(name: str):
    if not STATIC_NAME.fullmatch(name) or not (STATIC / name).is_file():
        raise HTTPException(404, "not found")
    media = "text/javascript" if name.endswith(".js") else None
    return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
async def favicon():
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

"""Image files of a project: registering folders, taking uploads in, showing images and thumbnails.

Uploads are streamed to a temporary file in ``images/``, checked (type, size, a decodable image) and only
then renamed to their content hash, so a failed or cut-off upload leaves nothing behind. No message names a
server path: only the file's own name.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from fastapi import UploadFile
from fastapi.responses import FileResponse

from pointseg.errors import PointsegError
from pointseg.fileio import atomic_write_bytes, default_file_mode
from pointseg.imageio import IMAGE_SUFFIXES, read_image
from pointseg.server.guards import public_message
from pointseg.server.store import ProjectStore, StoreError, sha256_file

#: suffixes a browser shows as they are; anything else is converted once to PNG for display
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
THUMB_SIZE = 176


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header when possible; a full read otherwise."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "F") or path.suffix.lower() not in (".tif", ".tiff"):
                return im.width, im.height
    except Exception:  # noqa: BLE001 - the full read below gives the one-line error
        pass
    arr = read_image(path)
    return arr.shape[1], arr.shape[0]


def register_folder(store: ProjectStore, folder: Path) -> tuple[int, int, list[str]]:
    """Add every image of a folder (by reference, not copied); returns (added, known, problems)."""
    from pointseg.imageio import list_images

    added = known = 0
    problems = []
    for path in list_images([folder]):
        try:
            w, h = image_size(path)
            _, created = store.add_image(sha256=sha256_file(path), name=path.name, width=w, height=h,
                                         n_bytes=path.stat().st_size, source_path=str(path.resolve()))
            added += created
            known += not created
        except (PointsegError, OSError) as exc:
            problems.append(f"{path.name}: {public_message(exc)}")
    return added, known, problems


def ingest_upload(store: ProjectStore, up: UploadFile, max_bytes: int) -> tuple[dict, bool]:
    """Store one uploaded image; returns ``(image, created)`` or raises a one-line StoreError."""
    name = Path((up.filename or "upload").replace("\\", "/")).name or "upload"
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise StoreError(f"{name}: unsupported file type {suffix or '(none)'}; upload PNG, JPEG, BMP "
                         "or TIFF images", 415)
    images = store.dir / "images"
    fd, tmp = tempfile.mkstemp(dir=images, prefix=".upload-", suffix=suffix)
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), default_file_mode())
            while chunk := up.file.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise StoreError(f"{name}: larger than the upload limit of {max_bytes / 2**20:g} MiB", 413)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if size == 0:
            raise StoreError(f"{name}: the file is empty", 422)
        try:
            arr = read_image(tmp)
        except PointsegError as exc:
            msg = public_message(exc).replace(Path(tmp).name, name)
            raise StoreError(msg if name in msg else f"{name}: {msg}", 422) from None
        sha = sha256_file(tmp)
        rel = f"images/{sha[:32]}{suffix}"
        os.replace(tmp, store.dir / rel)
        tmp = None
        return store.add_image(sha256=sha, name=name, width=arr.shape[1], height=arr.shape[0],
                               n_bytes=size, stored_path=rel)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _existing_file(store: ProjectStore, image_id: int) -> Path:
    path = store.image_file(image_id)
    if not path.is_file():
        raise StoreError(f"the file of image {image_id} is missing on the server (moved or deleted?)", 410)
    return path


def display_file(store: ProjectStore, image_id: int) -> FileResponse:
    """The image as a browser shows it: the file itself when it can, else a PNG converted once."""
    from PIL import Image

    path = _existing_file(store, image_id)
    suffix = path.suffix.lower()
    cache = {"Cache-Control": "private, max-age=3600"}
    if suffix in BROWSER_SUFFIXES:
        try:
            with Image.open(path) as im:
                plain = im.mode in ("1", "L", "P", "RGB", "RGBA", "LA")
        except Exception as exc:  # noqa: BLE001 - a damaged file: one line, no path
            raise StoreError(f"image {image_id} cannot be read: {public_message(exc)}", 422) from None
        if plain:
            media = {".png": "image/png", ".bmp": "image/bmp"}.get(suffix, "image/jpeg")
            return FileResponse(path, media_type=media, headers=cache)
    # 16-bit, TIFF, …: show exactly what the network sees (the core's rescaling), converted once
    out = store.dir / "thumbs" / f"{store.image_sha(image_id)[:32]}-display.png"
    if not out.is_file():
        from pointseg.outputs import encode_png

        atomic_write_bytes(out, encode_png(Image.fromarray(read_image(path)), compress_level=1))
    return FileResponse(out, media_type="image/png", headers=cache)


def thumbnail(store: ProjectStore, image_id: int) -> FileResponse:
    out = store.dir / "thumbs" / f"{store.image_sha(image_id)[:32]}.jpg"
    if not out.is_file():
        from PIL import Image

        im = Image.fromarray(read_image(_existing_file(store, image_id)))
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82)
        atomic_write_bytes(out, buf.getvalue())
    return FileResponse(out, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

"""Image files of a project: registering folders, taking uploads in, showing images, previews, thumbnails.

Uploads are streamed to a temporary file in ``images/``, checked (type, size, a decodable image) and only
then renamed to their content hash, so a failed or cut-off upload leaves nothing behind. No message names a
server path: only the file's own name.

Every image has a small **preview** (:data:`PREVIEW_SIDE` pixels on its long side, :class:`PreviewCache`),
made once — when it is uploaded (from the pixels the upload check decoded anyway), or in the background
after the project opens — and kept in ``thumbs/`` next to the thumbnails. A new image's first view and its
thumbnail read it instead of decoding a 12–50 MP file.
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from fastapi import UploadFile
from fastapi.responses import FileResponse

from pointseg.errors import PointsegError
from pointseg.fileio import atomic_write_bytes, default_file_mode
from pointseg.imageio import IMAGE_SUFFIXES, downscale, downscaled_size, read_image, read_preview
from pointseg.server.guards import public_message
from pointseg.server.store import ProjectStore, StoreError, sha256_file

#: suffixes a browser shows as they are; anything else is converted once to PNG for display
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
THUMB_SIZE = 176
#: long side of an image's cached preview (the coarse first view is predicted from it)
PREVIEW_SIDE = 512


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
        image, created = store.add_image(sha256=sha, name=name, width=arr.shape[1], height=arr.shape[0],
                                         n_bytes=size, stored_path=rel)
        # the preview from the pixels decoded above: a first view of this image never decodes its file
        try:
            PreviewCache(store).put(image["id"], downscale(arr, PREVIEW_SIDE))
        except OSError:   # e.g. a full disk: the image is in; its preview is made when first needed
            pass
        return image, created
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _existing_file(store: ProjectStore, image_id: int) -> Path:
    path = store.image_file(image_id)
    if not path.is_file():
        raise StoreError(f"the file of image {image_id} is missing on the server (moved or deleted?)", 410)
    return path


def stamped_cache_file(store: ProjectStore, image_id: int, kind: str, suffix: str) -> Path:
    """Where a file made from the image as it is now (a thumbnail, a display PNG) lives in ``thumbs/``:
    named by the image's content hash *and* its file's size and modification time, as the previews are
    (:class:`PreviewCache`), so an image file changed in place is shown anew, never from a stale copy.
    410 when the file is gone."""
    st = _existing_file(store, image_id).stat()
    stem = f"{store.image_sha(image_id)[:32]}-{kind}-"
    return store.dir / "thumbs" / f"{stem}{st.st_size:x}-{st.st_mtime_ns:x}{suffix}"


def write_cache_file(out: Path, data: bytes) -> None:
    """Write ``out`` atomically and remove the copies made from the image's file as it was before
    (the same name up to the file stamp), so edits in place do not pile files up."""
    atomic_write_bytes(out, data)
    stem = out.name.rsplit("-", 2)[0]          # drop "<size>-<mtime><suffix>" (hex: no "-" inside)
    for old in out.parent.glob(f"{stem}-*{out.suffix}"):
        if old != out:
            old.unlink(missing_ok=True)


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
    out = stamped_cache_file(store, image_id, "display", ".png")
    if not out.is_file():
        from pointseg.outputs import encode_png

        write_cache_file(out, encode_png(Image.fromarray(read_image(path)), compress_level=1))
    return FileResponse(out, media_type="image/png", headers=cache)


def thumbnail(store: ProjectStore, image_id: int, previews: "PreviewCache | None" = None) -> FileResponse:
    """A small JPEG of the image, made once from its preview (not from the full image: opening a project
    of 50 MP images must not decode every one of them for the strip)."""
    out = stamped_cache_file(store, image_id, "thumb", ".jpg")
    if not out.is_file():
        from PIL import Image

        im = Image.fromarray((previews or PreviewCache(store)).get(image_id)[0])
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82)
        write_cache_file(out, buf.getvalue())
    return FileResponse(out, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


class PreviewCache:
    """Each image's preview — ``read_preview(file, PREVIEW_SIDE)``, equal to the image area-averaged to
    that size (JPEG and pyramidal TIFF: the approximations :func:`pointseg.imageio.read_preview` names) — as
    a PNG in ``thumbs/``, made once.

    A preview is named by the image's content hash and its file's size and modification time (as desktop
    thumbnail caches key theirs), so an image file changed in place gets a new preview, never a stale one;
    it is written atomically, and an image that cannot be read gets its one-line error and no file.
    Concurrent requests for one image's preview decode it once.
    """

    def __init__(self, store: ProjectStore):
        self.store = store
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, image_id: int) -> Path:
        """Where the preview of the image's file as it is now lives (410 when the file is gone)."""
        return stamped_cache_file(self.store, image_id, f"preview-{PREVIEW_SIDE}", ".png")

    def has(self, image_id: int) -> bool:
        try:
            return self.path(image_id).is_file()
        except StoreError:
            return False

    def get(self, image_id: int) -> tuple[np.ndarray, bool]:
        """``(pixels, cached)``: the preview, read from its file (``cached``) or made now from the image."""
        out = self.path(image_id)
        pixels = self._read(out, image_id)
        if pixels is not None:
            return pixels, True
        with self._guard:
            lock = self._locks.setdefault(image_id, threading.Lock())
        with lock:
            pixels = self._read(out, image_id)      # made by another thread meanwhile
            if pixels is not None:
                return pixels, True
            pixels = read_preview(_existing_file(self.store, image_id), PREVIEW_SIDE)   # ImageError: one line
            self._write(out, image_id, pixels)
            return pixels, False

    def make(self, image_id: int) -> bool:
        """Make the preview unless it exists; True when it was made now."""
        return not self.get(image_id)[1]

    def put(self, image_id: int, pixels: np.ndarray) -> None:
        """Store ``pixels`` (already the preview, e.g. from an upload's decoded image) as the preview."""
        self._write(self.path(image_id), image_id, pixels)

    def _read(self, out: Path, image_id: int) -> np.ndarray | None:
        """The cached preview, or None when there is none or it is not a preview of this image's size (a
        damaged file: made again)."""
        if not out.is_file():
            return None
        from PIL import Image

        img = self.store.image(image_id)
        try:
            with Image.open(out) as im:
                pixels = np.asarray(im.convert("RGB"))
        except Exception:  # noqa: BLE001 - a damaged cache file is not the user's problem: remake it
            return None
        return pixels if pixels.shape[:2] == downscaled_size((img["height"], img["width"]), PREVIEW_SIDE) else None

    def _write(self, out: Path, image_id: int, pixels: np.ndarray) -> None:
        from PIL import Image

        from pointseg.outputs import encode_png

        write_cache_file(out, encode_png(Image.fromarray(pixels), compress_level=1))

"""Read any image a user is likely to have into the one layout the networks want.

Everything becomes ``H x W x 3`` ``uint8``: 16-bit and float images are rescaled by their actual range
(industrial and microscopy cameras rarely fill 16 bits), grey is replicated to three channels and alpha is
dropped. A pixel-count limit (:data:`pointseg.limits.MAX_PIXELS`) guards against decompression bombs: the
size an image declares in its header is checked before a single pixel is decoded.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from pointseg.errors import ImageError
from pointseg.limits import MAX_PIXELS, max_pixels

#: Largest image decoded whole (pixels); kept for callers of the old name, see :mod:`pointseg.limits`.
DEFAULT_MAX_PIXELS = MAX_PIXELS.default

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8.

    Parameters
    ----------
    path : PNG, JPEG, BMP or TIFF file (8- or 16-bit, grey, RGB or RGBA).

    Examples
    --------
    >>> img = read_image("part.png")        # doctest: +SKIP
    >>> img.shape, img.dtype                 # doctest: +SKIP
    ((480, 640, 3), dtype('uint8'))
    """
    path = _existing(path)
    reader = _read_tiff if path.suffix.lower() in (".tif", ".tiff") else _read_pillow
    return to_rgb8(_decoded(path, reader), name=path.name)


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    return path


def _decoded(path: Path, reader, *args):
    """``reader(path, *args)`` with every decoder failure turned into one :class:`ImageError` line."""
    try:
        return reader(path, *args)
    except ImageError:
        raise
    except Exception as exc:  # Pillow/tifffile raise many types for corrupt files
        raise ImageError(
            f"cannot read image {path.name}: {type(exc).__name__}: {exc} "
            "(is the file complete and a PNG/JPEG/BMP/TIFF?)"
        ) from None


def coarse_scale(size: tuple[int, int], max_side: int) -> float:
    """Output pixels per image pixel of an image of ``size`` (H, W) brought to ``max_side`` on its long side."""
    return min(1.0, max_side / max(size))


def downscaled_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) of an image of ``size`` (H, W) downscaled to at most ``max_side`` pixels on its long side."""
    scale = coarse_scale(size, max_side)
    if scale >= 1:
        return int(size[0]), int(size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` resized (area-averaged) so its long side is at most ``max_side`` pixels."""
    return downscale_to(rgb, downscaled_size(rgb.shape[:2], max_side))


def read_preview(path: str | os.PathLike, max_side: int = 512) -> np.ndarray:
    """The image at most ``max_side`` pixels on its long side, as ``downscale(read_image(path), max_side)``,
    without holding or decoding more of the file than it must.

    PNG, BMP, 8-bit TIFF without a pyramid: decoded once and area-averaged in Pillow — equal to the exact
    path, without its full-size numpy copy. Two approximations, for speed: a JPEG is decoded at 1/2 … 1/8
    scale inside the DCT (Pillow's draft mode, to twice the preview's size: ~4x faster at 12 MP, within
    ~1–2.5 grey levels of the exact path on average), and a pyramidal TIFF reads its smallest level still at least the preview's size (a
    16-bit one rescaled by that level's own range). The size is always the exact path's.
    """
    path = _existing(path)
    reader = _tiff_preview if path.suffix.lower() in (".tif", ".tiff") else _pillow_preview
    return to_rgb8(_decoded(path, reader, max_side), name=path.name)


def _pillow_preview(path: Path, max_side: int) -> np.ndarray:
    from PIL import Image

    with _open_pillow(path) as img:
        h, w = downscaled_size((img.height, img.width), max_side)
        if (h, w) == (img.height, img.width):
            return _read_pillow(path)
        if img.format == "JPEG":
            img.draft("RGB", (2 * w, 2 * h))  # the smallest DCT scale still twice the preview (half the
            # error of the smallest one at a fraction of the cost), then area-averaged as the exact path
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):   # rescaled by the whole image's range first
            return downscale_to(to_rgb8(np.asarray(img), name=path.name), (h, w))
        # alpha dropped before resizing (Pillow resizes RGBA premultiplied; to_rgb8 ignores alpha)
        img = _rgb_like(img)
        img = img.convert({"RGBA": "RGB", "LA": "L"}[img.mode]) if img.mode in ("RGBA", "LA") else img
        return np.asarray(img.resize((w, h), Image.BOX))


def _tiff_preview(path: Path, max_side: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels if tif.series else []
        full = _tiff_hw(levels[0]) if levels else None
        if full is not None:
            _check_size(full[1], full[0], path.name)
            want = downscaled_size(full, max_side)
            fit = [lv for lv in levels[1:] if (hw := _tiff_hw(lv)) and hw[0] >= want[0] and hw[1] >= want[1]]
            if fit:
                array = _channels_last(fit[-1].asarray())
                return downscale_to(to_rgb8(array, name=path.name), want)
    return downscale(to_rgb8(_read_tiff(path), name=path.name), max_side)


def _tiff_hw(series) -> tuple[int, int] | None:
    axes = series.axes
    if "Y" not in axes or "X" not in axes:
        return None
    return int(series.shape[axes.index("Y")]), int(series.shape[axes.index("X")])


def downscale_to(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` area-averaged to ``size`` (H, W)."""
    from PIL import Image

    if tuple(size) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BOX))


def _read_pillow(path: Path) -> np.ndarray:
    with _open_pillow(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(img)
        return pillow_array(_rgb_like(img))


def pillow_array(img) -> np.ndarray:
    """``np.asarray(img)`` of an 8-bit Pillow image (L, LA, RGB, RGBA) without its transient copies:
    ``np.asarray`` goes through ``tobytes()``, which holds the pixels twice beside Pillow's own buffer (its
    pieces, then their join) — 10 bytes a pixel at the peak for RGB instead of 7 here (a 50 MP image: 500
    instead of 350 MB), where Pillow's raw encoder writes piece by piece into the array."""
    from PIL import Image, ImageFile

    img.load()
    w, h = img.size
    bands = len(img.getbands())
    out = np.empty((h, w, bands) if bands > 1 else (h, w), np.uint8)
    if out.size == 0 or img.mode not in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(img)
    flat = out.reshape(-1)
    encoder = Image._getencoder(img.mode, "raw", img.mode)
    try:
        encoder.setimage(img.im, (0, 0, w, h))
        pos, bufsize = 0, max(ImageFile.MAXBLOCK, w * 4)
        while True:
            _, status, data = encoder.encode(bufsize)
            flat[pos: pos + len(data)] = np.frombuffer(data, np.uint8)
            pos += len(data)
            if status:
                break
    finally:
        encoder.cleanup()
    if status < 0 or pos != flat.size:
        raise ImageError(f"cannot convert the decoded pixels (raw encoder status {status})")
    return out


def _rgb_like(img):
    """``img`` in a mode whose array :func:`to_rgb8` takes as it is (P → RGB(A), exotic modes → RGB)."""
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("L", "RGB", "RGBA", "LA"):
        return img.convert("RGB")
    return img


def _open_pillow(path: Path):
    """``Image.open`` with the pixel limit checked on the header (nothing decoded yet)."""
    from PIL import Image

    limit = max_pixels()
    # Pillow's own guard stays on and agrees with ours: it warns above MAX_IMAGE_PIXELS (we refuse there
    # anyway, with a clearer message, right after reading the header) and refuses outright at twice that,
    # so code that opens images with Pillow directly is covered too.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only: the declared size, nothing decoded yet
    except Image.DecompressionBombError as exc:
        raise ImageError(_too_large_message(path.name, f"declares {_pixels_in(exc)} pixels", limit)) from None
    try:
        _check_size(img.width, img.height, path.name)
    except ImageError:
        img.close()
        raise
    return img


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = page.shape
        if page.samplesperpixel > 1 and len(shape) == 3 and shape[0] == page.samplesperpixel:
            height, width = shape[1], shape[2]
        else:
            height, width = shape[0], shape[1]
        _check_size(width, height, path.name)
        array = page.asarray()
    return _channels_last(array)


def _channels_last(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    return array


def _check_size(width: int, height: int, name: str) -> None:
    limit = max_pixels()
    if width * height > limit:
        raise ImageError(_too_large_message(name, f"is {width}x{height} = {width * height:,} pixels", limit))


def _too_large_message(name: str, size: str, limit: int) -> str:
    return (f"image {name} {size}, above the limit of {limit:,} for decoding an image whole (a possible "
            f"decompression bomb); set {MAX_PIXELS.env} to allow it, or give it as an OME-Zarr or tiled TIFF "
            "input, which is read region by region")


def _pixels_in(exc: Exception) -> str:
    """The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) exceeds…")."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,}" if found else "too many"


def to_rgb8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Bring an array of any common image layout to ``H x W x 3`` uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = np.repeat(array[..., :1], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ImageError(
            f"{name} has shape {array.shape}; expected H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"{name} is empty (shape {array.shape})")
    _check_size(array.shape[1], array.shape[0], name)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array.astype(np.uint8) * 255)
    data = array.astype(np.float32)
    if not np.isfinite(data).all():
        raise ImageError(f"{name} contains NaN or infinite values")
    if np.issubdtype(array.dtype, np.floating) and data.min() >= 0.0 and data.max() <= 1.0:
        low, high = 0.0, 1.0
    else:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (data - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def load_image(image) -> np.ndarray:
    """Accept a path or an array (what the public API takes) and return ``H x W x 3`` uint8."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        return to_rgb8(image)
    raise ImageError(
        f"expected an image path or a numpy array, got {type(image).__name__}"
    )


def list_images(paths) -> list[Path]:
    """Expand files and folders into a sorted list of image files."""
    found: list[Path] = []
    for item in paths:
        item = Path(item)
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            found.append(item)
        else:
            raise ImageError(f"no such file or folder: {item}")
    return found

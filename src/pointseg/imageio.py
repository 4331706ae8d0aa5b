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
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            array = _read_tiff(path)
        else:
            array = _read_pillow(path)
    except ImageError:
        raise
    except Exception as exc:  # Pillow/tifffile raise many types for corrupt files
        raise ImageError(
            f"cannot read image {path.name}: {type(exc).__name__}: {exc} "
            "(is the file complete and a PNG/JPEG/BMP/TIFF?)"
        ) from None
    return to_rgb8(array, name=path.name)


def _read_pillow(path: Path) -> np.ndarray:
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
    with img:
        _check_size(img.width, img.height, path.name)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode not in ("L", "RGB", "RGBA", "LA"):
            img = img.convert("RGB")
        return np.asarray(img)


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

"""Where the batch engine's bytes come from and go to: fsspec URLs, and images read region by region.

Two jobs the eager reader (:mod:`pointseg.imageio`) does not do:

* **Locations.** Inputs and outputs may be local paths or fsspec URLs (``file://``, ``memory://``, ``s3://``,
  ``gs://``, ``http(s)://`` — the remote ones need the user's s3fs/gcsfs/aiohttp). Outputs are written
  atomically: a temporary name then a rename (local and file-like stores), or one PUT (object stores, where
  a PUT is atomic), so an interrupted run never leaves a half-written file under a final name.
* **Lazy images.** OME-Zarr (the full-resolution level of a multiscale image, channels chosen by the
  caller), plain zarr arrays and pyramidal/BigTIFF files (tifffile's zarr store) are opened without reading
  their pixels; :meth:`LazyImage.read` returns one region, so a 100,000 × 100,000 px slide is processed in
  tiles of bounded memory.

Pixel values follow :func:`pointseg.imageio.to_rgb8` exactly (same channel rules, same rescaling by the
image's value range), so a lazily read tile equals the same window of the eagerly read image. Non-8-bit
lazy images need their global value range first (:func:`region_range`, combined with :func:`combine_ranges`).

>>> img = open_lazy("slide.ome.zarr", channels=[0, 1, 2])      # doctest: +SKIP
>>> img.shape                                                   # doctest: +SKIP
(100000, 100000)
>>> tile = img.read_rgb(0, 1024, 0, 1024)                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointseg.errors import ImageError, PointsegError

#: suffixes of folders that hold one zarr image (treated as an image, never walked into)
ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff")
#: object stores: a PUT is atomic, and there is no cheap rename
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "http", "https"}


# ----------------------------------------------------------------------------------------------- locations
def is_url(location: str) -> bool:
    return "://" in str(location)


def is_local(location: str) -> bool:
    return not is_url(location) or str(location).startswith("file://")


def local_path(location: str) -> Path:
    """The filesystem path of a local location (plain path or ``file://`` URL)."""
    text = str(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def protocol(location: str) -> str:
    return str(location).split("://", 1)[0] if is_url(location) else "file"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for paths and URLs alike."""
    text = str(base).rstrip("/")
    return "/".join([text, *(p.strip("/") for p in parts if p)])


def filesystem(location: str):
    """``(fsspec filesystem, path inside it)`` for a URL; a clear error when its package is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(location))
    except (ImportError, ValueError) as exc:
        raise PointsegError(
            f"cannot open {location}: {exc} (install the fsspec backend for {protocol(location)}://, "
            "e.g. s3fs or gcsfs)"
        ) from None


def read_bytes(location: str) -> bytes:
    if is_local(location):
        path = local_path(location)
        if not path.is_file():
            raise ImageError(f"image not found: {location} (check the path)")
        return path.read_bytes()
    fs, path = filesystem(location)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise ImageError(f"image not found: {location} (check the URL)") from None


def write_bytes(location: str, data: bytes) -> None:
    """Write ``data`` so that ``location`` holds either its old content or all of ``data``, never a part."""
    if is_local(location):
        from pointseg.fileio import atomic_write_bytes

        atomic_write_bytes(local_path(location), data)
        return
    fs, path = filesystem(location)
    parent = path.rsplit("/", 1)[0]
    if protocol(location) in _OBJECT_STORES:
        fs.pipe_file(path, data)
        return
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.partial"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def exists(location: str) -> bool:
    if is_local(location):
        return local_path(location).exists()
    fs, path = filesystem(location)
    return fs.exists(path)


def remove_tree(location: str) -> None:
    """Delete a file or folder if it exists (work folders of tiled jobs, stale partial outputs)."""
    if is_local(location):
        import shutil

        path = local_path(location)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def move_tree(source: str, target: str) -> None:
    """Rename a finished output folder into place (replacing an older one)."""
    remove_tree(target)
    if is_local(source):
        os.replace(local_path(source), local_path(target))
        return
    fs, path = filesystem(source)
    fs.mv(path, filesystem(target)[1], recursive=True)


def stat(location: str) -> dict:
    """Size and modification time, to tell on ``--resume`` whether an input changed (no bytes read)."""
    if is_local(location):
        info = local_path(location).stat()
        return {"size": int(info.st_size), "mtime": round(float(info.st_mtime), 3)}
    fs, path = filesystem(location)
    info = fs.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime
    return {"size": int(info.get("size") or 0), "mtime": None if mtime is None else round(float(mtime), 3)}


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_hash(location: str) -> str:
    """A zarr folder's fingerprint: sha256 over its file names and sizes (reading every chunk would cost
    as much as the prediction)."""
    digest = hashlib.sha256()
    if is_local(location):
        root = local_path(location)
        entries = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    else:
        fs, path = filesystem(location)
        entries = sorted((k[len(path):], int(v.get("size") or 0)) for k, v in fs.find(path, detail=True).items())
    for name, size in entries:
        digest.update(f"{name}\0{size}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- eager read
def is_lazy_format(location: str) -> bool:
    """Formats read region by region: zarr folders and TIFF files."""
    name = str(location).rstrip("/").lower()
    return name.endswith(ZARR_SUFFIXES) or name.endswith(TIFF_SUFFIXES)


def read_whole(location: str) -> tuple[np.ndarray, bytes | None]:
    """A PNG/JPEG/BMP/TIFF as ``H x W x 3`` uint8 through :func:`pointseg.imageio.read_image` (its size
    guard and error messages), and the file's bytes (for the content hash). Remote files are fetched first."""
    from pointseg.imageio import read_image

    data = read_bytes(location)
    if is_local(location):
        return read_image(local_path(location)), data
    suffix = Path(str(location).split("?", 1)[0]).suffix
    with tempfile.TemporaryDirectory(prefix="pointseg-") as tmp:
        path = Path(tmp) / f"{Path(str(location)).stem or 'image'}{suffix}"
        path.write_bytes(data)
        return read_image(path), data


# ---------------------------------------------------------------------------------------------- lazy read
@dataclass
class LazyImage:
    """A zarr-backed image read one region at a time.

    ``index`` picks one plane (``t``, ``z``) and the chosen channels; ``channel_axis`` says where the
    channels are in what indexing returns (``None``: single-channel data).
    """

    location: str
    array: object  # a zarr array (or tifffile's zarr view)
    y_axis: int
    x_axis: int
    fixed: dict[int, object] = field(default_factory=dict)  # axis -> int index or channel list
    channel_axis: int | None = None
    _handle: object = None  # an open TiffFile, kept alive with the store

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[self.y_axis]), int(self.array.shape[self.x_axis])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def n_channels(self) -> int:
        if self.channel_axis is None:
            return 1
        chosen = self.fixed.get(self.channel_axis)
        return len(chosen) if isinstance(chosen, list) else int(self.array.shape[self.channel_axis])

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Raw values of rows ``y0:y1``, columns ``x0:x1`` as ``h x w`` or ``h x w x C`` (chosen channels)."""
        index, kept = [], []
        for axis in range(len(self.array.shape)):
            if axis == self.y_axis:
                index.append(slice(y0, y1))
                kept.append("y")
            elif axis == self.x_axis:
                index.append(slice(x0, x1))
                kept.append("x")
            elif axis in self.fixed:
                index.append(self.fixed[axis])  # a plane index, or the list of chosen channels
                if isinstance(self.fixed[axis], list):
                    kept.append("c")
            else:
                index.append(slice(None))
                kept.append("c")
        data = np.asarray(self.array.oindex[tuple(index)])
        order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
        return np.transpose(data, order)

    def read_rgb(self, y0: int, y1: int, x0: int, x1: int, value_range: tuple[float, float] | None = None):
        """A region as ``h x w x 3`` uint8, rescaled exactly as :func:`pointseg.imageio.to_rgb8` rescales the
        whole image (``value_range``: the whole image's, from :func:`region_range`; ignored for uint8)."""
        return to_uint8(as_three_channels(self.read(y0, y1, x0, x1), self.location), value_range)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def as_three_channels(data: np.ndarray, name: str = "image") -> np.ndarray:
    """The channel rules of :func:`pointseg.imageio.to_rgb8` (grey replicated, alpha dropped), no rescaling."""
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return np.repeat(data[..., None], 3, axis=-1)
    if data.ndim == 3 and data.shape[-1] == 2:
        return np.repeat(data[..., :1], 3, axis=-1)
    if data.ndim == 3 and data.shape[-1] == 4:
        return data[..., :3]
    if data.ndim == 3 and data.shape[-1] == 3:
        return data
    raise ImageError(f"{name}: {data.shape[-1]} channels; choose 1 or 3 of them with --channels (e.g. 0,1,2)")


def region_range(data: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a region's values, to be combined over all regions of an image."""
    values = data.astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageError("image contains NaN or infinite values")
    return float(values.min()), float(values.max())


def combine_ranges(ranges, dtype) -> tuple[float, float]:
    """The whole image's rescaling range from its regions' ranges, with to_rgb8's rule for [0, 1] floats."""
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if np.issubdtype(np.dtype(dtype), np.floating) and low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high


def to_uint8(data: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """to_rgb8's rescaling with a given range (the whole image's), so tiles agree with the whole image."""
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data)
    if data.dtype == np.bool_:
        return np.ascontiguousarray(data.astype(np.uint8) * 255)
    if value_range is None:
        raise ImageError("a non-8-bit image read in regions needs its value range (region_range) first")
    low, high = value_range
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def open_lazy(location: str, channels: list[int] | None = None) -> LazyImage:
    """Open an OME-Zarr / zarr / TIFF image without reading its pixels.

    Parameters
    ----------
    location : path or URL of a ``.zarr`` folder (OME-Zarr multiscale image or a plain array) or a TIFF file.
    channels : channel indices to use (1 or 3; default: all when the image has 1, 3 or 4 channels).
    """
    name = str(location).rstrip("/")
    try:
        if name.lower().endswith(TIFF_SUFFIXES):
            return _open_tiff(name, channels)
        return _open_zarr(name, channels)
    except PointsegError:
        raise
    except Exception as exc:  # zarr, tifffile and fsspec raise many types for missing or damaged data
        raise ImageError(
            f"cannot open {Path(name).name} as a zarr/OME-Zarr/TIFF image: {type(exc).__name__}: {exc}"
        ) from None


def zarr_store(location: str, read_only: bool = True):
    """A zarr store for a location: zarr's LocalStore for local paths (it creates folders), else fsspec."""
    import zarr

    if is_local(location):
        return zarr.storage.LocalStore(str(local_path(location)), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(str(location), read_only=read_only)


def _open_zarr(location: str, channels) -> LazyImage:
    import zarr

    node = zarr.open(store=zarr_store(location), mode="r")
    if isinstance(node, zarr.Array):
        return _from_plain_array(location, node, channels)
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = list(node.array_keys())
        if len(arrays) != 1:
            raise ImageError(
                f"{Path(location).name} is a zarr group without OME-Zarr multiscales metadata and with "
                f"{len(arrays)} arrays; point at one array (…/name.zarr/ARRAY)"
            )
        return _from_plain_array(location, node[arrays[0]], channels)
    first = multiscales[0]
    array = node[first["datasets"][0]["path"]]  # datasets go from full resolution down
    axes = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", ["t", "c", "z", "y", "x"][-array.ndim:])]
    if "y" not in axes or "x" not in axes:
        raise ImageError(f"{Path(location).name}: OME-Zarr axes {axes} have no y and x")
    fixed: dict[int, object] = {i: 0 for i, a in enumerate(axes) if a in ("t", "z")}
    channel_axis = axes.index("c") if "c" in axes else None
    if channel_axis is not None:
        fixed[channel_axis] = _choose_channels(int(array.shape[channel_axis]), channels, location)
    elif channels not in (None, [0]):
        raise ImageError(f"{Path(location).name} has one channel; drop --channels")
    return LazyImage(location, array, axes.index("y"), axes.index("x"), fixed, channel_axis)


def _from_plain_array(location: str, array, channels, handle=None) -> LazyImage:
    shape = tuple(int(s) for s in array.shape)
    if len(shape) == 2:
        if channels not in (None, [0]):
            raise ImageError(f"{Path(location).name} has one channel; drop --channels")
        return LazyImage(location, array, 0, 1, {}, None, handle)
    if len(shape) == 3:
        channel_axis = 2 if shape[2] <= 4 or shape[0] > 4 else 0
        y_axis, x_axis = (0, 1) if channel_axis == 2 else (1, 2)
        chosen = _choose_channels(shape[channel_axis], channels, location)
        return LazyImage(location, array, y_axis, x_axis, {channel_axis: chosen}, channel_axis, handle)
    raise ImageError(f"{Path(location).name}: array of shape {shape}; expected (y, x), (y, x, c) or (c, y, x)")


def _choose_channels(available: int, channels, location: str) -> list[int]:
    if channels is None:
        if available in (1, 3, 4):
            return list(range(available))
        raise ImageError(
            f"{Path(location).name} has {available} channels; choose 1 or 3 with --channels (e.g. --channels 0,1,2)"
        )
    bad = [c for c in channels if not 0 <= c < available]
    if bad:
        raise ImageError(f"{Path(location).name} has channels 0..{available - 1}; --channels {bad} are not among them")
    if len(channels) not in (1, 3):
        raise ImageError(f"--channels takes 1 or 3 channel indices, got {len(channels)}")
    return list(channels)


def _open_tiff(location: str, channels) -> LazyImage:
    import tifffile
    import zarr

    handle = tifffile.TiffFile(str(local_path(location))) if is_local(location) else tifffile.TiffFile(
        filesystem(location)[0].open(filesystem(location)[1], "rb"))
    try:
        array = zarr.open(handle.aszarr(level=0), mode="r")
        if isinstance(array, zarr.Group):  # a multi-resolution series: the first array is full resolution
            array = array[sorted(array.array_keys())[0]]
        return _from_plain_array(location, array, channels, handle)
    except BaseException:
        handle.close()
        raise


def image_size(location: str, channels=None) -> tuple[int, int]:
    """``(H, W)`` of a lazily readable image, from its metadata only."""
    lazy = open_lazy(location, channels)
    try:
        return lazy.shape
    finally:
        lazy.close()

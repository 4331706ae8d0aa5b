"""Images → cached multi-scale feature maps: the one expensive step of the method.

Everything interactive in pointseg rests on computing an image's features once: retraining after a click
only re-reads them. :class:`FeatureExtractor` runs a backbone (tiled for large images, bf16 + channels-last
where the CPU has native bf16, CUDA when present) and :class:`FeatureCache` keeps the results, bounded in
memory and optionally on disk as float16.

Geometry. An image of ``H x W`` is padded (reflecting) at the bottom/right to a multiple of
``spec.pad_multiple`` pixels, ``Hp x Wp``; the feature map has ``Hp/4 x Wp/4`` cells and covers exactly that
padded extent, so formula (1) of the method, ``x_f = x * w_f / w``, holds with ``w = Wp`` and a constant
ratio of 1/4 on every image. See :mod:`pointseg.sampling` for the pixel-centre convention.
"""

from __future__ import annotations

import copy
import hashlib
import mmap
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pointseg.backbones import build_backbone
from pointseg.classifier import check_interrupted
from pointseg.errors import PointsegError
from pointseg.imageio import load_image
from pointseg.lru import ByteLRU
from pointseg.presets import DEFAULT_BACKBONE

#: bumped whenever preprocessing changes in a way that changes features (invalidates disk caches). 2: the
#: context stage may see an enlarged copy (``context_upscale``); at factor 1 its features are version 1's,
#: so model files record 1 unless their factor is larger (older readers refuse only those)
PREPROCESSING_VERSION = 2

FEATURE_KINDS = ("deep", "hybrid")


#: side of the square tiles in which full-resolution filter responses are computed and cached
FINE_TILE = 256
#: bytes of full-resolution filter tiles kept in memory across all images (the "tiles in use"): 72 MB a
#: megapixel, so the tiles of five 1 MP training images stay (at 256 MB, clicks that moved to another image
#: recomputed its tiles: app p95 186-195 vs 94 ms), and a 12 MP image still peaks under 1.5 GB
FINE_CACHE_BYTES = 384_000_000
#: images above this many pixels hold their deep map as float16 in memory (see :func:`deep_dtype`)
DEEP_FLOAT16_ABOVE_PIXELS = 4_000_000
#: points in one tile above which its whole tile is computed rather than a window per point
POINTS_PER_TILE = 32
#: grid rows per band when streaming statistics over a deep map (bounds the upsampled-context copy) ...
MOMENT_BAND_CELLS = 64
#: ... and float32 bytes per band, so a wide image's bands have fewer rows
MOMENT_BAND_BYTES = 32_000_000
#: stride-16 cells per side of the tiles the context tail runs in on large images, and their margin (both
#: even; see :meth:`FeatureExtractor._context_tail`)
CONTEXT_TILE_CELLS = 128
CONTEXT_MARGIN_CELLS = 32
#: points sampled between two releases of a paged deep map's pages (see ``FeatureMap._sample_paged``)
PAGED_POINTS_PER_READ = 4
#: float32 bytes of the window converted and scored at a time by :func:`linear_scores` (within the caches)
LINEAR_CHUNK_BYTES = 3 << 20
#: bytes of a paged map read between two releases of its pages (``madvise`` costs ~0.3 ms a call)
PAGED_RELEASE_BYTES = 32 << 20
#: bytes of float16 deep-map windows kept resident between clicks (:meth:`FeatureMap.resident_window`): a
#: 1600 x 1000 viewport's cells (with the smoothing halo) on a large image are ~37 MB (102k cells x 176
#: channels x 2 bytes); bigger windows (a whole-image preview) are read from the map as they come
RESIDENT_WINDOW_BYTES = 48_000_000
#: pooled levels a paged (large) deep map keeps for zoomed-out previews: level ``L`` averages 2^L x 2^L
#: cells (see :meth:`FeatureMap.pooled`); up to 2, where a stride-32 context map still upsamples to the
#: level's grid exactly (4 x 4 cells of 4 px: a 1600-px view of up to ~180 MP reads at most a cell a pixel)
PYRAMID_LEVELS = 2
#: float32 bytes of a band of the deep map while its pooled levels are built (the transient of the pass)
PYRAMID_BAND_BYTES = 8 << 20


def deep_dtype(image_size: tuple[int, int]) -> type:
    """How a deep map is held in memory: float32, or float16 for images above :data:`DEEP_FLOAT16_ABOVE_PIXELS`.

    Half the bytes (a 12 MP image's stride-4 map: 264 MB instead of 528 MB) for a rounding of 5e-4 relative,
    far below the bf16 network's own 0.065 and what the float16 disk cache has always stored; small images
    stay float32 so the exact tiled-equals-whole identities hold to float32 precision.
    """
    return np.float16 if int(image_size[0]) * int(image_size[1]) > DEEP_FLOAT16_ABOVE_PIXELS else np.float32


def release_freed_memory() -> None:
    """Hand memory that was freed back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Extracting a large image allocates and frees hundreds of MB of tile-sized buffers; glibc keeps much
    of that in its heap (measured: 360 MB of resident memory on a 6 MP image), which a long-running server
    would carry for nothing. dask.distributed trims its workers the same way.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def paged_array(shape: tuple[int, ...], dtype, directory: str | os.PathLike) -> np.ndarray | None:
    """A writable ``np.memmap`` of ``shape`` over a file in ``directory`` that has no name (unlinked at once:
    nothing is left behind, even by a crash; the space is freed when the last view of the array goes), or
    ``None`` when the file cannot be made (no space, read-only directory): the caller then holds the array in
    memory. The space is reserved up front, so a full disk is this ``None`` rather than a SIGBUS later.

    Large images keep their deep map in one (:data:`pointseg.limits.PAGED_DEEP_ABOVE_PIXELS`): its pages
    live in the OS page cache, which reclaims them under pressure, and :func:`release_pages` drops them from
    this process's resident set after each pass, so resident memory does not grow with the image.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix="pointseg-paged-") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(1, nbytes))
            return np.memmap(handle, dtype=dtype, mode="r+", shape=tuple(shape))
    except (OSError, ValueError):
        return None


def is_paged(array) -> bool:
    """Whether ``array`` (or the array it is a view of) is a memory-mapped file (:func:`paged_array`)."""
    return getattr(array, "_mmap", None) is not None


def release_pages(array) -> None:
    """Drop a memory-mapped array's pages from this process's resident set (``MADV_DONTNEED``); the data
    stays in the file and the page cache and is faulted back in when read again. A no-op on other arrays."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None:
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):
            pass


def tile_cache(max_bytes: int) -> ByteLRU:
    """A :class:`~pointseg.lru.ByteLRU` of arrays, bounded by their bytes."""
    return ByteLRU(max_bytes, size=lambda a: a.nbytes)


_TILE_POLICY = threading.local()


@contextmanager
def tiles_without_eviction():
    """Within this block (this thread), filter tiles computed anew enter the shared tile cache only where it
    has room. For one-off passes over many images — the NG rule's held-out predictions of every annotated
    image — which would otherwise push out the tiles of the image the user is clicking on (its next click
    then recomputes them: ~100 ms a megapixel)."""
    before = getattr(_TILE_POLICY, "no_eviction", False)
    _TILE_POLICY.no_eviction = True
    try:
        yield
    finally:
        _TILE_POLICY.no_eviction = before


@lru_cache(maxsize=1)
def fine_tile_cache() -> ByteLRU:
    """The process-wide cache of full-resolution filter tiles (:data:`FINE_CACHE_BYTES`)."""
    return tile_cache(FINE_CACHE_BYTES)


@lru_cache(maxsize=1)
def resident_window_cache() -> ByteLRU:
    """The process-wide cache of resident deep-map windows (:data:`RESIDENT_WINDOW_BYTES`), by map key and
    level: ``(rows, cols, cells)``, ``cells`` ``None`` for a window noted but not held yet."""
    return ByteLRU(RESIDENT_WINDOW_BYTES, size=lambda item: 0 if item[2] is None else item[2].nbytes)


class FineFeatures:
    """Full-resolution filter responses of one image (:mod:`pointseg.filters`), computed per tile on demand.

    Held whole they cost 72 bytes a pixel (864 MB for 12 MP) for responses a click needs only where the user
    looks. This keeps the image's pixels (3 bytes a pixel) and computes :data:`FINE_TILE`-square tiles with
    :data:`pointseg.filters.HALO` pixels of context, which equal the whole-image responses exactly; recent
    tiles stay in a byte-bounded cache shared by all images (:func:`fine_tile_cache`).
    """

    def __init__(self, rgb: np.ndarray, key: str, cache: ByteLRU | None = None):
        from pointseg import filters

        self.rgb = rgb
        self.key = key
        self.channels = filters.CHANNELS
        self.cache = cache if cache is not None else fine_tile_cache()
        self._points: dict[tuple[int, int], np.ndarray] = {}
        self._points_lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.rgb.shape[:2])

    def tile(self, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` of the :data:`FINE_TILE` grid, ``C x th x tw`` float32 (cached; inside
        :func:`tiles_without_eviction` only where the cache has room)."""
        cache_key = (self.key, FINE_TILE, ty, tx)
        found = self.cache.get(cache_key)
        if found is None:
            found = self._window(ty * FINE_TILE, (ty + 1) * FINE_TILE, tx * FINE_TILE, (tx + 1) * FINE_TILE)
            if getattr(_TILE_POLICY, "no_eviction", False):
                self.cache.put_if_room(cache_key, found)
            else:
                self.cache.put(cache_key, found)
        return found

    def _window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        from pointseg.filters import HALO, low_level_features

        h, w = self.rgb.shape[:2]
        y1, x1 = min(y1, h), min(x1, w)
        a, b, c, d = max(0, y0 - HALO), min(h, y1 + HALO), max(0, x0 - HALO), min(w, x1 + HALO)
        return np.ascontiguousarray(low_level_features(self.rgb[a:b, c:d])[:, y0 - a: y1 - a, x0 - c: x1 - c])

    def pieces(self, y0: int, y1: int, x0: int, x1: int):
        """Yield ``((r0, c0), responses)``: the box's part in each tile it touches, with its top-left pixel."""
        for ty in range(y0 // FINE_TILE, -(-y1 // FINE_TILE)):
            for tx in range(x0 // FINE_TILE, -(-x1 // FINE_TILE)):
                t = self.tile(ty, tx)
                oy, ox = ty * FINE_TILE, tx * FINE_TILE
                r0, r1 = max(y0, oy), min(y1, oy + t.shape[1])
                c0, c1 = max(x0, ox), min(x1, ox + t.shape[2])
                yield (r0, c0), t[:, r0 - oy: r1 - oy, c0 - ox: c1 - ox]

    def box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Responses of rows ``y0:y1``, columns ``x0:x1``: ``C x (y1-y0) x (x1-x0)`` float32."""
        out = np.empty((self.channels, y1 - y0, x1 - x0), dtype=np.float32)
        for (r0, c0), piece in self.pieces(y0, y1, x0, x1):
            out[:, r0 - y0: r0 - y0 + piece.shape[1], c0 - x0: c0 - x0 + piece.shape[2]] = piece
        return out

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Responses at pixels ``(rows[i], cols[i])``: ``(n, C)``. A point is computed from its own small
        window (or read from a cached tile) and remembered, so refitting after a click costs nothing here."""
        out = np.empty((len(rows), self.channels), dtype=np.float32)
        tiles, counts = np.unique(np.stack([rows // FINE_TILE, cols // FINE_TILE]), axis=1, return_counts=True)
        for ty, tx in tiles[:, counts >= POINTS_PER_TILE].T.tolist():  # dense points: a whole tile is cheaper
            self.tile(ty, tx)
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
            with self._points_lock:
                vec = self._points.get((r, c))
            if vec is None:
                t = self.cache.get((self.key, FINE_TILE, r // FINE_TILE, c // FINE_TILE))
                if t is not None:
                    vec = t[:, r % FINE_TILE, c % FINE_TILE].copy()
                else:
                    vec = self._window(r, r + 1, c, c + 1)[:, 0, 0].copy()
                with self._points_lock:
                    if len(self._points) < 50_000:
                        self._points[(r, c)] = vec
            out[i] = vec
        return out

    def sums(self, keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel sum and sum of squares over every pixel (float64), tile by tile; ``keep=False``
        leaves the tiles it computes out of the cache."""
        total = np.zeros(self.channels)
        total_sq = np.zeros(self.channels)
        h, w = self.rgb.shape[:2]
        for ty in range(-(-h // FINE_TILE)):
            for tx in range(-(-w // FINE_TILE)):
                tile = self.tile(ty, tx) if keep else self.cache.get((self.key, FINE_TILE, ty, tx))
                if tile is None:
                    y0, x0 = ty * FINE_TILE, tx * FINE_TILE
                    tile = self._window(y0, y0 + FINE_TILE, x0, x0 + FINE_TILE)
                flat = tile.reshape(self.channels, -1)
                total += flat.sum(axis=1, dtype=np.float64)
                total_sq += np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
        return total, total_sq


@dataclass
class FeatureMap:
    """One image's features, and the one place that knows their channel layout: deep | context | fine.

    ``data`` is the deep map, ``C x h_f x w_f`` float32 covering the padded image extent. ``context`` (trunks
    with a stride-32 stage) is kept at stride 32. Hybrid features add full-resolution low-level filter
    responses (:mod:`pointseg.filters`): either held whole in ``fine`` (``C_fine x H x W``) or, as
    :meth:`FeatureExtractor.extract` makes them, computed per tile on demand from ``rgb`` (the image), which
    bounds memory on large images. A head's weights follow the same order: :meth:`sample` gives the vectors
    it trains on, :meth:`score` applies trained weights and knows which columns go where.
    """

    data: np.ndarray
    image_size: tuple[int, int]  # (H, W) of the original image
    extent: tuple[int, int]  # (Hp, Wp): padded size the grid covers
    key: str  # cache key: image hash + extractor id
    extractor_id: str
    fine: np.ndarray | None = None
    #: a stride-32 context stage's map, ``C_ctx x h_f/8 x w_f/8``, kept at its own resolution: its channels
    #: follow ``data``'s as if bilinearly upsampled to the grid (what the network's fusion does), but stored
    #: coarse they take 1/64 of the memory and a linear head can score them before upsampling
    context: np.ndarray | None = None
    #: the image itself (``H x W x 3`` uint8), from which hybrid features compute their fine responses
    rgb: np.ndarray | None = None
    _stats: tuple[np.ndarray, np.ndarray, int] | None = field(default=None, repr=False)
    _fine_source: FineFeatures | None = field(default=None, repr=False, compare=False)
    #: where a paged map's pooled levels put their (nameless) files (:meth:`pooled`); ``None``: ``$TMPDIR``
    spill_dir: str | os.PathLike | None = field(default=None, repr=False, compare=False)
    _pyramid: dict = field(default_factory=dict, repr=False, compare=False)
    _pyramid_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    @property
    def stride(self) -> int:
        return self.extent[0] // self.data.shape[1]

    @property
    def deep_channels(self) -> int:
        return self.data.shape[0] + (self.context.shape[0] if self.context is not None else 0)

    @property
    def fine_channels(self) -> int:
        if self.fine is not None:
            return self.fine.shape[0]
        return self.fine_source.channels if self.fine_source is not None else 0

    @property
    def n_channels(self) -> int:
        """Length of a feature vector: what a head trained on this map has as input columns."""
        return self.deep_channels + self.fine_channels

    @property
    def layout(self) -> dict[str, int]:
        """Channels per block, in the order of a feature vector."""
        return {"deep": self.data.shape[0], "context": self.deep_channels - self.data.shape[0],
                "fine": self.fine_channels}

    @property
    def fine_source(self) -> FineFeatures | None:
        if self._fine_source is None and self.fine is None and self.rgb is not None:
            self._fine_source = FineFeatures(self.rgb, self.key)
        return self._fine_source

    @property
    def nbytes(self) -> int:
        """Bytes this map holds itself, paged or not (fine tiles live in the shared, bounded
        :func:`fine_tile_cache`): what a :class:`FeatureCache` budgets, so its memory budget also bounds the
        paged files of the maps it keeps."""
        arrays = (self.data, self.fine, self.context, self.rgb, *self._pyramid.values())
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def paged(self) -> bool:
        """Whether the deep map is paged from a memory-mapped file (:func:`paged_array`), not held in memory."""
        return is_paged(self.data)

    @property
    def resident_nbytes(self) -> int:
        """Bytes this map keeps resident between uses: :attr:`nbytes` less a paged deep map and its levels."""
        return self.nbytes - sum(a.nbytes for a in (self.data, *self._pyramid.values()) if is_paged(a))

    @property
    def pyramid_levels(self) -> int:
        """Pooled levels :meth:`pooled` offers: :data:`PYRAMID_LEVELS` for a paged (large) map whose grid
        divides into their blocks, else none (a map held in memory is small enough to preview cell by cell)."""
        if not self.paged:
            return 0
        h, w = self.grid_size
        return max([0] + [lv for lv in range(1, PYRAMID_LEVELS + 1) if h % (1 << lv) == 0 == w % (1 << lv)])

    def pooled(self, level: int) -> np.ndarray:
        """The deep map averaged over blocks of ``2^level x 2^level`` cells (``C x h_f/2^level x w_f/2^level``,
        float16, paged like the map): what a zoomed-out preview scores instead of every stride-4 cell (a
        linear head's score of a block's mean is the mean of its cells' scores). Level 0 is :attr:`data`.

        All levels are built in one pass over the map, band by band (:meth:`build_pyramid`), the first time
        one is asked for; :meth:`FeatureExtractor.extract` builds them with the features of a large image.
        """
        if level == 0:
            return self.data
        if not 0 < level <= self.pyramid_levels:
            raise PointsegError(f"this feature map has {self.pyramid_levels} pooled levels, not {level}")
        if level not in self._pyramid:
            self.build_pyramid()
        return self._pyramid[level]

    def resident_window(self, level: int, rows: tuple[int, int], cols: tuple[int, int]):
        """Where to read cells ``rows x cols`` of :meth:`pooled` ``level`` from: ``(array, rows, cols)`` in that
        array's coordinates. A float16 (large) map's window asked for a second time running (the user clicks
        in the same view: each click scores the viewport again) is copied out contiguous and kept in
        :func:`resident_window_cache`, so the next clicks neither fault its pages back in from the paged file
        nor gather its strided rows again: any window inside it (the viewport again, tiles of the background
        refinement within it) reads the held copy. The first time a window is only noted (a view looked at
        once holds nothing); a window replaces the noted or held one only when it is at least half its size,
        so a tile elsewhere does not evict the viewport's; one above :data:`RESIDENT_WINDOW_BYTES` is read
        from the map. Keyed by the map's key (image digest and extractor), so other features never see it. A
        float32 map is read in place."""
        data = self.pooled(level)
        if data.dtype == np.float32:
            return data, rows, cols
        (g0, g1), (k0, k1) = rows, cols
        cache, key = resident_window_cache(), (self.key, level)
        held = cache.get(key)
        if held is not None:
            (h0, h1), (c0, c1), cells = held
            if cells is not None and h0 <= g0 and g1 <= h1 and c0 <= k0 and k1 <= c1:
                return cells, (g0 - h0, g1 - h0), (k0 - c0, k1 - c0)
        window_bytes = lambda r, c: data.shape[0] * (r[1] - r[0]) * (c[1] - c[0]) * data.itemsize  # noqa: E731
        nbytes = window_bytes(rows, cols)
        if nbytes > cache.max_bytes or (held is not None and 2 * nbytes < window_bytes(*held[:2])):
            return data, rows, cols
        if held is None or held[2] is not None or held[:2] != (tuple(rows), tuple(cols)):
            cache.put(key, (tuple(rows), tuple(cols), None))  # noted: held if asked for again
            return data, rows, cols
        cells = np.ascontiguousarray(data[:, g0:g1, k0:k1])
        release_pages(data)
        cache.put(key, (tuple(rows), tuple(cols), cells))
        return cells, (0, g1 - g0), (0, k1 - k0)

    def build_pyramid(self) -> None:
        """Build the :meth:`pooled` levels (a no-op where there are none or they exist). Each band of rows is
        read once, averaged in float32 level after level (blocks of the next level are whole blocks of this
        one: exact means) and written as float16; pages are released after each band, so resident memory
        stays one band."""
        levels = self.pyramid_levels
        with self._pyramid_lock:
            if not levels or len(self._pyramid) == levels:
                return
            c, h, w = self.data.shape
            directory = self.spill_dir if self.spill_dir is not None else tempfile.gettempdir()
            out = {}
            for lv in range(1, levels + 1):
                shape = (c, h >> lv, w >> lv)
                out[lv] = paged_array(shape, np.float16, directory)
                if out[lv] is None:  # no file can be made: in memory (at most a third of the map's bytes)
                    out[lv] = np.empty(shape, dtype=np.float16)
            block = 1 << levels
            rows = max(block, PYRAMID_BAND_BYTES // (4 * c * w) // block * block)
            for a in range(0, h, rows):
                band = torch.from_numpy(np.ascontiguousarray(self.data[:, a: a + rows])).float()
                for lv in range(1, levels + 1):
                    band = F.avg_pool2d(band[None], 2)[0]
                    out[lv][:, a >> lv: (a >> lv) + band.shape[1]] = band.numpy()
                    release_pages(out[lv])
                release_pages(self.data)
            self._pyramid.update(out)

    def context_on_grid(self) -> np.ndarray | None:
        """The context channels upsampled to the grid, as the network's fusion would give them."""
        if self.context is None:
            return None
        return upsample_context(torch.from_numpy(self.context), self.grid_size).numpy()

    def full_deep(self) -> np.ndarray:
        """The whole deep map on the grid (``deep_channels x h_f x w_f``), context upsampled."""
        if self.context is None:
            return self.data
        return np.concatenate([self.data, self.context_on_grid()])

    def deep_window(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Grid cells ``rows x cols`` of :meth:`full_deep`, without upsampling the whole context map."""
        (g0, g1), (k0, k1) = rows, cols
        block = self.data[:, g0:g1, k0:k1].astype(np.float32, copy=False)
        if self.paged:
            release_pages(self.data)  # the copy is what the caller uses; the pages can go
        if self.context is None:
            return block
        window = upsample_window(torch.from_numpy(self.context), 8, rows, cols).numpy()
        return np.concatenate([block, window])

    def fine_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """Fine responses of pixel rows ``y0:y1``, columns ``x0:x1`` (``None`` without fine features)."""
        if self.fine is not None:
            return self.fine[:, y0:y1, x0:x1]
        source = self.fine_source
        return source.box(y0, y1, x0, x1) if source is not None else None

    def fine_pieces(self, y0: int, y1: int, x0: int, x1: int):
        """:meth:`fine_box` in pieces, ``((r0, c0), responses)``, without assembling the box."""
        if self.fine is not None:
            yield (y0, x0), self.fine[:, y0:y1, x0:x1]
        elif self.fine_source is not None:
            yield from self.fine_source.pieces(y0, y1, x0, x1)

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """Feature vectors at image points ``(n, 2)`` [x, y] → ``(n, n_channels)``: the deep map sampled
        bilinearly by formula (1) (:mod:`pointseg.sampling`), then the fine responses of the pixel a point
        falls in. A linear head's logit for a point is then its logit in :meth:`score`'s map at that pixel."""
        from pointseg.sampling import sample_points

        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        deep = self._sample_paged(xy) if self.paged else sample_points(self, xy)
        if not self.fine_channels:
            return deep
        cols = np.clip(np.floor(xy[:, 0]).astype(np.intp), 0, self.image_size[1] - 1)
        rows = np.clip(np.floor(xy[:, 1]).astype(np.intp), 0, self.image_size[0] - 1)
        fine = self.fine[:, rows, cols].T if self.fine is not None else self.fine_source.at(rows, cols)
        return np.concatenate([deep, fine], axis=1)

    def _sample_paged(self, xy: np.ndarray) -> np.ndarray:
        """:func:`~pointseg.sampling.sample_points` of a paged map, remembering each point's vector: a point
        reads a page per channel (scattered points touch the whole file), and a refit after a click asks for
        the same points again."""
        from pointseg.sampling import sample_points

        memo = self.__dict__.setdefault("_point_memo", {})
        keys = [tuple(p) for p in xy.tolist()]
        missing = [i for i, k in enumerate(keys) if k not in memo]
        if missing:
            fresh = np.empty((len(missing), self.deep_channels), dtype=np.float32)
            # a few points at a time: each maps ~2 pages per channel plus the kernel's fault-around (64 kB),
            # ~20 MB a point, which would otherwise add up to the whole file on a first fit
            for a in range(0, len(missing), PAGED_POINTS_PER_READ):
                fresh[a: a + PAGED_POINTS_PER_READ] = sample_points(self, xy[missing[a: a + PAGED_POINTS_PER_READ]])
                release_pages(self.data)
            if len(memo) + len(missing) <= 50_000:
                memo.update((keys[i], v) for i, v in zip(missing, fresh))
            else:
                return np.stack([memo[k] if k in memo else fresh[missing.index(i)] for i, k in enumerate(keys)])
        out = np.empty((len(keys), self.deep_channels), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = memo[k]
        return out

    def score(self, weights: np.ndarray, bias: np.ndarray) -> "Scores":
        """A linear head ``weights (K, n_channels)``, ``bias (K,)`` applied to this map, lazily: the returned
        :class:`Scores` computes the logits of any box on demand. The context block is scored at stride 32
        before upsampling (interpolation is linear: the same numbers for 1/64 of the work)."""
        weights = np.asarray(weights, dtype=np.float32)
        self._check_columns(weights.shape[1])
        c, c_deep = self.data.shape[0], self.deep_channels
        w = torch.from_numpy(np.ascontiguousarray(weights[:, :c]))
        b = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
        coarse = None
        if self.context is not None:
            w_ctx = torch.from_numpy(np.ascontiguousarray(weights[:, c:c_deep]))
            ctx = torch.from_numpy(self.context)
            coarse = (w_ctx @ ctx.reshape(ctx.shape[0], -1)).reshape(-1, *ctx.shape[1:])

        def grid_window(rows, cols, level=0):
            # at a pooled level the context is upsampled to that level's grid: for blocks of up to 4 x 4
            # cells this equals the mean of its upsampling to the stride-4 grid (no block straddles a
            # context cell's centre, and bilinear interpolation is linear in between)
            out = linear_scores(w, *self.resident_window(level, rows, cols)) + b[:, None, None]
            if coarse is not None:
                out += upsample_window(coarse, 8 >> level, rows, cols)
            return out

        return Scores(self.image_size, self.extent, self.grid_size, grid_window, self, weights[:, c_deep:],
                      levels=self.pyramid_levels)

    def score_with(self, fn, n_features: int) -> "Scores":
        """Like :meth:`score` for a non-linear head on ``n_features`` deep features: ``fn((n, C)) → (n, K)``."""
        self._check_columns(n_features)

        def grid_window(rows, cols):
            feats = self.deep_window(rows, cols)
            c, h, w = feats.shape
            out = fn(feats.reshape(c, -1).T)
            return torch.from_numpy(np.ascontiguousarray(out.T, dtype=np.float32)).reshape(-1, h, w)

        return Scores(self.image_size, self.extent, self.grid_size, grid_window, None, None)

    def _check_columns(self, n: int) -> None:
        if n != self.n_channels:
            raise PointsegError(f"features have {self.n_channels} channels but the model expects {n}")

    def moments(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-channel mean and mean of squares over the real image (memoised), deep channels then fine.

        Standardisation statistics over all pixels of the training images are built from these, so a refit
        after a click costs no pass over the feature maps. Each image weighs by its pixel count. Computed in
        bands of grid rows and tiles of fine responses, so no whole upsampled or full-resolution copy exists.
        """
        if self._stats is None:
            hf, wf = self.valid_grid_size
            deep_sum = np.zeros(self.deep_channels)
            deep_sq = np.zeros(self.deep_channels)
            rows = max(1, min(MOMENT_BAND_CELLS, MOMENT_BAND_BYTES // (4 * self.deep_channels * wf)))
            for g0 in range(0, hf, rows):
                band = self.deep_window((g0, min(hf, g0 + rows)), (0, wf))
                flat = band.reshape(band.shape[0], -1)
                deep_sum += flat.sum(axis=1, dtype=np.float64)
                deep_sq += np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
            mean, mean_sq = [deep_sum / (hf * wf)], [deep_sq / (hf * wf)]
            if self.fine_channels:
                n = self.image_size[0] * self.image_size[1]
                if self.fine is not None:
                    flat = self.fine.reshape(self.fine.shape[0], -1)
                    fine_sum = flat.sum(axis=1, dtype=np.float64)
                    fine_sq = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
                else:  # a paged (large) map's tiles would only fill the cache with its last rows
                    fine_sum, fine_sq = self.fine_source.sums(keep=not self.paged)
                mean.append(fine_sum / n)
                mean_sq.append(fine_sq / n)
            count = self.image_size[0] * self.image_size[1]
            self._stats = (np.concatenate(mean) * count, np.concatenate(mean_sq) * count, count)
        return self._stats

    def feature_means(self) -> np.ndarray:
        """Mean feature vector over the image (from :meth:`moments`)."""
        total, _, count = self.moments()
        return total / count

    @property
    def valid_grid_size(self) -> tuple[int, int]:
        """Cells whose centre lies inside the original image (the rest cover padding)."""
        h, w = self.image_size
        hp, wp = self.extent
        hf, wf = self.grid_size
        return max(1, int(np.ceil(h * hf / hp))), max(1, int(np.ceil(w * wf / wp)))


def linear_scores(weights: torch.Tensor, data: np.ndarray, rows: tuple[int, int], cols: tuple[int, int],
                  chunk_bytes: int = LINEAR_CHUNK_BYTES) -> torch.Tensor:
    """``weights (K, C)`` times the cells ``rows x cols`` of ``data (C, h, w)`` → ``K x rows x cols``.

    One matrix product per grid row, batched (BLAS reads a float32 window in place: no copy of the
    window, 8x faster than an einsum that gathers it), a few rows at a time (``chunk_bytes`` of float32),
    so a float16 map is converted only a cache-sized piece at a time: each chunk is copied out contiguous by
    numpy (rows of the window are runs in memory), then converted — torch's conversion of the strided window
    itself was 15x slower (a 1600 x 1000 viewport of a 12 MP map: 124 vs 8 ms, the same numbers), and
    chunks of 32 rows, larger than the caches, 1.5-3x slower than ~3 MB ones. A paged map's pages are
    released every :data:`PAGED_RELEASE_BYTES` read, so it is resident a bounded piece at a time.
    """
    (g0, g1), (k0, k1) = rows, cols
    out = torch.empty((weights.shape[0], g1 - g0, k1 - k0), dtype=torch.float32)
    paged = is_paged(data)
    convert = data.dtype != np.float32
    step = max(1, int(chunk_bytes) // (4 * data.shape[0] * max(1, k1 - k0)))
    unreleased = 0
    for a in range(g0, g1, step):
        b = min(g1, a + step)
        block = data[:, a:b, k0:k1]
        unreleased += block.nbytes
        block = torch.from_numpy(np.ascontiguousarray(block)).float() if convert else torch.from_numpy(block)
        out[:, a - g0: b - g0] = torch.matmul(weights, block.permute(1, 0, 2)).permute(1, 0, 2)
        if paged and (unreleased >= PAGED_RELEASE_BYTES or b == g1):
            release_pages(data)  # one madvise walks the whole mapping: not after every small chunk
            unreleased = 0
    return out


class Scores:
    """A head applied to one image: logits ``K x h x w`` of any pixel box, computed when asked.

    The deep part lives on the stride-4 grid and is bilinearly upsampled from just the cells a box needs
    (:func:`cell_span`), which reproduces the whole-image upsampling exactly; the fine part (hybrid features)
    is the fine weights times the box's full-resolution responses. So a box's logits equal the same crop of
    the whole image's logits, and a viewport costs in proportion to its own size.
    """

    def __init__(self, image_size, extent, grid_size, grid_window, fine_from, fine_weights, levels: int = 0):
        self.image_size = tuple(image_size)
        self.extent = tuple(extent)
        self.grid_size = tuple(grid_size)
        self.stride = self.extent[0] // self.grid_size[0]
        #: pooled levels ``grid_window(..., level=L)`` offers (scores of 2^L x 2^L-cell means; see
        #: :meth:`FeatureMap.pooled`), for zoomed-out previews
        self.levels = int(levels)
        self._grid_window = grid_window
        self._fine_from = fine_from  # a FeatureMap (or anything with fine_box) or None
        self._w_fine = (torch.from_numpy(np.ascontiguousarray(fine_weights))
                        if fine_weights is not None and fine_weights.shape[1] else None)

    def grid_window(self, rows: tuple[int, int], cols: tuple[int, int], level: int = 0) -> torch.Tensor:
        """Deep scores (bias included) of grid cells ``rows x cols``; at ``level`` > 0 (up to :attr:`levels`)
        of the cells of the grid pooled 2^level times (:meth:`level_size`), each the mean of its cells' scores."""
        if level == 0:
            return self._grid_window(rows, cols)
        if not 0 < level <= self.levels:
            raise PointsegError(f"these scores have {self.levels} pooled levels, not {level}")
        return self._grid_window(rows, cols, level)

    def level_size(self, level: int) -> tuple[int, int]:
        """Grid cells of pooled ``level`` (its cells are ``stride * 2^level`` pixels wide)."""
        return self.grid_size[0] >> level, self.grid_size[1] >> level

    def grid(self) -> torch.Tensor:
        """The whole deep score grid ``K x h_f x w_f``."""
        return self.grid_window((0, self.grid_size[0]), (0, self.grid_size[1]))

    def deep_logits(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        s = self.stride
        rows = cell_span(y0, y1, s, self.grid_size[0])
        cols = cell_span(x0, x1, s, self.grid_size[1])
        return upsample_cells(self.grid_window(rows, cols), s, rows[0], cols[0], (y0, y1), (x0, x1))

    def fine_logits(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor | None:
        if self._w_fine is None:
            return None
        out = torch.empty((self._w_fine.shape[0], y1 - y0, x1 - x0), dtype=torch.float32)
        for (r0, c0), piece in self._fine_from.fine_pieces(y0, y1, x0, x1):  # tile by tile: no box-sized copy
            check_interrupted()   # the app's held-out predictions yield to a click between filter tiles
            c, h, w = piece.shape
            target = out[:, r0 - y0: r0 - y0 + h, c0 - x0: c0 - x0 + w]
            flat = torch.from_numpy(piece)
            if piece.strides[1] == piece.itemsize * w:  # whole rows of its tile: one product for the piece
                target.copy_((self._w_fine @ flat.reshape(c, h * w)).reshape(-1, h, w))
            else:                          # part of each row: one product per row, batched
                target.copy_(torch.matmul(self._w_fine, flat.permute(1, 0, 2)).permute(1, 0, 2))
        return out

    def fine_mean_logits(self) -> torch.Tensor | None:
        """The fine part's mean over the image (a constant per class), for coarse previews."""
        if self._w_fine is None:
            return None
        means = self._fine_from.feature_means()[-self._w_fine.shape[1]:]
        return self._w_fine @ torch.from_numpy(means.astype(np.float32))

    def logits(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Logits of pixel rows ``y0:y1``, columns ``x0:x1``: ``K x (y1-y0) x (x1-x0)`` float32."""
        out = self.deep_logits(y0, y1, x0, x1)
        fine = self.fine_logits(y0, y1, x0, x1)
        return out if fine is None else out.add_(fine)  # in place: one box-sized temporary less


class _StreamedFine:
    """Fine responses for an image streamed through the backbone (no FeatureMap): per box, from the pixels."""

    def __init__(self, rgb: np.ndarray, key: str):
        self.source = FineFeatures(rgb, key, cache=tile_cache(0))  # one pass over the image: nothing to reuse

    def fine_pieces(self, y0, y1, x0, x1):
        yield (y0, x0), self.source._window(y0, y1, x0, x1)

    def feature_means(self) -> np.ndarray:
        total, _ = self.source.sums()
        return total / (self.source.rgb.shape[0] * self.source.rgb.shape[1])


class FeatureCache:
    """LRU cache of feature maps, bounded in bytes, with an optional float16 disk layer.

    Thread-safe: the server computes features in a worker thread while requests read them.

    The disk layer is an accelerator, never a requirement: it is bounded (``max_disk_bytes``, default
    :data:`pointseg.limits.DISK_CACHE_BYTES`; the least recently used maps go first), a write that fails
    (full or read-only disk) only counts in ``disk_errors`` and the features stay in memory, and temporary
    files left by a crash or a failed write are removed when the cache is opened.
    """

    def __init__(self, max_bytes: int = 2_000_000_000, disk_dir: str | os.PathLike | None = None,
                 max_disk_bytes: int | None = None):
        from pointseg.limits import disk_cache_bytes

        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.max_disk_bytes = disk_cache_bytes() if max_disk_bytes is None else int(max_disk_bytes)
        self._memory: ByteLRU[FeatureMap] = ByteLRU(self.max_bytes, size=lambda fmap: fmap.nbytes)
        self._disk_lock = threading.Lock()
        self._disk_bytes = 0
        self.hits = 0
        self.misses = 0
        self.disk_errors = 0
        if self.disk_dir is not None:
            self._open_disk()

    def __len__(self) -> int:
        return len(self._memory)

    @property
    def spill_dir(self) -> Path:
        """Where paged deep maps keep their (nameless) files: the disk layer's folder, else the system's
        temporary folder (``$TMPDIR``)."""
        return self.disk_dir if self.disk_dir is not None else Path(tempfile.gettempdir())

    def __contains__(self, key: str) -> bool:
        return key in self._memory or (self._disk_path(key) is not None and self._disk_path(key).is_file())

    def get(self, key: str) -> FeatureMap | None:
        fmap = self._memory.get(key)
        if fmap is not None:
            self.hits += 1
            return fmap
        fmap = self._read_disk(key)
        if fmap is not None:
            self.hits += 1
            self._put_memory(fmap)
        else:
            self.misses += 1
        return fmap

    def put(self, fmap: FeatureMap) -> None:
        self._put_memory(fmap)
        self._write_disk(fmap)

    def clear(self) -> None:
        self._memory.clear()

    @property
    def disk_bytes(self) -> int:
        """Bytes of feature files this cache holds on disk (as counted since it was opened)."""
        return self._disk_bytes

    def _put_memory(self, fmap: FeatureMap) -> None:
        # a map larger than the whole budget is not kept (``max_bytes=0``: a batch that sees each image once)
        if fmap.nbytes <= self.max_bytes and self._memory.get(fmap.key) is None:
            self._memory.put(fmap.key, fmap)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.npz"

    def _open_disk(self) -> None:
        """Remove the temporary files of writers that are gone, and count the feature files present."""
        try:
            entries = list(self.disk_dir.iterdir()) if self.disk_dir.is_dir() else []
        except OSError:
            return
        for path in entries:
            try:
                if path.suffix == ".tmp" and _stale_temporary(path):
                    path.unlink(missing_ok=True)
                elif path.suffix == ".npz":
                    self._disk_bytes += path.stat().st_size
            except OSError:
                continue
        self._evict_disk()

    def _write_disk(self, fmap: FeatureMap) -> None:
        path = self._disk_path(fmap.key)
        if path is None or path.exists():
            return
        arrays = {name: a for name, a in (("data", fmap.data), ("fine", fmap.fine), ("context", fmap.context))
                  if a is not None}
        if sum(a.size for a in arrays.values()) * 2 > self.max_disk_bytes:
            return  # alone larger than the whole disk budget (stored as float16)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            extra = {}
            if fmap.rgb is not None:  # hybrid: the pixels (3 B/px) stand for the fine responses (72 B/px)
                extra["rgb"] = fmap.rgb
            if fmap._stats is not None:
                extra.update(stats_sum=fmap._stats[0], stats_sq=fmap._stats[1], stats_count=np.array(fmap._stats[2]))
            with open(tmp, "wb") as handle:
                _savez_paged(
                    handle,
                    **{name: a.astype(np.float16, copy=False) for name, a in arrays.items()},
                    **extra,
                    image_size=np.array(fmap.image_size),
                    extent=np.array(fmap.extent),
                    extractor_id=np.array(fmap.extractor_id),
                )
            size = tmp.stat().st_size
            os.replace(tmp, path)
        except OSError as exc:  # full or read-only disk: the features are in memory and the caller has them
            self._disk_write_failed(tmp, exc)
            return
        with self._disk_lock:
            self._disk_bytes += size
        self._evict_disk()

    def _disk_write_failed(self, tmp: Path, exc: OSError) -> None:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        self.disk_errors += 1
        if self.disk_errors == 1:
            import logging

            logging.getLogger(__name__).warning(
                "feature cache: cannot write to %s (%s); features are kept in memory only",
                self.disk_dir, exc.strerror or exc)

    def _evict_disk(self) -> None:
        """Delete the least recently used feature files until the disk layer is within ``max_disk_bytes``."""
        with self._disk_lock:
            if self._disk_bytes <= self.max_disk_bytes:
                return
            files = []
            for path in self.disk_dir.glob("*.npz"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
            files.sort(key=lambda item: item[0])
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.max_disk_bytes:
                    break
                try:
                    path.unlink()
                except OSError:
                    continue
                total -= size
            self._disk_bytes = total

    def _read_disk(self, key: str) -> FeatureMap | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as z:
                fmap = FeatureMap(
                    data=self._read_deep(z),
                    image_size=tuple(int(v) for v in z["image_size"]),
                    extent=tuple(int(v) for v in z["extent"]),
                    key=key,
                    extractor_id=str(z["extractor_id"]),
                    fine=z["fine"].astype(np.float32) if "fine" in z.files else None,
                    context=z["context"].astype(np.float32) if "context" in z.files else None,
                    rgb=z["rgb"] if "rgb" in z.files else None,
                    _stats=(z["stats_sum"], z["stats_sq"], int(z["stats_count"])) if "stats_sum" in z.files else None,
                    spill_dir=self.spill_dir,
                )
        except Exception:
            try:
                path.unlink(missing_ok=True)  # a torn or stale cache file is recomputed, never trusted
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return fmap


    def _read_deep(self, z) -> np.ndarray:
        """The deep map of an open ``.npz``: for a large image streamed into a paged array (never whole in
        memory), else loaded as :func:`deep_dtype` says."""
        from pointseg.limits import paged_deep_above_pixels

        size = tuple(int(v) for v in z["image_size"])
        if size[0] * size[1] > paged_deep_above_pixels():
            paged = _read_member_paged(z, "data", self.spill_dir)
            if paged is not None:
                return paged
        return z["data"].astype(deep_dtype(size), copy=False)


def _savez_paged(handle, chunk: int = 16 << 20, **arrays) -> None:
    """``np.savez(handle, **arrays)`` (the same file), but a memory-mapped array (:func:`paged_array`) is
    written in ``chunk``-byte pieces whose pages leave the resident set as soon as they are written:
    ``np.savez`` read every page of a paged deep map before they could be dropped (+1.1 GB resident for the
    moment of the write at 50 MP)."""
    import zipfile

    from numpy.lib import format as npy

    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            value = np.asanyarray(value)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                if not (is_paged(value) and value.flags.c_contiguous):
                    npy.write_array(member, value, allow_pickle=False)
                    continue
                npy.write_array_header_1_0(member, npy.header_data_from_array_1_0(value))
                flat = value.reshape(-1).view(np.uint8)
                for start in range(0, flat.size, chunk):
                    member.write(flat[start: start + chunk])
                    release_pages(value)


def _read_member_paged(z, name: str, directory: Path, chunk: int = 16 << 20) -> np.ndarray | None:
    """Array ``name`` of an open ``.npz`` read in ``chunk``-byte pieces into a :func:`paged_array` (float16,
    C order), or ``None`` when it is not stored that way or no file can be made."""
    from numpy.lib import format as npy

    with z.zip.open(f"{name}.npy") as member:
        version = npy.read_magic(member)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
        if fortran or dtype != np.float16:
            return None
        out = paged_array(shape, np.float16, directory)
        if out is None:
            return None
        flat = out.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, chunk):
            view = memoryview(flat[start: start + chunk])
            while len(view):
                n = member.readinto(view)
                if not n:
                    raise ValueError(f"{name}.npy is shorter than its header says")
                view = view[n:]
            release_pages(out)   # each piece as it is read: the whole map is never resident at once
    return out


def _stale_temporary(path: Path, grace_seconds: float = 3600.0) -> bool:
    """A ``KEY.PID.THREAD.tmp`` file whose writer process has exited, or one untouched for an hour."""
    import time

    parts = path.name.split(".")
    pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
    if pid is not None and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
    return time.time() - path.stat().st_mtime > grace_seconds


def image_digest(image: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX-512-BF16 or AMX: bf16 convolutions are then several times faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise PointsegError(f"unknown precision {precision!r}; use 'auto', 'fp32' or 'bf16'")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_extractor_engine(engine: str, device: torch.device) -> str:
    """``"auto"``: ``$POINTSEG_ENGINE`` if set, torch on a GPU, else the fastest installed CPU runtime."""
    from pointseg.engines import ENGINES, resolve_engine

    if engine == "auto":
        engine = os.environ.get("POINTSEG_ENGINE", "auto") or "auto"
        if engine == "auto" and device.type != "cpu":
            return "torch"
    if engine != "torch" and engine in ENGINES and device.type != "cpu":
        raise PointsegError(f"engine {engine!r} runs on the CPU here; use engine='torch' with device={device.type!r}")
    return resolve_engine(engine)


class FeatureExtractor:
    """Runs one backbone over images and caches the feature maps.

    Parameters
    ----------
    backbone : name in :func:`pointseg.backbones.available_backbones`.
    weights : weights file or folder (see :mod:`pointseg.backbones.weights`).
    precision : ``"auto"`` uses bf16 autocast + channels-last where the hardware has native bf16.
    tile_size : images larger than this (plus the backbone's context margin) are processed in tiles whose
        overlap covers the receptive field, so tiled features equal whole-image features.
    cache : a :class:`FeatureCache` shared between extractors; a private one is made if omitted.
    features : ``"deep"`` (the backbone's map only) or ``"hybrid"`` (plus full-resolution low-level
        filters, :mod:`pointseg.filters`).
    engine : what runs the backbone: ``"torch"`` (the reference), ``"openvino"``, ``"onnxruntime"``, or
        ``"auto"``: ``$POINTSEG_ENGINE`` when set, else the fastest installed on a CPU (OpenVINO, then
        onnxruntime, then torch; see :func:`resolve_extractor_engine`). Runtime engines run the same
        torch module exported to ONNX (:mod:`pointseg.engines`); their features agree with torch within
        the precision's error, and the cache key (``id``) names the engine.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, weights=None, precision: str = "auto",
                 device: str | None = None, tile_size: int = 1024, cache: FeatureCache | None = None,
                 download: bool = False, features: str = "deep", engine: str = "auto",
                 context_upscale: int = 1):
        if features not in FEATURE_KINDS:
            raise PointsegError(f"unknown features {features!r}; choose one of: {', '.join(FEATURE_KINDS)}")
        self.features = features
        self.module, self.spec, self.weights_source, self.weights_sha256 = build_backbone(
            backbone, weights, download=download
        )
        self.device = resolve_device(device)
        self.engine = resolve_extractor_engine(engine, self.device)
        if self.engine == "onnxruntime" and "auto" in (engine, precision):
            precision = "fp32"  # onnxruntime's CPU provider has fp32 only: more exact than a bf16 model asked
        self.precision = resolve_precision(precision, self.device)
        if tile_size < self.spec.pad_multiple:
            raise PointsegError(f"tile_size {tile_size} is too small; use at least {self.spec.pad_multiple}")
        self.tile_size = int(tile_size) // self.spec.pad_multiple * self.spec.pad_multiple
        self.context_upscale = check_context_upscale(context_upscale)
        self.cache = cache if cache is not None else FeatureCache()
        self.module.to(self.device)
        if self.engine != "torch":
            from pointseg.engines.trunk import EngineTrunk

            self.module = EngineTrunk(self.module, self.spec, self.weights_sha256, self.engine, self.precision)
        elif self.precision == "bf16":
            self.module.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._base_id = (
            f"{self.spec.name}-{self.weights_sha256[:16]}-{self.engine}-{self.precision}-p{PREPROCESSING_VERSION}"
            + (f"-hybrid{filter_bank_version()}" if self.hybrid else "")
        )
        self._set_context_upscale(self.context_upscale)
        self._run_lock = threading.Lock()

    def _set_context_upscale(self, factor: int) -> None:
        if not self._has_context:
            factor = 1  # nothing to enlarge: the same features, the same cache key
        self.context_upscale = factor
        self.id = self._base_id + (f"-cu{factor}" if factor > 1 else "")

    def with_context_upscale(self, factor: int) -> "FeatureExtractor":
        """This extractor with its context stage seeing images ``factor`` times larger (see
        :meth:`_upscaled_context`): a view sharing the network, the cache and the run lock, so a model can
        compare or switch factors without loading the backbone again. Its ``id`` (the cache key) names
        the factor."""
        factor = check_context_upscale(factor)
        if not self._has_context:
            factor = 1
        if factor == self.context_upscale:
            return self
        views = self.__dict__.setdefault("_views", {self.context_upscale: self})
        if factor not in views:
            view = copy.copy(self)
            view._set_context_upscale(factor)
            views[factor] = view
        return views[factor]

    def source_for(self, image):
        """``image`` itself, or for a FeatureMap made by this extractor at another context factor, the image
        it keeps (hybrid maps keep it), so that a model comparing factors can re-extract it."""
        if (isinstance(image, FeatureMap) and image.extractor_id != self.id and image.rgb is not None
                and image.extractor_id.split("-cu")[0] == self._base_id):
            return image.rgb
        return image

    def context_upscale_for(self, image_sizes) -> int:
        """The factor the ``"size"`` rule gives a model trained on images of these sizes.

        An image whose short side is below the context stage's reach (``spec.context_reach``, 258 px for
        efficientnet_lite0_s32) is seen by that stage mostly through its reflected border: each context cell
        describes the whole image rather than a neighbourhood. For such images (the training images'
        median short side) the rule enlarges by the smallest factor that shrinks the stage's reach, in
        image pixels, to that of the stride-16 map below it (``spec.base_reach``, 104 px): ×4 here; less
        when the enlarged median image would exceed :data:`CONTEXT_UPSCALE_MAX_PIXELS`. Images at least
        the reach keep the native context and cost nothing more. 1 for trunks without a context stage.
        """
        reach, base = getattr(self.spec, "context_reach", None), getattr(self.spec, "base_reach", None)
        if not self._has_context or not reach or not base or not len(image_sizes):
            return 1
        if float(np.median([min(s[:2]) for s in image_sizes])) >= reach:
            return 1
        pixels = float(np.median([s[0] * s[1] for s in image_sizes]))
        wanted = next((f for f in CONTEXT_UPSCALES if reach / f <= base), CONTEXT_UPSCALES[-1])
        affordable = [f for f in CONTEXT_UPSCALES if f <= wanted and f * f * pixels <= CONTEXT_UPSCALE_MAX_PIXELS]
        return max(affordable, default=1)

    @property
    def backbone(self) -> str:
        return self.spec.name

    @property
    def _has_context(self) -> bool:
        return getattr(self.module, "context_start", None) is not None

    @property
    def hybrid(self) -> bool:
        return self.features == "hybrid"

    @property
    def channels(self) -> int:
        """Deep channels (the backbone's map)."""
        return self.spec.channels

    @property
    def fine_channels(self) -> int:
        from pointseg import filters

        return filters.CHANNELS if self.hybrid else 0

    @property
    def n_features(self) -> int:
        """Length of a feature vector (deep, context and fine channels): a model's input columns."""
        return self.channels + self.fine_channels

    def key_for(self, image: np.ndarray) -> str:
        return f"{image_digest(image)}-{self.id}"

    def extract(self, image, progress=None) -> FeatureMap:
        """Features of one image (path or array), from the cache when possible.

        ``progress(done, total)``, if given, is called as the backbone's tiles finish (a first view can show
        real progress). Hybrid features keep the image and compute their full-resolution responses per tile
        on demand (:class:`FineFeatures`); their statistics are streamed once here, so fitting stays cheap.
        """
        if isinstance(image, FeatureMap):
            self.check_compatible(image)
            return image
        rgb = load_image(image)
        key = self.key_for(rgb)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        data, context = self.compute_parts(rgb, progress=progress)
        large = deep_dtype(rgb.shape[:2]) is np.float16
        if large:  # before the statistics pass fills the fine-tile cache: the peak stays one of the two
            self.release_engine_memory()
            release_freed_memory()
        fmap = FeatureMap(data, rgb.shape[:2], self.padded_size(rgb.shape[:2]), key, self.id, None, context,
                          rgb=rgb if self.hybrid else None, spill_dir=self.cache.spill_dir)
        fmap.moments()
        fmap.build_pyramid()  # a large map's pooled levels, for its zoomed-out views (no-op for small maps)
        self.cache.put(fmap)
        release_pages(fmap.data)
        if large:
            release_freed_memory()  # a large extraction's transients would otherwise stay resident
        return fmap

    def release_engine_memory(self) -> None:
        """Free what the backbone's runtime keeps for the largest input it ran (OpenVINO's activation
        buffers: ~260 MB after the tiles of a large image), so a server does not hold it between images.
        The next run reallocates them, which costs less than a tile's inference; torch keeps none."""
        release = getattr(self.module, "release_memory", None)
        if release is not None:
            release()

    def image_scores(self, image, weights=None, bias=None, fn=None, n_features: int | None = None,
                     stream_above: int = 16_000_000) -> Scores:
        """A head's :class:`Scores` of an image (path, array or FeatureMap): scores of this image, streamed if
        large.

        Linear heads pass ``weights, bias`` (columns in :attr:`FeatureMap.layout` order), others ``fn``
        (deep features ``(n, C) → (n, K)``) and the ``n_features`` they take. A cached or small image is extracted (and cached) and scored
        lazily, box by box. A larger uncached image streams through the backbone tile by tile, so only the
        K-channel score grid is held for the whole image; its fine responses are computed per box later.
        """
        if isinstance(image, FeatureMap):
            self.check_compatible(image)
            fmap = image
        else:
            rgb = load_image(image)
            fmap = self.cache.get(self.key_for(rgb))
            if fmap is None and rgb.shape[0] * rgb.shape[1] <= stream_above:
                fmap = self.extract(rgb)
        if fmap is not None:
            return fmap.score(weights, bias) if fn is None else fmap.score_with(fn, n_features)
        return self._streamed_scores(rgb, weights, bias, fn, n_features)

    def _streamed_scores(self, rgb: np.ndarray, weights, bias, fn, n_features) -> Scores:
        h, w = rgb.shape[:2]
        extent = self.padded_size((h, w))
        stride = self.spec.stride
        n_fine = self.fine_channels
        n_in = weights.shape[1] if fn is None else n_features
        if n_in != self.channels + n_fine:
            raise PointsegError(
                f"features have {self.channels + n_fine} channels but the model expects {n_in}")
        if fn is None:
            w_deep = torch.from_numpy(np.ascontiguousarray(weights[:, : self.channels], dtype=np.float32))
            b = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))[:, None]

            def fn_tile(tile):
                return (w_deep @ torch.from_numpy(tile).reshape(tile.shape[0], -1) + b).numpy()
        else:
            def fn_tile(tile):
                return np.ascontiguousarray(fn(tile.reshape(tile.shape[0], -1).T).T, dtype=np.float32)
        grid = None
        for (y0, y1, x0, x1), tile in self.iter_tiles(rgb):
            out = torch.from_numpy(fn_tile(tile)).reshape(-1, *tile.shape[1:])
            if grid is None:
                grid = torch.empty((out.shape[0], extent[0] // stride, extent[1] // stride))
            grid[:, y0 // stride: y1 // stride, x0 // stride: x1 // stride] = out

        def grid_window(rows, cols):
            return grid[:, rows[0]:rows[1], cols[0]:cols[1]]

        fine_w = weights[:, self.channels:] if fn is None and n_fine else None
        fine_from = _StreamedFine(rgb, self.key_for(rgb)) if fine_w is not None else None
        return Scores((h, w), extent, grid.shape[1:], grid_window, fine_from, fine_w)

    def check_compatible(self, fmap: FeatureMap) -> None:
        if fmap.extractor_id != self.id:
            raise PointsegError(
                f"feature map was computed by {fmap.extractor_id}, not {self.id}; "
                "extract features with this Segmenter"
            )

    def padded_size(self, size: tuple[int, int]) -> tuple[int, int]:
        m = self.spec.pad_multiple
        return (-(-size[0] // m) * m, -(-size[1] // m) * m)

    def compute(self, rgb: np.ndarray) -> np.ndarray:
        """Run the backbone over ``rgb`` (tiled when large); returns ``C x Hp/4 x Wp/4`` float32."""
        return self._compute(rgb)

    def n_tiles(self, size: tuple[int, int]) -> int:
        """How many backbone passes an image of ``size`` takes (the unit of extraction progress)."""
        hp, wp = self.padded_size(size)
        margin, core = self.spec.tile_margin, self.tile_size
        if hp <= core + 2 * margin and wp <= core + 2 * margin:
            return 1
        return -(-hp // core) * -(-wp // core)

    def deep_buffer(self, channels: int, image_size: tuple[int, int]) -> np.ndarray:
        """The array an image's deep map is written into, tile by tile: paged from a memory-mapped float16
        file in the cache's :attr:`~FeatureCache.spill_dir` above :data:`pointseg.limits.PAGED_DEEP_ABOVE_PIXELS`
        (in memory when no file can be made), else in memory as :func:`deep_dtype` says."""
        from pointseg.limits import paged_deep_above_pixels

        hp, wp = self.padded_size(image_size)
        shape = (channels, hp // self.spec.stride, wp // self.spec.stride)
        if int(image_size[0]) * int(image_size[1]) > paged_deep_above_pixels():
            out = paged_array(shape, np.float16, self.cache.spill_dir)
            if out is not None:
                return out
        return np.empty(shape, dtype=deep_dtype(image_size))

    def _compute(self, rgb: np.ndarray, progress=None, paged: bool = False) -> np.ndarray:
        h, w = rgb.shape[:2]
        stride = self.spec.stride
        out = self.deep_buffer(self.channels, (h, w)) if paged else None
        if out is None:
            hp, wp = self.padded_size((h, w))
            out = np.empty((self.channels, hp // stride, wp // stride), dtype=np.float32)
        total = self.n_tiles((h, w))
        for done, ((y0, y1, x0, x1), tile) in enumerate(self.iter_tiles(rgb), 1):
            out[:, y0 // stride: y1 // stride, x0 // stride: x1 // stride] = tile
            release_pages(out)  # written tiles go to the page cache, not this process's resident set
            if progress is not None:
                progress(done, total)
        return out

    def compute_parts(self, rgb: np.ndarray, progress=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Like :meth:`compute`, but a stride-32 context stage's map comes back separately, at stride 32
        (``FeatureMap.context``); ``(compute(rgb), None)`` for trunks without one. ``progress(done, total)``
        is called after each tile."""
        if getattr(self.module, "context_start", None) is None:
            return self._compute(rgb, progress, paged=True), None
        hp, wp = self.padded_size(rgb.shape[:2])
        padded = _pad_reflect(rgb, hp, wp)
        stride = self.spec.stride
        out: list[np.ndarray] = []

        def sink(box, fused):  # each core's map goes into the deep map as soon as it is computed
            y0, y1, x0, x1 = box
            if not out:
                out.append(self.deep_buffer(fused.shape[0], rgb.shape[:2]))
            # assigned from the (strided) core view: no contiguous float32 copy of it on the way
            core = fused.detach().cpu()
            core = core if core.dtype == torch.float32 else core.float()
            out[0][:, y0 // stride: y1 // stride, x0 // stride: x1 // stride] = core.numpy()
            if is_paged(out[0]):  # a large image: neither its written tiles nor a tile's freed buffers stay
                release_pages(out[0])
                release_freed_memory()

        _, context = self._context_passes(padded, progress, sink)
        return out[0], _to_numpy(context)

    def iter_tiles(self, rgb: np.ndarray):
        """Yield ``((y0, y1, x0, x1), features)`` for core regions (padded-image pixels) covering the image.

        Each core is computed with ``spec.tile_margin`` pixels of real context around it (where the image
        has them), which covers the receptive field; the margins are cropped off again. Streaming tiles
        lets prediction on huge images run in bounded memory.
        """
        h, w = rgb.shape[:2]
        hp, wp = self.padded_size((h, w))
        padded = _pad_reflect(rgb, hp, wp)
        margin, core = self.spec.tile_margin, self.tile_size
        one_pass = hp <= core + 2 * margin and wp <= core + 2 * margin
        if one_pass and self.context_upscale == 1:  # the network's own forward: its context is native
            yield (0, hp, 0, wp), self._run(padded)
            return
        if getattr(self.module, "context_start", None) is not None:
            yield from self._tiles_with_context(padded)
            return
        for (y0, y1, x0, x1), (ty0, ty1, tx0, tx1) in self._tile_grid(hp, wp):
            yield (y0, y1, x0, x1), self._core(self._run(padded[ty0:ty1, tx0:tx1]), y0, y1, x0, x1, ty0, tx0)

    def _tile_grid(self, hp: int, wp: int):
        """``(core, core + margin)`` boxes, ``(y0, y1, x0, x1), (ty0, ty1, tx0, tx1)``, row by row."""
        margin, core = self.spec.tile_margin, self.tile_size
        for y0 in range(0, hp, core):
            for x0 in range(0, wp, core):
                y1, x1 = min(y0 + core, hp), min(x0 + core, wp)
                yield (y0, y1, x0, x1), (max(0, y0 - margin), min(hp, y1 + margin),
                                         max(0, x0 - margin), min(wp, x1 + margin))

    @staticmethod
    def _core(feats, y0: int, y1: int, x0: int, x1: int, ty0: int, tx0: int, stride: int = 4):
        """The cells of a tile's map (``stride`` px each) that lie in its core."""
        fy, fx = (y0 - ty0) // stride, (x0 - tx0) // stride
        return feats[:, fy: fy + (y1 - y0) // stride, fx: fx + (x1 - x0) // stride]

    def _tiles_with_context(self, padded: np.ndarray):
        """Tiles for a trunk with a stride-32 context tail, exactly equal to one whole-image pass: the cores'
        stride-4/8/16 maps with their window of the upsampled context map (see :meth:`_context_passes`)."""
        cores, context = self._context_passes(padded)
        for (y0, y1, x0, x1), fused in cores:
            window = upsample_window(context, 8, (y0 // 4, y1 // 4), (x0 // 4, x1 // 4))
            yield (y0, y1, x0, x1), np.concatenate([_to_numpy(fused), _to_numpy(window)])

    def _context_passes(self, padded: np.ndarray, progress=None, sink=None, upscaled: bool = True):
        """``[(core box, fused stride-4/8/16 map of the core)], context map`` for a trunk with a context tail.

        The tail's receptive field is too wide for tile margins (a 480-px margin made tiles 2x the whole
        pass), but its input is only the stride-16 map. So: tiles with the ordinary margin give the fused
        stride-4/8/16 map and the stride-16 map of their cores; the tail runs once over the assembled
        stride-16 map of the whole image. The cores' maps stay in the network's dtype (bf16 under autocast:
        half the memory) until the tail has run, so streaming a huge image holds about half its deep map.
        With ``sink(box, fused)`` each core's map is handed over as soon as it is computed instead (the
        list comes back empty): extraction then holds one deep map, not a second copy of it in cores.
        An image that fits one tile is one pass, split at the tail. With ``context_upscale`` > 1 (and
        ``upscaled``) the context map comes from an enlarged copy instead (:meth:`_upscaled_context`).
        """
        upscale = upscaled and self.context_upscale > 1
        hp, wp = padded.shape[:2]
        margin, core = self.spec.tile_margin, self.tile_size
        base = self._base_pass if sink is not DROP_FUSED else self._stride16_pass
        if hp <= core + 2 * margin and wp <= core + 2 * margin:
            fused, x16 = base(padded)
            context = self._upscaled_context(padded) if upscale else self._context_tail(x16[0])
            if progress is not None:
                progress(1, 1)
            if sink is not None:
                sink((0, hp, 0, wp), fused[0] if fused is not None else None)
                return [], context
            return [((0, hp, 0, wp), fused[0])], context
        cores, s16, done = [], None, 0
        for (y0, y1, x0, x1), (ty0, ty1, tx0, tx1) in self._tile_grid(hp, wp):
            fused, x16 = base(padded[ty0:ty1, tx0:tx1])
            if s16 is None:
                s16 = torch.empty((x16.shape[1], hp // 16, wp // 16), dtype=x16.dtype)
            s16[:, y0 // 16: y1 // 16, x0 // 16: x1 // 16] = self._core(x16[0], y0, y1, x0, x1, ty0, tx0, 16)
            fused_core = self._core(fused[0], y0, y1, x0, x1, ty0, tx0) if fused is not None else None
            if sink is not None:
                sink((y0, y1, x0, x1), fused_core)
            else:
                cores.append(((y0, y1, x0, x1), fused_core.clone()))
            del fused, x16, fused_core
            done += 1
            if progress is not None:
                progress(done, self.n_tiles((hp, wp)))
        if upscale:
            del s16
            return cores, self._upscaled_context(padded)
        return cores, self._context_tail(s16)

    def _upscaled_context(self, padded: np.ndarray) -> torch.Tensor:
        """The context map of the image seen ``context_upscale`` times larger, on the image's own grid.

        The padded image is upscaled bilinearly (:func:`upscale_image`), its stride-16 map assembled as for
        any image (tiled when large, exact), the context tail run over it, and its stride-32 map
        average-pooled by the factor back to the image's stride-32 grid: the context channels keep their
        geometry (and every predictor its layout), but describe each cell at the scale of a larger image,
        where the stage's receptive field (80 % of its gradient mass within ~256 px) no longer spans a small
        image several times over. Only the context tail's input changes; the stride-4/8/16 maps stay native.
        """
        f = self.context_upscale
        up = upscale_image(padded, f)
        # the enlarged copy's own passes, through the stride-16 stage only: its fused maps are never made
        _, context = self._context_passes(up, sink=DROP_FUSED, upscaled=False)
        del up
        return F.avg_pool2d(context[None], f)[0]

    def _base_pass(self, padded: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk up to the context tail over ``padded``: (fused stride-4/8/16 map, stride-16 map)."""
        with self._inference():
            return self.module.forward_base(self._prepare(padded))

    def _stride16_pass(self, padded: np.ndarray) -> tuple[None, torch.Tensor]:
        """(None, the stride-16 map) of ``padded``: :meth:`_base_pass` without fusing the stage maps."""
        with self._inference():
            return None, self.module.forward_stride16(self._prepare(padded))

    def _context_tail(self, s16: torch.Tensor) -> torch.Tensor:
        """The context tail over an image's stride-16 map, ``C x h x w`` → stride-32 ``C' x h/2 x w/2``.

        One pass when the map is small; otherwise in tiles of :data:`CONTEXT_TILE_CELLS` stride-16 cells with
        :data:`CONTEXT_MARGIN_CELLS` of margin, so its working memory does not grow with the image (one pass
        over a 50 MP image's map took 0.9 GB in OpenVINO's buffers). The tail's reach is ~14 cells (measured
        on efficientnet_lite0_s32: a changed cell moves outputs within 7 stride-32 rows), so the margin covers
        it and tiles equal the single pass within float precision; cores and margins are even, keeping its
        stride-2 convolutions on the same phase.
        """
        _, h, w = s16.shape
        core, margin = CONTEXT_TILE_CELLS, CONTEXT_MARGIN_CELLS
        if h <= core + 2 * margin and w <= core + 2 * margin:
            with self._inference():
                return self.module.forward_context(self._channels_last(s16[None]))[0].float()
        out = None
        for y0 in range(0, h, core):
            for x0 in range(0, w, core):
                y1, x1 = min(h, y0 + core), min(w, x0 + core)
                ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
                window = s16[None, :, ty0: min(h, y1 + margin), tx0: min(w, x1 + margin)].contiguous()
                with self._inference():
                    tile = self.module.forward_context(self._channels_last(window))[0].float()
                if out is None:
                    out = torch.empty((tile.shape[0], h // 2, w // 2), dtype=torch.float32)
                fy, fx = (y0 - ty0) // 2, (x0 - tx0) // 2
                out[:, y0 // 2: y1 // 2, x0 // 2: x1 // 2] = tile[:, fy: fy + (y1 - y0) // 2, fx: fx + (x1 - x0) // 2]
        return out

    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        rgb = np.ascontiguousarray(rgb)
        if not rgb.flags.writeable:  # read-only inputs (memory maps, cached arrays): torch wants a copy
            rgb = rgb.copy()
        x = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None]
        return self._channels_last((x.float() / self.spec.input_scale - self._mean) / self._std)

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.precision == "bf16" else x

    @contextmanager
    def _inference(self):
        """One forward at a time (two would only fight over the same cores), bf16 autocast where chosen."""
        with torch.inference_mode(), self._run_lock:
            if self.precision == "bf16":
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        x = self._prepare(rgb)
        with self._inference():
            y = self.module(x)
        return _to_numpy(y[0])


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().contiguous().cpu().numpy()


def upsample_context(context: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """``C x h x w`` context map (or scores) → ``C x grid_size``, bilinear as in the network's fusion."""
    return F.interpolate(context[None].float(), size=grid_size, mode="bilinear", align_corners=False)[0]


def cell_span(r0: int, r1: int, scale: int, n: int) -> tuple[int, int]:
    """Grid cells that bilinear upsampling by ``scale`` needs for output rows ``r0:r1``: the cells under
    them plus one each side (clamped to the ``n`` cells there are)."""
    return max(0, r0 // scale - 1), min(n, -(-r1 // scale) + 1)


def upsample_cells(cells: torch.Tensor, scale: int, g0: int, k0: int, rows: tuple[int, int],
                   cols: tuple[int, int]) -> torch.Tensor:
    """Output rows/columns ``rows x cols`` of a grid's upsampling, from ``cells``: the grid's cells from
    ``(g0, k0)`` on, as :func:`cell_span` gives them."""
    (r0, r1), (c0, c1) = rows, cols
    up = F.interpolate(cells[None], size=(cells.shape[1] * scale, cells.shape[2] * scale),
                       mode="bilinear", align_corners=False)[0]
    return up[:, r0 - g0 * scale: r1 - g0 * scale, c0 - k0 * scale: c1 - k0 * scale]


def upsample_window(grid: torch.Tensor, scale: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of ``grid`` (``C x h x w``) bilinearly upsampled
    by the integer ``scale`` (``align_corners=False``), computed from the grid cells they need plus one each
    side: with an integer scale this reproduces the whole-grid interpolation exactly, borders included."""
    h, w = grid.shape[1:]
    g0, g1 = cell_span(*rows, scale, h)
    k0, k1 = cell_span(*cols, scale, w)
    return upsample_cells(grid[:, g0:g1, k0:k1], scale, g0, k0, rows, cols)


#: the factors the context stage may see an image enlarged by (see ``FeatureExtractor._upscaled_context``)
CONTEXT_UPSCALES = (1, 2, 4)
#: the largest enlarged copy (pixels) the "size" rule lets the median training image cost: a 250 x 1000 px
#: strip still gets x4, a 300 x 4000 one x2
CONTEXT_UPSCALE_MAX_PIXELS = 4_000_000


def DROP_FUSED(box, fused) -> None:
    """The ``sink`` of a pass whose fused maps nobody reads (the enlarged copy of ``context_upscale``): the
    pass then runs the trunk to its stride-16 map only (``forward_stride16``)."""


def check_context_upscale(factor) -> int:
    """``factor`` as an int, if it is one of :data:`CONTEXT_UPSCALES`; else a one-line error."""
    if isinstance(factor, bool) or factor not in CONTEXT_UPSCALES:
        raise PointsegError(f"context_upscale must be one of {', '.join(map(str, CONTEXT_UPSCALES))}, "
                            f"got {factor!r}")
    return int(factor)


def upscale_image(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``H x W x 3`` uint8 → ``fH x fW x 3`` uint8, bilinear (``align_corners=False``), rounded: the copy the
    context stage sees for ``context_upscale`` (the exported graph does the same in its own operators)."""
    rgb = np.ascontiguousarray(rgb)
    t = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1)[None].float()
    up = F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
    return up.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def filter_bank_version() -> int:
    """:data:`pointseg.filters.VERSION`, without importing scipy until hybrid features are used."""
    from pointseg import filters

    return filters.VERSION


def _pad_reflect(rgb: np.ndarray, hp: int, wp: int):
    """``rgb`` padded at the bottom and right to ``hp x wp`` (reflecting, or repeating the edge where the
    image is smaller than its padding), as a :class:`PaddedImage` that makes only the tiles asked for."""
    if rgb.shape[:2] == (hp, wp):
        return rgb
    return PaddedImage(rgb, hp, wp)


def padded_index(start: int, stop: int, n: int, reflect: bool) -> np.ndarray:
    """Source rows (or columns) of padded rows ``start:stop`` of an image ``n`` rows high: ``np.pad``'s
    ``reflect`` (without repeating the edge) or ``edge`` mode."""
    index = np.arange(start, stop)
    over = index >= n
    index[over] = 2 * (n - 1) - index[over] if reflect else n - 1
    return index


class PaddedImage:
    """An image padded at the bottom and right as ``np.pad`` pads it, made tile by tile on slicing: the
    extraction of a large image held a whole padded copy (3 bytes a pixel: 150 MB at 50 MP) for the length
    of its tiles. ``padded[y0:y1, x0:x1]`` is a view of the image inside it, a small copy at the border;
    ``np.asarray(padded)`` the whole padded array."""

    def __init__(self, rgb: np.ndarray, hp: int, wp: int):
        self.rgb = rgb
        self.shape = (hp, wp, *rgb.shape[2:])
        self.dtype = rgb.dtype
        h, w = rgb.shape[:2]
        self.reflect = h > hp - h and w > wp - w

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        (y0, y1, _), (x0, x1, _) = rows.indices(self.shape[0]), cols.indices(self.shape[1])
        h, w = self.rgb.shape[:2]
        if y1 <= h and x1 <= w:
            return self.rgb[y0:y1, x0:x1]
        return self.rgb[np.ix_(padded_index(y0, y1, h, self.reflect), padded_index(x0, x1, w, self.reflect))]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        h, w = self.rgb.shape[:2]
        out = np.pad(self.rgb, ((0, self.shape[0] - h), (0, self.shape[1] - w), (0, 0)),
                     mode="reflect" if self.reflect else "edge")
        return out if dtype is None else out.astype(dtype, copy=False)


def upsample(grid: torch.Tensor, extent: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample ``K x h_f x w_f`` to the padded extent and crop to the image."""
    up = F.interpolate(grid[None], size=extent, mode="bilinear", align_corners=False)[0]
    return up[:, : image_size[0], : image_size[1]]

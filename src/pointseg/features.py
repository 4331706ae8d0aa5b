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

import hashlib
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pointseg.backbones import build_backbone
from pointseg.errors import PointsegError
from pointseg.imageio import load_image
from pointseg.presets import DEFAULT_BACKBONE

#: bumped whenever preprocessing changes in a way that changes features (invalidates disk caches)
PREPROCESSING_VERSION = 1

FEATURE_KINDS = ("deep", "hybrid")


@dataclass
class FeatureMap:
    """One image's features.

    ``data`` is the deep map, ``C x h_f x w_f`` float32 covering the padded image extent; ``fine`` (hybrid
    features only) holds full-resolution low-level filter responses, ``C_fine x H x W`` (:mod:`pointseg.filters`).
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
    _stats: tuple[np.ndarray, np.ndarray, int] | None = field(default=None, repr=False)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    @property
    def deep_channels(self) -> int:
        return self.data.shape[0] + (self.context.shape[0] if self.context is not None else 0)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.data, self.fine, self.context) if a is not None)

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

    def moments(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-channel mean and mean of squares over the real image (memoised), deep channels then fine.

        Standardisation statistics over all pixels of the training images are built from these, so a refit
        after a click costs no pass over the feature maps. Each image weighs by its pixel count.
        """
        if self._stats is None:
            hf, wf = self.valid_grid_size
            blocks = [self.data[:, :hf, :wf]]
            if self.context is not None:
                blocks.append(self.context_on_grid()[:, :hf, :wf])
            if self.fine is not None:
                blocks.append(self.fine)
            mean, mean_sq = [], []
            for block in blocks:
                flat = block.reshape(block.shape[0], -1)
                m = flat.mean(axis=1, dtype=np.float64)
                mean.append(m)
                mean_sq.append(np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / flat.shape[1])
            count = self.image_size[0] * self.image_size[1]
            self._stats = (np.concatenate(mean) * count, np.concatenate(mean_sq) * count, count)
        return self._stats

    @property
    def valid_grid_size(self) -> tuple[int, int]:
        """Cells whose centre lies inside the original image (the rest cover padding)."""
        h, w = self.image_size
        hp, wp = self.extent
        hf, wf = self.grid_size
        return max(1, int(np.ceil(h * hf / hp))), max(1, int(np.ceil(w * wf / wp)))


class FeatureCache:
    """LRU cache of feature maps, bounded in bytes, with an optional float16 disk layer.

    Thread-safe: the server computes features in a worker thread while requests read them.
    """

    def __init__(self, max_bytes: int = 2_000_000_000, disk_dir: str | os.PathLike | None = None):
        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._items: OrderedDict[str, FeatureMap] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or (self._disk_path(key) is not None and self._disk_path(key).is_file())

    def get(self, key: str) -> FeatureMap | None:
        with self._lock:
            fmap = self._items.get(key)
            if fmap is not None:
                self._items.move_to_end(key)
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
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _put_memory(self, fmap: FeatureMap) -> None:
        with self._lock:
            if fmap.key in self._items:
                self._items.move_to_end(fmap.key)
                return
            if fmap.nbytes > self.max_bytes:
                return
            self._items[fmap.key] = fmap
            self._bytes += fmap.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def _disk_path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.npz"

    def _write_disk(self, fmap: FeatureMap) -> None:
        path = self._disk_path(fmap.key)
        if path is None or path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as handle:
            extra = {name: a.astype(np.float16) for name, a in (("fine", fmap.fine), ("context", fmap.context))
                     if a is not None}
            np.savez(
                handle,
                **extra,
                data=fmap.data.astype(np.float16),
                image_size=np.array(fmap.image_size),
                extent=np.array(fmap.extent),
                extractor_id=np.array(fmap.extractor_id),
            )
        os.replace(tmp, path)

    def _read_disk(self, key: str) -> FeatureMap | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return FeatureMap(
                    data=z["data"].astype(np.float32),
                    image_size=tuple(int(v) for v in z["image_size"]),
                    extent=tuple(int(v) for v in z["extent"]),
                    key=key,
                    extractor_id=str(z["extractor_id"]),
                    fine=z["fine"].astype(np.float32) if "fine" in z.files else None,
                    context=z["context"].astype(np.float32) if "context" in z.files else None,
                )
        except Exception:
            path.unlink(missing_ok=True)  # a torn or stale cache file is recomputed, never trusted
            return None


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
                 download: bool = False, features: str = "deep", engine: str = "auto"):
        if features not in FEATURE_KINDS:
            raise PointsegError(f"unknown features {features!r}; choose one of: {', '.join(FEATURE_KINDS)}")
        self.features = features
        self.module, self.spec, self.weights_source, self.weights_sha256 = build_backbone(
            backbone, weights, download=download
        )
        self.device = resolve_device(device)
        self.engine = resolve_extractor_engine(engine, self.device)
        self.precision = resolve_precision("fp32" if self.engine == "onnxruntime" and precision == "auto"
                                           else precision, self.device)
        if tile_size < self.spec.pad_multiple:
            raise PointsegError(f"tile_size {tile_size} is too small; use at least {self.spec.pad_multiple}")
        self.tile_size = int(tile_size) // self.spec.pad_multiple * self.spec.pad_multiple
        self.cache = cache if cache is not None else FeatureCache()
        self.module.to(self.device)
        if self.engine != "torch":
            from pointseg.engines.trunk import EngineTrunk

            self.module = EngineTrunk(self.module, self.spec, self.weights_sha256, self.engine, self.precision)
        elif self.precision == "bf16":
            self.module.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self.id = (
            f"{self.spec.name}-{self.weights_sha256[:16]}-{self.engine}-{self.precision}-p{PREPROCESSING_VERSION}"
            + (f"-hybrid{filter_bank_version()}" if self.hybrid else "")
        )
        self._run_lock = threading.Lock()

    @property
    def backbone(self) -> str:
        return self.spec.name

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

    def key_for(self, image: np.ndarray) -> str:
        return f"{image_digest(image)}-{self.id}"

    def extract(self, image) -> FeatureMap:
        """Features of one image (path or array), from the cache when possible."""
        if isinstance(image, FeatureMap):
            self.check_compatible(image)
            return image
        rgb = load_image(image)
        key = self.key_for(rgb)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        data, context = self.compute_parts(rgb)
        fine = None
        if self.hybrid:
            from pointseg.filters import low_level_features

            fine = low_level_features(rgb)
        fmap = FeatureMap(data, rgb.shape[:2], self.padded_size(rgb.shape[:2]), key, self.id, fine, context)
        self.cache.put(fmap)
        return fmap

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
        h, w = rgb.shape[:2]
        hp, wp = self.padded_size((h, w))
        stride = self.spec.stride
        out = np.empty((self.channels, hp // stride, wp // stride), dtype=np.float32)
        for (y0, y1, x0, x1), tile in self.iter_tiles(rgb):
            out[:, y0 // stride: y1 // stride, x0 // stride: x1 // stride] = tile
        return out

    def compute_parts(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Like :meth:`compute`, but a stride-32 context stage's map comes back separately, at stride 32
        (``FeatureMap.context``); ``(compute(rgb), None)`` for trunks without one."""
        if getattr(self.module, "context_start", None) is None:
            return self.compute(rgb), None
        hp, wp = self.padded_size(rgb.shape[:2])
        padded = _pad_reflect(rgb, hp, wp)
        stride = self.spec.stride
        cores, context = self._context_passes(padded)
        base = np.empty((cores[0][1].shape[0], hp // stride, wp // stride), dtype=np.float32)
        for (y0, y1, x0, x1), fused in cores:
            base[:, y0 // stride: y1 // stride, x0 // stride: x1 // stride] = _to_numpy(fused)
        return base, _to_numpy(context)

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
        if hp <= core + 2 * margin and wp <= core + 2 * margin:
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

    def _context_passes(self, padded: np.ndarray):
        """``[(core box, fused stride-4/8/16 map of the core)], context map`` for a trunk with a context tail.

        The tail's receptive field is too wide for tile margins (a 480-px margin made tiles 2x the whole
        pass), but its input is only the stride-16 map. So: tiles with the ordinary margin give the fused
        stride-4/8/16 map and the stride-16 map of their cores; the tail runs once over the assembled
        stride-16 map of the whole image. The cores' maps stay in the network's dtype (bf16 under autocast:
        half the memory) until the tail has run, so streaming a huge image holds about half its deep map.
        An image that fits one tile is one pass, split at the tail.
        """
        hp, wp = padded.shape[:2]
        margin, core = self.spec.tile_margin, self.tile_size
        if hp <= core + 2 * margin and wp <= core + 2 * margin:
            with self._inference():
                fused, x16 = self.module.forward_base(self._prepare(padded))
                context = self.module.forward_context(x16)[0].float()
            return [((0, hp, 0, wp), fused[0])], context
        cores, s16 = [], None
        for (y0, y1, x0, x1), (ty0, ty1, tx0, tx1) in self._tile_grid(hp, wp):
            with self._inference():
                fused, x16 = self.module.forward_base(self._prepare(padded[ty0:ty1, tx0:tx1]))
            if s16 is None:
                s16 = torch.empty((x16.shape[1], hp // 16, wp // 16), dtype=x16.dtype)
            s16[:, y0 // 16: y1 // 16, x0 // 16: x1 // 16] = self._core(x16[0], y0, y1, x0, x1, ty0, tx0, 16)
            cores.append(((y0, y1, x0, x1), self._core(fused[0], y0, y1, x0, x1, ty0, tx0).clone()))
        with self._inference():
            context = self.module.forward_context(self._channels_last(s16[None]))[0].float()
        return cores, context

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


def upsample_window(grid: torch.Tensor, scale: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of ``grid`` (``C x h x w``) bilinearly upsampled
    by the integer ``scale`` (``align_corners=False``), computed from the grid cells they need plus one each
    side: with an integer scale this reproduces the whole-grid interpolation exactly, borders included."""
    (r0, r1), (c0, c1) = rows, cols
    h, w = grid.shape[1:]
    g0, g1 = max(0, r0 // scale - 1), min(h, -(-r1 // scale) + 1)
    k0, k1 = max(0, c0 // scale - 1), min(w, -(-c1 // scale) + 1)
    up = F.interpolate(grid[None, :, g0:g1, k0:k1], size=((g1 - g0) * scale, (k1 - k0) * scale),
                       mode="bilinear", align_corners=False)[0]
    return up[:, r0 - g0 * scale: r1 - g0 * scale, c0 - k0 * scale: c1 - k0 * scale]


def filter_bank_version() -> int:
    """:data:`pointseg.filters.VERSION`, without importing scipy until hybrid features are used."""
    from pointseg import filters

    return filters.VERSION


def _pad_reflect(rgb: np.ndarray, hp: int, wp: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (h, w) == (hp, wp):
        return rgb
    mode = "reflect" if h > hp - h and w > wp - w else "edge"
    return np.pad(rgb, ((0, hp - h), (0, wp - w), (0, 0)), mode=mode)


def upsample(grid: torch.Tensor, extent: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample ``K x h_f x w_f`` to the padded extent and crop to the image."""
    up = F.interpolate(grid[None], size=extent, mode="bilinear", align_corners=False)[0]
    return up[:, : image_size[0], : image_size[1]]

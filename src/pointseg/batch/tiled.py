"""Gigapixel images as tile tasks whose labels equal the single-process prediction.

Why three phases. The default backbone's stride-32 context stage has a receptive field too wide for tile
margins (the extractor's own tiling runs it once over the image's whole stride-16 map, see
``FeatureExtractor._context_passes``). The tile tasks follow the same split, so every number they compute
is the number the single process computes:

A. per tile of the extractor's own tile grid (``spec.tile_margin`` of context, the same boxes as
   ``FeatureExtractor._tile_grid``): the fused stride-4/8/16 map of the core, scored at once by the linear
   head (K channels instead of hundreds are kept), and the core's stride-16 map (the context stage's input),
   both written to a work zarr in OUT;
A'. for a model whose context stage sees the image enlarged (``context_upscale`` f > 1, a model trained on
   small images): per tile of the enlarged image's tile grid, the stride-16 map of its core, from the
   native pixels it covers (plus one pixel) upscaled as ``features.upscale_image`` upscales the whole
   image — bilinear interpolation is local, so each enlarged tile equals that part of the whole enlarged
   copy — written to the work zarr in place of the native stride-16 map;
B. the context stage over the assembled stride-16 map: one task while that map has at most
   :data:`CONTEXT_WHOLE_CELLS` cells (a 4,600 × 4,600 px image; identical to the single process), else
   context tiles with a margin of :data:`CONTEXT_MARGIN` stride-16 cells, which covers the stage's
   receptive field (equal up to float rounding: convolutions over other extents may sum in another order);
   the context scores go to the work zarr at stride 32 (an enlarged map's average-pooled by f back to the
   image's stride-32 grid first, as ``FeatureExtractor._upscaled_context`` does);
C. per tile: the scores of the core plus a halo (bilinear upsampling from the cells it needs, exactly as
   ``features.upsample_window``; full-resolution filters with ``filters.HALO`` of context; Gaussian smoothing
   with 3σ + 1), then labels. They go into an OME-Zarr label image with a multiscale pyramid, and each
   tile returns its pixel counts, region counts and border strips, so the final task merges regions that
   cross tile borders (8-connected, as :func:`pointseg.outputs.summarize`) and writes a small PNG preview.

Peak memory of a task is bounded by the tile size (plus, in phase B, the stride-16 map of the part it runs
on); the image itself is never held anywhere. The label image is written under a ``.partial`` name and
renamed when complete, so an interrupted run leaves no half-written labels under the final name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from pointseg import lazyio
from pointseg.batch.inputs import InputItem
from pointseg.batch.models import ModelKey, model_for
from pointseg.errors import PointsegError

#: phase B runs as one task up to this many stride-16 cells (exactly the single-process computation): a
#: 4,600 x 4,600 px image. The context stage's activations cost ~3.3 KB per stride-16 cell (a one-task pass
#: over a 20,000 x 20,000 px image peaked at 7.9 GB), so larger maps go in context tiles of bounded memory.
CONTEXT_WHOLE_CELLS = 288 * 288
#: stride-32 cells per side of a phase-B tile's core when the context stage is tiled (4,096 px: with its
#: margin 288 x 288 stride-16 cells, ~0.3 GB, the same bound as the whole-map case)
CONTEXT_CORE = 128
#: stride-16 cells of margin around a phase-B tile: the context stage (one stride-2 and three stride-1
#: 5x5 depthwise blocks) reaches 15 cells; 16 keeps offsets even (stride-2 alignment)
CONTEXT_MARGIN = 16
#: the longest side of the PNG preview is at most this many pixels
PREVIEW_SIDE = 1024
LABEL_NAME = "classes"


@dataclass(frozen=True)
class TileJob:
    """What every task of one tiled image needs (small: boxes travel with the tasks that use them)."""

    location: str
    channels: tuple[int, ...] | None
    shape: tuple[int, int]
    extent: tuple[int, int]
    dtype: str
    core: int
    work: str
    partial: str
    context: bool
    levels: int
    preview_factor: int
    started: float
    upscale: int = 1          # the model's context factor: phase A' runs on the image enlarged this much


def plan_tiles(seg, plan: dict, fingerprint: dict, rule) -> dict:
    """The tile grid of an image too large to predict whole (computed where the model is loaded)."""
    if rule.score != "largest_region":
        raise PointsegError(
            f"{plan['location'].rsplit('/', 1)[-1]} is predicted in tiles, where the {rule.score!r} image score "
            "(a quantile over every pixel) is not available; use --ng-rule largest_region:AREA or --ng-area"
        )
    if seg.min_region:
        raise PointsegError(
            f"{plan['location'].rsplit('/', 1)[-1]} is predicted in tiles, where the small-region filter "
            "(min_region) is not available; pass --min-region 0"
        )
    ext = seg.extractor
    h, w = plan["shape"]
    hp, wp = ext.padded_size((h, w))
    boxes = [tuple(map(tuple, b)) for b in ext._tile_grid(hp, wp)]
    levels = 1
    while levels < 6 and max(h, w) >> levels >= 256 and ext.tile_size % (1 << levels) == 0:
        levels += 1
    factor = 1
    while max(h, w) / factor > PREVIEW_SIDE and ext.tile_size % (2 * factor) == 0:  # tiles hold whole cells
        factor *= 2
    context = getattr(ext.module, "context_start", None) is not None
    upscale = int(getattr(seg, "context_upscale_", 1) or 1) if context else 1
    enlarged = [tuple(map(tuple, b)) for b in ext._tile_grid(upscale * hp, upscale * wp)] if upscale > 1 else []
    return {**plan, "extent": (hp, wp), "core": ext.tile_size, "boxes": boxes, "levels": levels, "rule": rule,
            "preview_factor": factor, "fingerprint": fingerprint, "started": time.time(),
            "context": context, "upscale": upscale, "enlarged_boxes": enlarged}


def run_tiled(submit, key: ModelKey, item: InputItem, output: str, options, plan: dict):
    """Build the tile tasks of one image with ``submit`` (Dask's, or a direct call) and return the last one."""
    job = TileJob(plan["location"], options.channels, tuple(plan["shape"]), tuple(plan["extent"]), plan["dtype"],
                  plan["core"], lazyio.join(output, ".pointseg-work", item.stem.replace("/", "__")),
                  lazyio.join(output, f"{item.stem}.ome.zarr.partial"), plan["context"], plan["levels"],
                  plan["preview_factor"], plan["started"], plan.get("upscale", 1))
    boxes = plan["boxes"]
    ready = submit(prepare, key, job)
    value_range = None
    if np.dtype(job.dtype) not in (np.uint8, np.bool_):
        ranges = [submit(tile_range, job, core, ready) for core, _ in boxes]
        value_range = submit(_combine, ranges, job.dtype)
    base = [submit(base_tile, key, job, box, value_range, ready) for box in boxes]
    scored = base
    if job.context:
        # the context stage's input: the native tiles' stride-16 maps, or the enlarged image's (phase A')
        inputs = base if job.upscale == 1 else \
            [submit(enlarged_tile, key, job, box, value_range, ready) for box in plan["enlarged_boxes"]]
        scored = [submit(context_tile, key, job, box, inputs) for box in context_boxes(job)] + base
    tiles = [submit(label_tile, key, job, core, value_range, scored) for core, _ in boxes]
    ng_area = plan.get("ng_area", options.ng_area)  # resolved with the model (its own rule) by predict_image
    return submit(finish, key, job, item, output, ng_area, plan["rule"], [core for core, _ in boxes], tiles,
                  plan["fingerprint"])


def _trimmed(task):
    """Run a tile task, then hand the heap it freed back to the OS: a worker runs hundreds of tile tasks,
    and glibc otherwise keeps their freed tile-sized buffers, so its resident size grows with the image."""
    import functools

    from pointseg.features import release_freed_memory

    @functools.wraps(task)
    def run(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        finally:
            release_freed_memory()

    return run


# ------------------------------------------------------------------------------------------ set-up
def prepare(key: ModelKey, job: TileJob) -> bool:
    """Fresh work arrays and the (partial) label pyramid; leftovers of an interrupted run are removed."""
    import zarr

    seg = model_for(key)
    ext = seg.extractor
    lazyio.remove_tree(job.work)
    lazyio.remove_tree(job.partial)
    hp, wp = job.extent
    k, core = _head(seg)[0].shape[0], job.core     # score rows: K, or 2K for an auto-context head
    work = zarr.open_group(store=lazyio.zarr_store(job.work, read_only=False), mode="w")
    work.create_array("grid", shape=(k, hp // 4, wp // 4), chunks=(k, core // 4, core // 4), dtype="f4")
    if job.context:
        channels, f = _stride16_channels(ext), job.upscale
        work.create_array("s16", shape=(channels, f * hp // 16, f * wp // 16),
                          chunks=(channels, core // 16, core // 16), dtype="f4")
        side = CONTEXT_CORE if _context_tiled(job) else max(hp, wp) // 32
        work.create_array("coarse", shape=(k, hp // 32, wp // 32), chunks=(k, side, side), dtype="f4")
    root = zarr.open_group(store=lazyio.zarr_store(job.partial, read_only=False), mode="w", zarr_format=2)
    labels = root.require_group("labels").require_group(LABEL_NAME)
    h, w = job.shape
    for level in range(job.levels):
        s = 1 << level
        labels.create_array(str(level), shape=(-(-h // s), -(-w // s)), chunks=(core // s, core // s), dtype="u1",
                            chunk_key_encoding={"name": "v2", "separator": "/"})
    return True


def _stride16_channels(ext) -> int:
    with ext._inference():
        _, x16 = ext.module.forward_base(ext._prepare(np.zeros((32, 32, 3), dtype=np.uint8)))
    return int(x16.shape[1])


def _context_tiled(job: TileJob) -> bool:
    """Whether the stride-16 map the context stage runs on (the enlarged image's, f² times the cells, for an
    enlarged context) is too large for one task."""
    return (job.upscale * job.extent[0] // 16) * (job.upscale * job.extent[1] // 16) > CONTEXT_WHOLE_CELLS


def context_boxes(job: TileJob) -> list[tuple[int, int, int, int]]:
    """Phase-B cores in the image's stride-32 cells; one box for the whole map unless it is large. With an
    enlarged context a core covers 1/f of the cells per side, so its stride-16 input stays the same size."""
    hc, wc = job.extent[0] // 32, job.extent[1] // 32
    if not _context_tiled(job):
        return [(0, hc, 0, wc)]
    side = max(1, CONTEXT_CORE // job.upscale)
    return [(y, min(y + side, hc), x, min(x + side, wc)) for y in range(0, hc, side) for x in range(0, wc, side)]


# ------------------------------------------------------------------------------------------ reading
def _open(job: TileJob):
    return lazyio.open_lazy(job.location, list(job.channels) if job.channels is not None else None)


def tile_range(job: TileJob, core, _ready) -> tuple[float, float]:
    y0, y1, x0, x1 = core
    lazy = _open(job)
    try:
        h, w = job.shape
        return lazyio.region_range(lazyio.as_three_channels(lazy.read(y0, min(y1, h), x0, min(x1, w))))
    finally:
        lazy.close()


def _combine(ranges, dtype: str):
    return lazyio.combine_ranges(ranges, dtype)


def read_padded(job: TileJob, box, value_range) -> np.ndarray:
    """Rows/columns ``box`` of the image padded as ``features._pad_reflect`` pads it (reflect, or edge
    where the image is smaller than its padding), read from the lazy source."""
    ty0, ty1, tx0, tx1 = box
    h, w = job.shape
    hp, wp = job.extent
    reflect = h > hp - h and w > wp - w
    rows, cols = _source_index(ty0, ty1, h, reflect), _source_index(tx0, tx1, w, reflect)
    lazy = _open(job)
    try:
        block = lazy.read_rgb(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1, value_range)
    finally:
        lazy.close()
    return np.ascontiguousarray(block[np.ix_(rows - rows.min(), cols - cols.min())])


def _source_index(start: int, stop: int, n: int, reflect: bool) -> np.ndarray:
    from pointseg.features import padded_index

    return padded_index(start, stop, n, reflect)


# ------------------------------------------------------------------------------------------ phase A
@_trimmed
def base_tile(key: ModelKey, job: TileJob, box, value_range, _ready) -> None:
    """Deep scores of one core (and its stride-16 map when the backbone has a context stage)."""
    import zarr

    from pointseg.classifier import single_thread
    from pointseg.features import _to_numpy

    seg = model_for(key)
    ext = seg.extractor
    (y0, y1, x0, x1), (ty0, ty1, tx0, tx1) = box
    crop = read_padded(job, (ty0, ty1, tx0, tx1), value_range)
    work = zarr.open_group(store=lazyio.zarr_store(job.work, read_only=False), mode="r+")
    if job.context:
        with ext._inference():
            fused, x16 = ext.module.forward_base(ext._prepare(crop))
        if job.upscale == 1:   # else the context stage's input comes from the enlarged image (phase A')
            s16 = ext._core(x16[0], y0, y1, x0, x1, ty0, tx0, 16)
            work["s16"][:, y0 // 16: y1 // 16, x0 // 16: x1 // 16] = s16.float().numpy()
        data = _to_numpy(ext._core(fused[0], y0, y1, x0, x1, ty0, tx0))
    else:
        data = ext._core(ext._run(crop), y0, y1, x0, x1, ty0, tx0)
    with single_thread():
        scores = _deep_scores(seg, data)
    work["grid"][:, y0 // 4: y1 // 4, x0 // 4: x1 // 4] = scores.numpy()


@_trimmed
def enlarged_tile(key: ModelKey, job: TileJob, box, value_range, _ready) -> None:
    """Phase A': the stride-16 map of one core of the image enlarged ``job.upscale`` times (``box`` in
    enlarged pixels, a box of ``FeatureExtractor._tile_grid`` over the enlarged extent, as the whole-image
    path tiles its enlarged copy). The native rows and columns the tile covers, one more on each side, are
    upscaled and cropped: bilinear interpolation reads at most the neighbouring source pixel, so the crop
    equals that part of ``features.upscale_image`` of the whole padded image, edges included."""
    import zarr

    from pointseg.features import upscale_image

    seg = model_for(key)
    ext = seg.extractor
    f = job.upscale
    hp, wp = job.extent
    (y0, y1, x0, x1), (ty0, ty1, tx0, tx1) = box
    r0, r1 = max(0, ty0 // f - 1), min(hp, -(-ty1 // f) + 1)
    c0, c1 = max(0, tx0 // f - 1), min(wp, -(-tx1 // f) + 1)
    up = upscale_image(read_padded(job, (r0, r1, c0, c1), value_range), f)
    tile = np.ascontiguousarray(up[ty0 - f * r0: ty1 - f * r0, tx0 - f * c0: tx1 - f * c0])
    del up
    _, x16 = ext._stride16_pass(tile)
    s16 = ext._core(x16[0], y0, y1, x0, x1, ty0, tx0, 16)
    work = zarr.open_group(store=lazyio.zarr_store(job.work, read_only=False), mode="r+")
    work["s16"][:, y0 // 16: y1 // 16, x0 // 16: x1 // 16] = s16.float().numpy()


def _head(seg) -> tuple[np.ndarray, np.ndarray]:
    """The folded linear head, as ``Segmenter.decision_grid`` hands it to the features (float32): for an
    auto-context head its stacked linear parts (stage 1's K rows, then stage 2's feature part), whose
    scores :class:`~pointseg.autocontext.AutoContextScores` turns into stage 2's logits per box."""
    w, b = seg.head_.folded()[:2]
    return np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)


def _deep_scores(seg, data: np.ndarray) -> torch.Tensor:
    """The base block's scores with the bias, as ``FeatureMap.score`` computes them on grid cells."""
    weights, bias = _head(seg)
    c = data.shape[0]
    w = torch.from_numpy(np.ascontiguousarray(weights[:, :c]))
    b = torch.from_numpy(np.ascontiguousarray(bias))
    return torch.einsum("kc,chw->khw", w, torch.from_numpy(data)) + b[:, None, None]


# ------------------------------------------------------------------------------------------ phase B
@_trimmed
def context_tile(key: ModelKey, job: TileJob, box, _base) -> str:
    """The context stage over (part of) the stride-16 map, scored by the head at stride 32."""
    import zarr

    from pointseg.classifier import single_thread

    seg = model_for(key)
    ext = seg.extractor
    work = zarr.open_group(store=lazyio.zarr_store(job.work, read_only=False), mode="r+")
    s16 = work["s16"]
    cy0, cy1, cx0, cx1 = box
    f = job.upscale           # the stride-16 map is the enlarged image's: its stride-32 cells are f x finer
    margin = CONTEXT_MARGIN if _context_tiled(job) else 0
    r0, r1 = max(0, 2 * f * cy0 - margin), min(s16.shape[1], 2 * f * cy1 + margin)
    c0, c1 = max(0, 2 * f * cx0 - margin), min(s16.shape[2], 2 * f * cx1 + margin)
    dtype = torch.bfloat16 if ext.precision == "bf16" else torch.float32
    x16 = torch.from_numpy(np.asarray(s16[:, r0:r1, c0:c1])).to(dtype)
    with ext._inference():
        context = ext.module.forward_context(ext._channels_last(x16[None]))[0].float()
    context = context[:, f * cy0 - r0 // 2: f * cy1 - r0 // 2, f * cx0 - c0 // 2: f * cx1 - c0 // 2]
    if f > 1:                 # back to the image's stride-32 grid, as FeatureExtractor._upscaled_context
        context = torch.nn.functional.avg_pool2d(context[None], f)[0]
    context = context.contiguous()
    weights, _ = _head(seg)
    c_deep = ext.channels
    w_ctx = torch.from_numpy(np.ascontiguousarray(weights[:, c_deep - context.shape[0]: c_deep]))
    with single_thread():  # FeatureMap.score: the context block scored at stride 32, upsampled per window
        coarse = w_ctx @ context.reshape(context.shape[0], -1)
    work["coarse"][:, cy0:cy1, cx0:cx1] = coarse.reshape(-1, cy1 - cy0, cx1 - cx0).numpy()
    return str(box)


# ------------------------------------------------------------------------------------------ phase C
@_trimmed
def label_tile(key: ModelKey, job: TileJob, core, value_range, _scored) -> dict:
    """Labels of one core, written into the pyramid; returns counts, border strips and a preview piece.

    The core goes through ``Segmenter.predict_region`` with a :class:`~pointseg.features.Scores` whose deep
    cells come from the work zarr and whose fine responses come from the image (with ``filters.HALO`` of
    context): the same logits, smoothing and decision as the whole image's prediction.
    """
    import zarr

    from pointseg.autocontext import AutoContextHead, AutoContextScores
    from pointseg.features import Scores

    seg = model_for(key)
    h, w = job.shape
    y0, y1, x0, x1 = core[0], min(core[1], h), core[2], min(core[3], w)
    work = zarr.open_group(store=lazyio.zarr_store(job.work), mode="r")
    grid = work["grid"]
    coarse = work["coarse"] if job.context else None

    def grid_window(rows, cols):
        (g0, g1), (k0, k1) = rows, cols
        out = torch.from_numpy(np.asarray(grid[:, g0:g1, k0:k1]))
        if coarse is not None:
            out += _upsampled(coarse, 8, rows, cols)
        return out

    weights, _ = _head(seg)
    fine_weights = weights[:, seg.extractor.channels:] if seg.extractor.hybrid else None
    scores = Scores(job.shape, job.extent, grid.shape[1:], grid_window, _LazyFine(job, value_range), fine_weights)
    if isinstance(seg.head_, AutoContextHead):   # stage 2 reads stage 1's probabilities around the box
        scores = AutoContextScores(scores, seg.head_.folded()[2])
    labels = seg.predict_region(scores, (y0, y1, x0, x1), probabilities=False).labels.astype(np.uint8)
    pyramid = zarr.open_group(store=lazyio.zarr_store(job.partial, read_only=False), mode="r+")["labels"][LABEL_NAME]
    for level in range(job.levels):
        s = 1 << level
        part = labels[::s, ::s]
        pyramid[str(level)][y0 // s: y0 // s + part.shape[0], x0 // s: x0 // s + part.shape[1]] = part
    return _tile_stats(labels, len(seg.classes_), seg.background_, job.preview_factor)


def _upsampled(array, scale: int, rows, cols) -> torch.Tensor:
    """Rows x cols of ``array`` (``C x h x w`` zarr) bilinearly upsampled by ``scale``, from just the cells
    that needs (``features.cell_span``): exactly the whole-array upsampling."""
    from pointseg.features import cell_span, upsample_cells

    g0, g1 = cell_span(*rows, scale, array.shape[1])
    k0, k1 = cell_span(*cols, scale, array.shape[2])
    return upsample_cells(torch.from_numpy(np.asarray(array[:, g0:g1, k0:k1])), scale, g0, k0, rows, cols)


class _LazyFine:
    """The full-resolution filter responses of a box, from the lazily read image plus ``filters.HALO``."""

    def __init__(self, job: TileJob, value_range):
        self.job, self.value_range = job, value_range

    def fine_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        from pointseg.filters import HALO, low_level_features

        h, w = self.job.shape
        a, b, c, d = max(0, y0 - HALO), min(h, y1 + HALO), max(0, x0 - HALO), min(w, x1 + HALO)
        lazy = _open(self.job)
        try:
            rgb = lazy.read_rgb(a, b, c, d, self.value_range)
        finally:
            lazy.close()
        return np.ascontiguousarray(low_level_features(rgb)[:, y0 - a: y1 - a, x0 - c: x1 - c])

    def fine_pieces(self, y0: int, y1: int, x0: int, x1: int):
        """What :class:`~pointseg.features.Scores` asks a fine source for: ``((r0, c0), responses)`` pieces."""
        yield (y0, x0), self.fine_box(y0, y1, x0, x1)


def _tile_stats(labels: np.ndarray, n_classes: int, background: int, preview_factor: int) -> dict:
    """Pixel counts, 8-connected regions per finding class with ids unique in the tile (and their areas),
    the border strips of labels and ids."""
    from scipy import ndimage

    ids = np.zeros(labels.shape, dtype=np.int64)
    regions = [0] * n_classes
    offset = 0
    for k in range(n_classes):
        if k == background:
            continue
        local, count = ndimage.label(labels == k, structure=np.ones((3, 3), dtype=bool))
        ids[local > 0] = local[local > 0] + offset
        regions[k] = int(count)
        offset += count
    # copies, not views: a view keeps the whole tile's labels and int64 ids alive (9 MB for a 1024-px
    # tile) for as long as the worker holds this result, i.e. until the image's last tile is done
    return {
        "pixels": np.bincount(labels.ravel(), minlength=n_classes).tolist(),
        "regions": regions,
        "n_ids": offset,
        "areas": np.bincount(ids.ravel(), minlength=offset + 1)[1:].tolist(),
        "top": (labels[0].copy(), ids[0].copy()), "bottom": (labels[-1].copy(), ids[-1].copy()),
        "left": (labels[:, 0].copy(), ids[:, 0].copy()), "right": (labels[:, -1].copy(), ids[:, -1].copy()),
        "preview": labels[::preview_factor, ::preview_factor].copy(),
    }


# ------------------------------------------------------------------------------------------ merge
def finish(key: ModelKey, job: TileJob, item: InputItem, output: str, ng_area, rule, cores, stats,
           fingerprint) -> dict:
    """Merge the tiles' counts, write the OME-Zarr metadata and the preview, move the labels into place."""
    from pointseg.decision import Decision
    from pointseg.outputs import label_png_bytes, summary_from_counts

    seg = model_for(key)
    n = len(seg.classes_)
    pixels = np.sum([s["pixels"] for s in stats], axis=0)
    merges, largest = merged_regions(job, cores, stats, n)
    regions = np.sum([s["regions"] for s in stats], axis=0) - merges
    decision = Decision(bool(largest > rule.threshold), float(largest), rule.threshold, [], rule)
    measures = {"height": job.shape[0], "width": job.shape[1],
                **summary_from_counts(pixels.tolist(), regions.tolist(), seg.classes_, ng_area, seg.background_,
                                      decision)}
    _write_ome_metadata(job, seg)
    label_name, preview_name = f"{item.stem}.ome.zarr", f"{item.stem}_preview.png"
    lazyio.write_bytes(lazyio.join(output, preview_name), label_png_bytes(_preview(job, cores, stats), seg.colors_))
    lazyio.move_tree(job.partial, lazyio.join(output, label_name))
    lazyio.remove_tree(job.work)
    return {"measures": measures, "outputs": [label_name, preview_name], "fingerprint": fingerprint,
            "seconds": time.time() - job.started}


def _grid_shape(job: TileJob, cores) -> tuple[int, int]:
    columns = len({c[2] for c in cores})
    return len(cores) // columns, columns


def merged_regions(job: TileJob, cores, stats, n_classes: int) -> tuple[np.ndarray, float]:
    """Per class, how many tile-local regions are parts of another across tile borders (8-connectivity),
    and the area of the largest region of the whole image (the ``largest_region`` image score)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, cols = _grid_shape(job, cores)
    offsets = np.cumsum([0] + [s["n_ids"] for s in stats])
    lab_of = np.zeros(offsets[-1] + 1, dtype=np.int64)
    edges = []

    def strip(index: int, side: str):
        labels, ids = stats[index][side]
        return np.asarray(labels), np.where(ids > 0, ids + offsets[index], 0)

    def connect(upper, lower):
        (la, ia), (lb, ib) = upper, lower
        for shift in (-1, 0, 1):
            a = slice(max(0, -shift), len(ia) - max(0, shift))
            b = slice(max(0, shift), len(ib) - max(0, -shift))
            same = (ia[a] > 0) & (ib[b] > 0) & (la[a] == lb[b])
            edges.append(np.stack([ia[a][same], ib[b][same]], axis=1))
            lab_of[ia[a][same]] = la[a][same]
            lab_of[ib[b][same]] = lb[b][same]

    for r in range(rows - 1):  # horizontal borders, full width (covers the corners' diagonals)
        above = [strip(r * cols + c, "bottom") for c in range(cols)]
        below = [strip((r + 1) * cols + c, "top") for c in range(cols)]
        connect(tuple(np.concatenate(x) for x in zip(*above)), tuple(np.concatenate(x) for x in zip(*below)))
    for c in range(cols - 1):  # vertical borders, full height
        left = [strip(r * cols + c, "right") for r in range(rows)]
        right = [strip(r * cols + c + 1, "left") for r in range(rows)]
        connect(tuple(np.concatenate(x) for x in zip(*left)), tuple(np.concatenate(x) for x in zip(*right)))
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)
    areas = np.concatenate([[0]] + [np.asarray(s["areas"], dtype=np.int64) for s in stats])  # by global id
    merges = np.zeros(n_classes, dtype=np.int64)
    largest = float(areas.max(initial=0))
    if len(pairs):
        nodes, inverse = np.unique(pairs, return_inverse=True)
        inverse = inverse.reshape(-1, 2)
        graph = coo_matrix((np.ones(len(inverse)), (inverse[:, 0], inverse[:, 1])), shape=(len(nodes),) * 2)
        _, component = connected_components(graph, directed=False)
        for k in range(n_classes):
            mine = lab_of[nodes] == k
            merges[k] = int(mine.sum()) - len(np.unique(component[mine]))
        largest = max(largest, float(np.bincount(component, weights=areas[nodes]).max()))
    return merges, largest


def _preview(job: TileJob, cores, stats) -> np.ndarray:
    f = job.preview_factor
    h, w = job.shape
    out = np.zeros((-(-h // f), -(-w // f)), dtype=np.uint8)
    for (y0, _, x0, _), s in zip(cores, stats):
        piece = s["preview"]
        out[y0 // f: y0 // f + piece.shape[0], x0 // f: x0 // f + piece.shape[1]] = piece
    return out


def _write_ome_metadata(job: TileJob, seg) -> None:
    """NGFF 0.4 label metadata: a multiscale pyramid (nearest-neighbour halving) with class colours."""
    from pointseg.annotations import parse_color

    datasets = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [float(1 << level)] * 2}]} for level in range(job.levels)]
    label_attrs = {
        "multiscales": [{"version": "0.4", "name": LABEL_NAME, "datasets": datasets,
                         "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                         "type": "nearest"}],
        "image-label": {"version": "0.4",
                        "colors": [{"label-value": k, "rgba": [*parse_color(c), 255]} for k, c in enumerate(seg.colors_)],
                        "properties": [{"label-value": k, "class": name} for k, name in enumerate(seg.classes_)]},
        "pointseg": {"source": job.location, "classes": seg.classes_},
    }
    for name, attrs in ((".zattrs", {"labels": [LABEL_NAME]}), ("labels/.zattrs", {"labels": [LABEL_NAME]}),
                        (f"labels/{LABEL_NAME}/.zattrs", label_attrs)):
        lazyio.write_bytes(lazyio.join(job.partial, name), json.dumps(attrs, indent=1).encode())


def read_labels(location: str, level: int = 0) -> np.ndarray:
    """The label image of a tiled prediction (``<stem>.ome.zarr``) at a pyramid level, as a numpy array."""
    import zarr

    root = zarr.open_group(store=lazyio.zarr_store(location), mode="r", zarr_format=2)
    return np.asarray(root["labels"][LABEL_NAME][str(level)][:])

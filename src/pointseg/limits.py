"""Every size limit pointseg enforces, in one place, each with an environment variable to change it.

A limit exists so that one bad or hostile input (a decompression bomb, a megabyte-deep JSON, a million
points, a brush a billion pixels wide) gets a one-line error instead of exhausting the memory or the disk of
the machine. The defaults suit a 2-core / 24 GB workstation; raise a limit with its variable when the input
is genuine (the error message names the variable). Values are read from the environment at each use, so a
server started with a variable set, or a test using ``monkeypatch.setenv``, sees it.

The README's "Limits" table lists the same entries (:data:`LIMITS`); keep the two in agreement.

Examples
--------
>>> from pointseg import limits
>>> limits.max_pixels() == limits.MAX_PIXELS.default   # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pointseg.errors import PointsegError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """One bound: its default, the variable that overrides it and the unit that variable is written in.

    ``scale`` converts the variable's unit to the value's (e.g. MiB → bytes), so a user writes
    ``POINTSEG_MAX_UPLOAD_MB=512`` rather than a byte count.
    """

    env: str
    default: int
    unit: str
    what: str
    scale: int = 1

    def value(self) -> int:
        """The limit in effect: the variable when set (in ``unit``), else the default."""
        text = os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise PointsegError(f"{self.env}={text!r} is not a non-negative number of {self.unit}; "
                                f"unset it to use the default ({self.default // self.scale:,} {self.unit})")
        return int(number * self.scale)


#: Pillow's own decompression-bomb threshold (2 x ``PIL.Image.MAX_IMAGE_PIXELS``): an 8-bit RGB image of
#: this size is ~0.5 GB decoded, several GB once converted to features; a 2-core / 24 GB machine survives it.
MAX_PIXELS = Limit("POINTSEG_MAX_PIXELS", 178_956_970, "pixels",
                   "pixels (width x height) of an image decoded whole")
MAX_UPLOAD_BYTES = Limit("POINTSEG_MAX_UPLOAD_MB", 256 * MiB, "MiB",
                         "bytes of one image upload to `pointseg serve`", scale=MiB)
MAX_JSON_FILE_BYTES = Limit("POINTSEG_MAX_JSON_MB", 64 * MiB, "MiB",
                            "bytes of an annotation JSON file", scale=MiB)
MAX_JSON_BODY_BYTES = Limit("POINTSEG_MAX_JSON_BODY_MB", 16 * MiB, "MiB",
                            "bytes of a JSON request body to `pointseg serve`", scale=MiB)
MAX_POINTS_PER_REQUEST = Limit("POINTSEG_MAX_POINTS_PER_REQUEST", 20_000, "points",
                               "points of one scribble or eraser stroke sent to `pointseg serve`")
MAX_POINTS_PER_FILE = Limit("POINTSEG_MAX_POINTS_PER_FILE", 200_000, "points",
                            "points (clicks plus scribble vertices) in one annotation file")
MAX_SCRIBBLE_WIDTH = Limit("POINTSEG_MAX_SCRIBBLE_WIDTH", 1000, "pixels", "width of one scribble's brush")
MAX_SCRIBBLE_SAMPLES = Limit("POINTSEG_MAX_SCRIBBLE_SAMPLES", 250_000, "samples",
                             "training samples one scribble rasterises to (about length x width / cell²)")
MAX_MODEL_FILE_BYTES = Limit("POINTSEG_MAX_MODEL_MB", 256 * MiB, "MiB", "bytes of a .pointseg model file",
                             scale=MiB)
DISK_CACHE_BYTES = Limit("POINTSEG_FEATURE_CACHE_MB", 10 * 1024 * MiB, "MiB",
                         "bytes of float16 feature maps kept in a project's disk cache (oldest removed first)",
                         scale=MiB)
#: the app's overlay of a region (``overlay.png?box=…``): output pixels of one answer, i.e. the box times
#: its scale squared (a 4K screen is 8.3 MP; tiles of the background refinement are 0.26 MP)
MAX_REGION_PIXELS = Limit("POINTSEG_MAX_REGION_PIXELS", 16_777_216, "pixels",
                          "output pixels of one overlay region the app is asked for")

#: not an input bound but a memory threshold (so not in the README's Limits table): images above this many
#: pixels page their deep feature map from a memory-mapped float16 file instead of holding it in memory,
#: so resident memory does not grow with the image (:func:`pointseg.features.paged_array`)
PAGED_DEEP_ABOVE_PIXELS = Limit("POINTSEG_PAGED_DEEP_ABOVE_PIXELS", 8_000_000, "pixels",
                                "pixels of an image above which its deep feature map is paged from disk")

#: every limit, in the order of the README table
LIMITS = (MAX_PIXELS, MAX_UPLOAD_BYTES, MAX_JSON_FILE_BYTES, MAX_JSON_BODY_BYTES, MAX_POINTS_PER_REQUEST,
          MAX_POINTS_PER_FILE, MAX_SCRIBBLE_WIDTH, MAX_SCRIBBLE_SAMPLES, MAX_MODEL_FILE_BYTES, DISK_CACHE_BYTES,
          MAX_REGION_PIXELS)


def max_pixels() -> int:
    return MAX_PIXELS.value()


def max_upload_bytes() -> int:
    return MAX_UPLOAD_BYTES.value()


def max_json_file_bytes() -> int:
    return MAX_JSON_FILE_BYTES.value()


def max_json_body_bytes() -> int:
    return MAX_JSON_BODY_BYTES.value()


def max_points_per_request() -> int:
    return MAX_POINTS_PER_REQUEST.value()


def max_points_per_file() -> int:
    return MAX_POINTS_PER_FILE.value()


def max_scribble_width() -> int:
    return MAX_SCRIBBLE_WIDTH.value()


def max_scribble_samples() -> int:
    return MAX_SCRIBBLE_SAMPLES.value()


def max_model_file_bytes() -> int:
    return MAX_MODEL_FILE_BYTES.value()


def disk_cache_bytes() -> int:
    return DISK_CACHE_BYTES.value()


def max_region_pixels() -> int:
    return MAX_REGION_PIXELS.value()


def paged_deep_above_pixels() -> int:
    return PAGED_DEEP_ABOVE_PIXELS.value()


def read_bounded(path: Path, limit: Limit, what: str, error: type[PointsegError] = PointsegError) -> bytes:
    """The bytes of ``path``, refused with ``error`` before reading when the file is larger than ``limit``.

    Raises ``OSError`` as reading does (the caller knows what the file is for and says so).
    """
    size, bound = path.stat().st_size, limit.value()
    if size > bound:
        raise error(f"{path.name} is {size:,} bytes, more than {what} may have ({bound:,}); check the path, "
                    f"or set {limit.env} to allow it")
    return path.read_bytes()


def markdown_table() -> str:
    """The README's Limits table, generated from :data:`LIMITS` (a test keeps the README equal to it)."""
    rows = ["| what is bounded | default | set with |", "|---|---|---|"]
    for limit in LIMITS:
        rows.append(f"| {limit.what} | {limit.default // limit.scale:,} {limit.unit} | `{limit.env}` |")
    return "\n".join(rows)

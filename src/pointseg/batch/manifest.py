"""The run manifest in OUT: what was done, with which model and options, so ``--resume`` skips it.

``OUT/pointseg-manifest.jsonl`` starts with a header line (model sha256, options, pointseg version); each
finished image adds one line: its location, name, fingerprint (size, modification time and content digest:
:func:`fingerprint`), outputs and its summary row. Lines are only appended after an image's outputs are all
in place (each written atomically), so a line means "complete". A run killed mid-write leaves at most one
torn last line, which is ignored. Stores without append (object stores) get the whole file rewritten,
atomically, every few seconds and at the end.

``--resume`` trusts the content digest, never the size and modification time alone (a file rewritten with
other pixels but the same size and mtime is redone; a file only touched is skipped), see :func:`unchanged`.
"""

from __future__ import annotations

import hashlib
import json
import time

from pointseg import lazyio
from pointseg._version import __version__
from pointseg.errors import PointsegError

MANIFEST_NAME = "pointseg-manifest.jsonl"
#: 2: entries carry a content digest (``digest`` says which kind); entries without one are redone
MANIFEST_VERSION = 2
#: files up to this size are hashed whole (sha256 of every byte, streamed); larger ones (BigTIFF, huge
#: slides read lazily) get the sampled digest of :func:`fingerprint`
HASH_WHOLE_BELOW = 256 * 2**20
#: bytes hashed from each end of a larger file
SAMPLE_BYTES = 4 * 2**20
_BLOCK = 2**20
#: zarr metadata documents (hashed by content; chunks only by name, size and modification time)
_ZARR_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


# ---------------------------------------------------------------------------------------------- fingerprints
def fingerprint(location: str, data: bytes | None = None) -> dict:
    """What identifies an input's content: ``{"size", "mtime", "sha256", "digest"}``.

    ``digest`` says what ``sha256`` covers:

    * ``"content"``: every byte of the file (streamed, or ``data`` when the caller has read the file already)
      — every file up to :data:`HASH_WHOLE_BELOW` (256 MiB), i.e. every PNG/JPEG/TIFF a batch reads whole;
    * ``"sampled"``: size, modification time and the first and last :data:`SAMPLE_BYTES` (4 MiB) of a larger
      file (a BigTIFF slide read tile by tile: hashing all of it would cost another full read of the slide);
    * ``"zarr-listing"``: a zarr / OME-Zarr folder's metadata documents by content plus every chunk's name,
      size and modification time (reading every chunk would cost as much as the prediction).
    """
    if location.rstrip("/").lower().endswith(lazyio.ZARR_SUFFIXES):
        return {**lazyio.stat(location), "sha256": _zarr_digest(location), "digest": "zarr-listing"}
    info = lazyio.stat(location)
    if info["size"] <= HASH_WHOLE_BELOW:
        digest = hashlib.sha256(data) if data is not None else _stream_hash(location)
        return {**info, "sha256": digest.hexdigest(), "digest": "content"}
    return {**info, "sha256": _sampled_digest(location, info, data), "digest": "sampled"}


def unchanged(location: str, before: dict) -> bool:
    """Whether the input still has the content recorded in ``before`` (an entry's fingerprint)."""
    if not before.get("sha256") or not before.get("digest"):
        return False  # an entry of an older manifest: only size and mtime, which prove nothing
    try:
        if before["digest"] != "zarr-listing" and lazyio.stat(location)["size"] != before.get("size"):
            return False  # cheap and certain: no need to read it
        return fingerprint(location)["sha256"] == before["sha256"]
    except (OSError, ValueError, PointsegError):
        return False


def _open(location: str):
    if lazyio.is_local(location):
        return open(lazyio.local_path(location), "rb")
    fs, path = lazyio.filesystem(location)
    return fs.open(path, "rb")


def _stream_hash(location: str):
    digest = hashlib.sha256()
    with _open(location) as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest


def _sampled_digest(location: str, info: dict, data: bytes | None) -> str:
    digest = hashlib.sha256(f"{info['size']}\0{info['mtime']}\n".encode())
    if data is not None:
        digest.update(data[:SAMPLE_BYTES])
        digest.update(data[-SAMPLE_BYTES:])
        return digest.hexdigest()
    with _open(location) as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        handle.seek(max(0, info["size"] - SAMPLE_BYTES))
        digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _zarr_digest(location: str) -> str:
    digest = hashlib.sha256()
    for name, size, mtime in _zarr_listing(location):
        digest.update(f"{name}\0{size}\0{mtime}\n".encode())
        if name.rsplit("/", 1)[-1] in _ZARR_METADATA:
            digest.update(lazyio.read_bytes(lazyio.join(location, name)))
    return digest.hexdigest()


def _zarr_listing(location: str) -> list[tuple[str, int, float | None]]:
    if lazyio.is_local(location):
        root = lazyio.local_path(location)
        out = []
        for p in root.rglob("*"):
            if p.is_file():
                info = p.stat()
                out.append((p.relative_to(root).as_posix(), int(info.st_size), round(float(info.st_mtime), 3)))
        return sorted(out)
    fs, path = lazyio.filesystem(location)
    out = []
    for key, value in fs.find(path, detail=True).items():
        mtime = value.get("mtime") or value.get("LastModified") or value.get("last_modified")
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime
        out.append((key[len(path):].lstrip("/"), int(value.get("size") or 0), mtime))
    return sorted(out)


class Manifest:
    """Reader of a previous run's entries and writer of this run's."""

    def __init__(self, output: str, model_sha256: str, options: dict):
        self.location = lazyio.join(output, MANIFEST_NAME)
        self.header = {"manifest": MANIFEST_VERSION, "model_sha256": model_sha256, "options": options,
                       "pointseg_version": __version__}
        self._lines: list[str] = []
        self._handle = None
        self._last_flush = 0.0

    # ------------------------------------------------------------------ reading
    def previous_entries(self) -> dict[str, dict]:
        """Entries of an earlier run with the same model and options, by input location (else empty)."""
        if not lazyio.exists(self.location):
            return {}
        lines = lazyio.read_bytes(self.location).decode("utf-8", errors="replace").splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run
        if not records:
            return {}
        head = records[0]
        if head.get("model_sha256") != self.header["model_sha256"] or head.get("options") != self.header["options"]:
            return {}
        return {r["input"]: r for r in records[1:] if "input" in r}

    # ------------------------------------------------------------------ writing
    def start(self, kept: list[dict]) -> None:
        """Begin this run's manifest with the header and the entries carried over from the previous run."""
        self._lines = [json.dumps(self.header)] + [json.dumps(e) for e in kept]
        lazyio.write_bytes(self.location, ("\n".join(self._lines) + "\n").encode())
        if lazyio.is_local(self.location):
            self._handle = open(lazyio.local_path(self.location), "a", encoding="utf-8")

    def add(self, entry: dict) -> None:
        line = json.dumps(entry)
        self._lines.append(line)
        if self._handle is not None:
            self._handle.write(line + "\n")
            self._handle.flush()
        elif time.monotonic() - self._last_flush > 5.0:
            self._rewrite()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self._lines:
            self._rewrite()

    def _rewrite(self) -> None:
        lazyio.write_bytes(self.location, ("\n".join(self._lines) + "\n").encode())
        self._last_flush = time.monotonic()

"""The run manifest in OUT: what was done, with which model and options, so ``--resume`` skips it.

``OUT/pointseg-manifest.jsonl`` starts with a header line (model sha256, options, pointseg version); each
finished image adds one line: its location, name, size and modification time, content hash, outputs and
its summary row. Lines are only appended after an image's outputs are all in place (each written
atomically), so a line means "complete". A run killed mid-write leaves at most one torn last line, which
is ignored. Stores without append (object stores) get the whole file rewritten, atomically, every few
seconds and at the end.
"""

from __future__ import annotations

import json
import time

from pointseg import lazyio
from pointseg._version import __version__

MANIFEST_NAME = "pointseg-manifest.jsonl"
MANIFEST_VERSION = 1


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

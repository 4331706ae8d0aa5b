"""What a batch's INPUTS arguments mean: files, folders, globs, ``@list.txt`` and fsspec URLs → image items.

Each item gets a *name*: its path relative to the argument it came from (a folder argument keeps the
folder's own name in front when several arguments are given), so ``d1/x.jpg``, ``d1/x.png`` and ``d2/x.jpg``
land in different output files. Names are unique and depend only on the list of inputs, never on the
order in which workers finish, so every mode writes the same files and the same summary.csv.
"""

from __future__ import annotations

import glob as globlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pointseg import lazyio
from pointseg.errors import PointsegError
from pointseg.imageio import IMAGE_SUFFIXES

_MAGIC = ("*", "?", "[")


@dataclass(frozen=True)
class InputItem:
    """One image of a batch: where it is, the name it is reported under, and the stem of its outputs."""

    location: str
    name: str  # relative path, e.g. "d1/x.jpg"
    stem: str  # output path without suffix, relative to OUT, e.g. "d1/x"


def is_image_name(name: str) -> bool:
    lower = name.rstrip("/").lower()
    return lower.endswith(IMAGE_SUFFIXES) or lower.endswith(lazyio.ZARR_SUFFIXES)


def expand_inputs(arguments, recursive: bool = False) -> list[InputItem]:
    """Resolve INPUTS arguments into image items in a deterministic order (arguments in order, each sorted)."""
    found: list[tuple[str, str, str]] = []  # (location, relative name, argument label)
    arguments = [str(a) for a in arguments]
    for argument in arguments:
        if argument.startswith("@"):
            for line in _read_list(argument[1:]):
                found.extend(_expand_one(line, recursive))
        else:
            found.extend(_expand_one(argument, recursive))
    if not found:
        raise PointsegError(
            "no images found in the given inputs (supported: png, jpg, bmp, tif, zarr / OME-Zarr folders; "
            "use --recursive for sub-folders)"
        )
    several = len(arguments) > 1 or any(a.startswith("@") for a in arguments)
    names = [f"{label}/{rel}" if several and label else rel for _, rel, label in found]
    return [InputItem(loc, name, stem) for (loc, _, _), name, stem in zip(found, names, unique_stems(names))]


def unique_stems(names: list[str]) -> list[str]:
    """Output stems for names: ``x.jpg`` → ``x``; where names with different suffixes share a stem (``x.jpg``,
    ``x.png``) they keep their suffix (``x_jpg``, ``x_png``); any clash left (the same name twice) gets ``-2``,
    ``-3`` … in input order."""
    def plain(name: str) -> str:
        p = PurePosixPath(name.rstrip("/"))
        base = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
        return str(p.with_name(base))

    stems = [plain(n) for n in names]
    suffixes: dict[str, set[str]] = {}
    for s, n in zip(stems, names):
        suffixes.setdefault(s.casefold(), set()).add(PurePosixPath(n.rstrip("/")).suffix.lower())
    stems = [
        s + "_" + PurePosixPath(n.rstrip("/")).suffix.lstrip(".").lower() if len(suffixes[s.casefold()]) > 1 else s
        for s, n in zip(stems, names)
    ]
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        key = s.casefold()
        seen[key] = seen.get(key, 0) + 1
        out.append(s if seen[key] == 1 else f"{s}-{seen[key]}")
    return out


def _read_list(location: str) -> list[str]:
    try:
        text = lazyio.read_bytes(location).decode("utf-8")
    except (PointsegError, UnicodeDecodeError) as exc:
        raise PointsegError(f"cannot read the input list {location}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _expand_one(argument: str, recursive: bool):
    """``(location, name relative to the argument, label of the argument)`` for one argument."""
    if lazyio.is_local(argument):
        yield from _expand_local(str(lazyio.local_path(argument)), recursive)
    else:
        yield from _expand_url(argument, recursive)


def _expand_local(argument: str, recursive: bool):
    path = Path(argument)
    if any(m in argument for m in _MAGIC):
        root = _glob_root(argument)
        matches = sorted(globlib.glob(argument, recursive=recursive or "**" in argument))
        for match in matches:
            if is_image_name(match) and (Path(match).is_file() or match.lower().rstrip("/").endswith(".zarr")):
                yield match, Path(match).relative_to(root).as_posix(), ""
        return
    if path.is_dir() and not argument.rstrip("/").lower().endswith(".zarr"):
        for item in _walk_local(path, recursive):
            yield str(item), item.relative_to(path).as_posix(), path.resolve().name
        return
    if path.exists():
        yield str(path), path.name, ""
        return
    raise PointsegError(f"no such file or folder: {argument}")


def _walk_local(folder: Path, recursive: bool):
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if entry.name.lower().endswith(lazyio.ZARR_SUFFIXES):
                yield entry
            elif recursive and not entry.name.startswith("."):
                yield from _walk_local(entry, recursive)
        elif entry.is_file() and is_image_name(entry.name):
            yield entry


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(m in part for m in _MAGIC):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand_url(argument: str, recursive: bool):
    fs, path = lazyio.filesystem(argument)
    proto = lazyio.protocol(argument)

    def url(p: str) -> str:
        return p if "://" in p else f"{proto}://{p.lstrip('/') if proto == 'memory' else p}"

    if any(m in path for m in _MAGIC):
        root = str(_glob_root(path))
        for match in sorted(fs.glob(path)):
            if is_image_name(match):
                yield url(match), str(PurePosixPath(match).relative_to(root)), ""
        return
    if not fs.exists(path):
        raise PointsegError(f"no such file or folder: {argument}")
    if fs.isdir(path) and not path.rstrip("/").lower().endswith(".zarr"):
        base = path.rstrip("/")
        for item in _walk_url(fs, base, recursive):
            yield url(item), item[len(base) + 1:], PurePosixPath(base).name
        return
    yield url(path), PurePosixPath(path).name, ""


def _walk_url(fs, folder: str, recursive: bool):
    for entry in sorted(fs.ls(folder, detail=True), key=lambda e: e["name"]):
        name = entry["name"].rstrip("/")
        base = PurePosixPath(name).name
        if entry["type"] == "directory":
            if base.lower().endswith(lazyio.ZARR_SUFFIXES):
                yield name
            elif recursive and not base.startswith("."):
                yield from _walk_url(fs, name, recursive)
        elif is_image_name(base):
            yield name

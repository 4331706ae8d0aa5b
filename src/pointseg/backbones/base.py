"""What every backbone shares: fusing several strides into one stride-4 map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiScaleTrunk(nn.Module):
    """A trunk whose ``stages`` produce maps at strides 4, 8, 16 (and 32 for the ``_s32`` backbones).

    The coarser maps are bilinearly interpolated to the stride-4 grid and concatenated
    with it, so every position carries fine detail and wider context in one vector (the method's step 2).
    Subclasses implement :meth:`stage_outputs`.
    """

    stride = 4

    #: index of the first block of a "context tail" (a stride-32 stage), or None. A tail's input, the
    #: stride-16 map, is small, so it can run over a whole image even when the image is tiled: tiles then
    #: need only the margin of the stages before it (see FeatureExtractor.iter_tiles), not the tail's far
    #: larger receptive field. Trunks with a tail implement forward_base and forward_context.
    context_start: int | None = None

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.stage_outputs(x))

    @staticmethod
    def fuse(maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        fused = [maps[0]] + [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return torch.cat(fused, dim=1)

    def forward_base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """The fused map of every stage before the context tail, and the tail's input."""
        raise NotImplementedError

    def forward_context(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The context tail: stride-16 map → stride-32 map."""
        raise NotImplementedError

    def forward_stride16(self, x: torch.Tensor) -> torch.Tensor:
        """The tail's input alone (``forward_base(x)[1]``), for the enlarged copy the context stage sees
        (``context_upscale``), whose fused map nobody reads; subclasses skip the fusion."""
        return self.forward_base(x)[1]


def load_used_keys(module: nn.Module, state_dict: dict, source: str) -> None:
    """Load exactly the parameters ``module`` uses; extra keys (layer4, fc, heads) are ignored.

    Missing keys or wrong shapes are an error: a silently half-loaded backbone gives plausible-looking
    but meaningless segmentations.
    """
    from pointseg.errors import WeightsNotFoundError

    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    wanted = module.state_dict()
    missing = [k for k in wanted if k not in state_dict]
    if missing:
        raise WeightsNotFoundError(
            f"weights file {source} lacks {len(missing)} parameters this backbone needs "
            f"(first: {missing[0]}); is it the right file for this backbone?"
        )
    for key, value in wanted.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise WeightsNotFoundError(
                f"weights file {source} has {key} of shape {tuple(state_dict[key].shape)}, "
                f"expected {tuple(value.shape)}; is it the right file for this backbone?"
            )
    module.load_state_dict({k: state_dict[k] for k in wanted}, strict=True)

"""A backbone trunk run by OpenVINO or onnxruntime, with the torch trunk's interface.

:class:`EngineTrunk` stands in for a :class:`~pointseg.backbones.base.MultiScaleTrunk` inside
:class:`~pointseg.features.FeatureExtractor`: ``trunk(x)``, ``forward_base(x)``, ``forward_context(x)``
take and return torch tensors, so tiling, the stride-32 context pass and caching stay one code path.

The graphs hold the convolutions only: the per-stage maps come out unfused and are fused (bilinear
upsampling to stride 4 and concatenation) by the torch trunk's own ``fuse``, which keeps every size
dynamic in the graph and the fusion identical to the reference. A trunk with a stride-32 context tail
gets two graphs, the stages before the tail (plus the tail's input) and the tail.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from pointseg.backbones.base import MultiScaleTrunk
from pointseg.engines.convert import cached_export
from pointseg.engines.sessions import open_session

_DYNAMIC = {0: "n", 2: "h", 3: "w"}


@contextmanager
def _unfused(trunk: MultiScaleTrunk):
    """Make ``trunk.fuse`` return the list of stage maps, so a traced graph ends before the fusion."""
    trunk.fuse = lambda maps: tuple(maps)
    try:
        yield trunk
    finally:
        del trunk.fuse


class _Stages(nn.Module):
    """trunk → its stage maps (all of them, or those before the context tail plus the tail's input)."""

    def __init__(self, trunk: MultiScaleTrunk, base: bool):
        super().__init__()
        self.trunk, self.base = trunk, base

    def forward(self, x):
        with _unfused(self.trunk) as trunk:
            if self.base:
                maps, x16 = trunk.forward_base(x)
                return (*maps, x16)
            return trunk.forward(x)


class _Context(nn.Module):
    def __init__(self, trunk: MultiScaleTrunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, x16):
        return self.trunk.forward_context(x16)


class EngineTrunk:
    """The trunk of ``spec`` (weights ``sha256``) compiled for ``engine`` at ``precision``."""

    def __init__(self, trunk: MultiScaleTrunk, spec, sha256: str, engine: str, precision: str):
        from pointseg.engines import engine_precisions
        from pointseg.errors import PointsegError

        if precision not in engine_precisions(engine):
            raise PointsegError(f"engine {engine!r} computes in {' or '.join(engine_precisions(engine))} on "
                                f"this CPU, not {precision!r}; choose another precision or engine")
        self.trunk, self.spec, self.sha256 = trunk, spec, sha256
        self.engine, self.precision = engine, precision
        self.context_start = getattr(trunk, "context_start", None)
        self._sessions: dict = {}

    # nn.Module-like no-ops, so FeatureExtractor can treat both kinds of trunk alike
    def to(self, *args, **kwargs) -> "EngineTrunk":
        return self

    def eval(self) -> "EngineTrunk":
        return self

    def release_memory(self) -> None:
        """Hand the runtimes' intermediate buffers back (after a large image: see ``Session.release_memory``)."""
        for session in self._sessions.values():
            session.release_memory()

    def _session(self, part: str):
        if part not in self._sessions:
            self._sessions[part] = open_session(self._graph(part), self.engine, self.precision)
        return self._sessions[part]

    def _graph(self, part: str):
        name = f"{self.spec.name}-{self.sha256[:16]}-{part}"
        m = self.spec.pad_multiple
        if part == "context":
            c16 = self._stage16_channels()
            example, check = (torch.randn(1, c16, 4, 6),), (torch.randn(1, c16, 6, 4),)
            return cached_export(name, lambda: _Context(self.trunk), example, ["x16"], ["context"],
                                 {"x16": _DYNAMIC, "context": _DYNAMIC}, check)
        example, check = (torch.randn(1, 3, 4 * m, 6 * m),), (torch.randn(1, 3, 6 * m, 4 * m),)
        base = part == "base"
        outputs = self._stage_names(base)
        return cached_export(name, lambda: _Stages(self.trunk, base), example, ["x"], outputs,
                             {"x": _DYNAMIC, **{o: _DYNAMIC for o in outputs}}, check)

    def _stage_names(self, base: bool) -> list[str]:
        with torch.no_grad(), _unfused(self.trunk) as trunk:
            x = torch.zeros(1, 3, 64, 64)
            n = len(trunk.forward_base(x)[0]) if base else len(trunk.forward(x))
        return [f"stage{i}" for i in range(n)] + (["x16"] if base else [])

    def _stage16_channels(self) -> int:
        with torch.no_grad():
            return int(self.trunk.forward_base(torch.zeros(1, 3, 64, 64))[1].shape[1])

    def _run(self, part: str, x: torch.Tensor) -> list[torch.Tensor]:
        array = x.detach().float().contiguous().cpu().numpy()
        name = self._session(part).input_names[0]
        return [torch.from_numpy(np.asarray(o)) for o in self._session(part).run({name: array})]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.context_start is None:
            return MultiScaleTrunk.fuse(self._run("stages", x))
        *maps, x16 = self._run("base", x)
        return MultiScaleTrunk.fuse(maps + [self.forward_context(x16)])

    def forward_base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *maps, x16 = self._run("base", x)
        return MultiScaleTrunk.fuse(maps), x16

    def forward_stride16(self, x: torch.Tensor) -> torch.Tensor:
        """The base graph's tail input without the torch-side fusion of its stage maps."""
        return self._run("base", x)[-1]

    def forward_context(self, x16: torch.Tensor) -> torch.Tensor:
        return self._run("context", x16)[0]

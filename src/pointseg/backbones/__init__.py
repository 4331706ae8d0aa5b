"""Pretrained CNN trunks that turn an image into one multi-scale feature map at stride 4.

Each backbone family lives in its own module with torchvision- or lukemelas-compatible parameter names,
so official weight files load unchanged; :mod:`~pointseg.backbones.registry` lists them by name and
:mod:`~pointseg.backbones.weights` finds their weight files.
"""

from pointseg.backbones.registry import BackboneSpec, available_backbones, build_backbone, get_spec

__all__ = ["BackboneSpec", "available_backbones", "build_backbone", "get_spec"]

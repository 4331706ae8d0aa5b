"""Named configurations. ``seed`` is frozen: it is the reference every improvement is measured against."""

from __future__ import annotations

from pointseg.errors import PointsegError

DEFAULT_BACKBONE = "efficientnet_lite0_s32"
DEFAULT_FEATURES = "hybrid"
DEFAULT_SMOOTHING = 1.5
#: the context factor rule of the default (``Segmenter(context_upscale=...)``; see the "default" preset)
DEFAULT_CONTEXT_UPSCALE = "size"

PRESETS: dict[str, dict] = {
    # The method exactly as first described: ResNet-18 layer1+layer2+layer3 at stride 4, logistic regression.
    # Never change these values; add a new preset instead.
    # context_upscale=1 names what it always had (the constructor's default before "size"); resnet18 has no
    # context stage, so the rule would give 1 too, but the reference should not depend on a rule.
    "seed": {"backbone": "resnet18", "classifier": "logistic", "C": 0.1, "class_weight": "balanced",
             "features": "deep", "smoothing": 0.0, "context_upscale": 1},
    # What pointseg uses when nothing is specified: EfficientNet-Lite0 features from strides 4/8/16/32 on the
    # stride-4 grid plus full-resolution filters, scores smoothed with σ = 1.5 px. Chosen with the evaluation
    # harness (BENCHMARKS.md): the filters keep thin structures, the stride-32 context rejects look-alikes on
    # unseen images and lets a click fix a whole region; about 11 % more extraction time than without it.
    # context_upscale="size": on training images smaller than the context stage's receptive field (258 px)
    # that stage sees them x4 (NEU-Seg transfer 0.130 -> 0.160, magnetic tiles 0.134 -> 0.183, six seeds;
    # larger images get the native features exactly); extraction of such small images costs several times
    # more (BENCHMARKS.md, "context_upscale="size" made the default").
    "default": {"backbone": DEFAULT_BACKBONE, "classifier": "logistic", "features": DEFAULT_FEATURES,
                "smoothing": DEFAULT_SMOOTHING, "context_upscale": DEFAULT_CONTEXT_UPSCALE},
    # The default plus a second, auto-context stage (pointseg.autocontext) for thin structures (cracks,
    # membranes): +0.03 crack IoU on CrackForest under 20 corrective clicks (0.53, six seeds); beyond 20 clicks
    # per image its second stage fades into the first (level with the default at 40 clicks, 0.53, where it
    # was 0.48 unfaded; scribble strokes count one click each, but dense spread points get about the linear head), loses on blob-like defects, and a
    # refit + 1 MP prediction costs several times the default's (BENCHMARKS.md, "Heads", "The thin preset
    # under more clicks"): opt-in, `--preset thin`.
    "thin": {"backbone": DEFAULT_BACKBONE, "classifier": "logistic", "features": DEFAULT_FEATURES,
             "smoothing": DEFAULT_SMOOTHING, "autocontext": True, "context_upscale": DEFAULT_CONTEXT_UPSCALE},
}


def preset_params(name: str) -> dict:
    if name not in PRESETS:
        raise PointsegError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])

"""The harness driving the real core: Segmenter methods, the shared feature cache and the CLI entry point."""
import json

import pytest
from eval_helpers import make_dataset
from typer.testing import CliRunner

from pointseg import FeatureCache
from pointseg.errors import PointsegError
from pointseg.evaluation.datasets import load_dataset
from pointseg.evaluation.methods import build_method, parse_method_spec
from pointseg.evaluation.runner import EvalConfig, evaluate
from pointseg.presets import DEFAULT_BACKBONE


def test_deep_methods_learn_the_task_and_share_one_feature_computation_per_image(tmp_path):
    synth = load_dataset(make_dataset(tmp_path / "big", size=(96, 128), rect=(40, 48), ignore_band=False))
    cache = FeatureCache(max_bytes=200_000_000)
    # the forest gets Lite0's stride-4/8/16 map: on a 96x128 image with three clicks, a forest over the default's
    # 368 channels (half of them stride-32 context, which on so small an image mostly sees padding) splits on noise
    specs = ("default", "default:C=1.0@C1", "efficientnet_lite0-rf@deep-rf")
    methods = [build_method(s, synth.classes, cache=cache) for s in specs]
    extractors = {m.segmenter.extractor.id for m in methods}     # default and C1 share one; the forest's differs
    assert len(extractors) == (2 if methods[0].segmenter.features_ != "deep" else 1)
    cfg = EvalConfig(seeds=(0, 1), train_images=2, test=2, clicks=(3,), budget=3, transfer_at=(3,))
    res = evaluate(synth, methods, cfg)
    used = {s for sp in res["splits"].values() for s in sp["train"] + sp["test"]}
    # three methods x two seeds x two protocols with retraining after every click, yet each image's features
    # were computed once per feature extractor: every other request was a cache hit
    assert cache.misses == len(used) * len(extractors)
    assert cache.hits > len(used)
    for method in ("default", "C1", "deep-rf"):
        st = res["summary"]["random"][method]["interactive"]["3"]["miou"]
        assert st["mean"] > 0.8            # a trivial task; what is lost is the stride-4 blur at the edges


def test_method_specs_and_errors():
    s = parse_method_spec("resnet18-rf:tile_size=512@r")
    assert (s.base, s.options, s.name) == ("resnet18-rf", {"tile_size": 512}, "r")
    with pytest.raises(PointsegError, match="unknown backbone"):
        build_method("nonsense", ["a", "b"])
    with pytest.raises(PointsegError, match="seed preset is fixed"):
        build_method("seed:C=3", ["a", "b"])
    rf = build_method("skimage-rf:class_weight=balanced,n_estimators=10@rf10", ["a", "b"])
    assert rf.name == "rf10" and rf.describe()["forest"]["n_estimators"] == 10
    with pytest.raises(PointsegError, match="not a RandomForestClassifier option"):
        build_method("skimage-rf:C=1", ["a", "b"])
    with pytest.raises(PointsegError, match="KEY=VALUE"):
        parse_method_spec("default:C")


def test_pointseg_evaluate_is_registered_in_the_cli(synth_dir, tmp_path):
    from pointseg.cli import app

    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["evaluate", str(synth_dir), "-m", "default", "--protocol", "corrective",
                                 "--seeds", "0", "--train-images", "1", "--test", "1", "--budget", "3",
                                 "--json", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["methods"]["default"]["backbone"] == DEFAULT_BACKBONE
    assert [c["clicks"] for c in data["runs"][0]["curve"]] == [2, 3]

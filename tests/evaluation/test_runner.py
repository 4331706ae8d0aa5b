import json

import numpy as np
import pytest

from eval_helpers import ConstantMethod, NearestMeanMethod, OracleMethod, make_dataset
from pointseg.errors import PointsegError
from pointseg.evaluation.anchors import SkimageRF
from pointseg.evaluation.datasets import load_dataset
from pointseg.evaluation.runner import EvalConfig, evaluate, progress_units

FAST = dict(seeds=(0,), train_images=2, test=2, clicks=(1, 3), budget=6, transfer_at=None)


def test_perfect_predictor_gives_iou_one_and_minimal_noc(synth):
    oracle = OracleMethod(synth)
    res = evaluate(synth, [oracle], EvalConfig(**FAST))
    random_run, corr = res["runs"]
    for p in random_run["points"]:
        for split in ("interactive", "transfer"):
            assert p[split]["miou"] == 1.0 and p[split]["fg_iou"] == 1.0
    for c in corr["curve"]:
        assert c["interactive"]["miou"] == 1.0 and c["transfer"]["miou"] == 1.0
    # one click per class present and nothing left to correct: NoC is the initial click count (2 classes)
    assert corr["noc"] == {"80": 2.0, "85": 2.0, "90": 2.0}
    assert all(c["total_clicks"] == 4 for c in corr["curve"])
    assert res["summary"]["corrective"]["oracle"]["noc"]["85"]["mean"] == 2.0


def test_useless_predictor_gets_budget_noc_and_clicks_on_the_missed_class(synth):
    const = ConstantMethod()
    res = evaluate(synth, [const], EvalConfig(**{**FAST, "protocols": ("corrective",)}))
    corr = res["runs"][0]
    assert corr["noc"]["80"] == 6.0
    assert corr["curve"][-1]["interactive"]["fg_iou"] == 0.0
    final = const.fits[-1]
    assert [len(p) for p in final] == [6, 6]                        # budget reached on both images
    for stem, p in zip(res["splits"]["0"]["train"], final):
        mask = synth.load_mask(stem)
        extra = p[2:]                                                # the corrective clicks
        assert (extra[:, 2] == 1).all()                              # the constant-0 error is all defect
        assert (mask[extra[:, 1], extra[:, 0]] == 1).all()           # labelled with their true class
        assert len({(x, y) for x, y, _ in p}) == len(p)              # never the same pixel twice


def test_corrective_clicks_fix_errors_and_retrain_after_each(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "n", noise=25.0, ignore_band=False))
    res = evaluate(ds, [NearestMeanMethod()], EvalConfig(**{**FAST, "protocols": ("corrective",), "budget": 8}))
    run = res["runs"][0]
    curve = run["curve"]
    assert [c["clicks"] for c in curve] == list(range(2, 9))
    assert curve[-1]["interactive"]["miou"] > 0.8
    # every click is a retraining: fits = 1 initial + one per added click
    added = curve[-1]["total_clicks"] - curve[0]["total_clicks"]
    assert res["timings"]["nearest-mean"]["fit_calls"] == 1 + added


def test_same_seed_gives_identical_results_and_other_seeds_differ(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "n", n=8, noise=30.0, ignore_band=False))
    cfg = EvalConfig(seeds=(1,), train_images=2, test=3, clicks=(2, 4), budget=4, transfer_at=None)
    a = evaluate(ds, [SkimageRF(ds.classes, forest={"n_jobs": 1})], cfg)
    b = evaluate(ds, [SkimageRF(ds.classes, forest={"n_jobs": 1})], cfg)
    assert json.dumps(a["runs"]) == json.dumps(b["runs"])
    c = evaluate(ds, [SkimageRF(ds.classes, forest={"n_jobs": 1})], EvalConfig(**{**cfg.__dict__, "seeds": (2,)}))
    assert json.dumps(a["runs"]) != json.dumps(c["runs"])


def test_methods_see_the_same_clicks(synth):
    a, b = OracleMethod(synth, "a"), ConstantMethod("b")
    evaluate(synth, [a, b], EvalConfig(**{**FAST, "protocols": ("random",)}))
    for pa, pb in zip(a.fits, b.fits):
        assert all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_skimage_anchor_learns_the_synthetic_task(synth):
    res = evaluate(synth, [SkimageRF(synth.classes, forest={"n_jobs": 1})], EvalConfig(**{**FAST, "protocols": ("random",)}))
    last = res["runs"][0]["points"][-1]
    assert last["interactive"]["miou"] > 0.9 and last["transfer"]["miou"] > 0.9


def test_summary_has_mean_and_spread_over_seeds(synth):
    res = evaluate(synth, [OracleMethod(synth)], EvalConfig(**{**FAST, "seeds": (0, 1, 2), "protocols": ("random",)}))
    st = res["summary"]["random"]["oracle"]["transfer"]["3"]["miou"]
    assert st == {"mean": 1.0, "std": 0.0, "n": 3}


def test_single_class_training_set_is_a_clear_error(synth):
    with pytest.raises(PointsegError, match="two"):
        evaluate(synth, [OracleMethod(synth)], EvalConfig(**{**FAST, "train_stems": ("im05",)}))


def test_progress_reaches_the_announced_total(synth):
    seen = []
    cfg = EvalConfig(**{**FAST, "seeds": (0, 1)})
    evaluate(synth, [OracleMethod(synth)], cfg, on_progress=lambda n, d: seen.append(n))
    assert sum(seen) == progress_units(cfg, 1)


def test_package_exports_the_documented_api():
    import pointseg.evaluation as pe

    assert pe.evaluate is evaluate and pe.EvalConfig is EvalConfig
    assert set(pe.__all__) >= {"load_dataset", "build_method", "print_tables", "write_json", "plot_curves"}

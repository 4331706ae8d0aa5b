"""Per-part decisions: OK images in fit, the learned NG rule, its storage in the model file and its use."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pointseg import Segmenter
from pointseg.decision import (
    NGRule,
    auroc,
    choose_threshold,
    decide_labels,
    find_regions,
    EVIDENCE_SCORES,
    image_score,
    label_scores,
    part_confusion,
)
from pointseg.errors import ModelFileError, PointsegError

BACKBONE = "efficientnet_lite0"  # ships with its package: no weights needed


def part(h=128, w=160, defect=True, distractor=False, seed=0):
    """A grey part; a dark disc defect (value 30) when ``defect``; a mid-grey disc (90) when ``distractor``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 150 + rng.normal(0, 4, (h, w))
    truth = np.zeros((h, w), np.int64)
    if defect:
        disc = (yy - 40) ** 2 + (xx - 50) ** 2 < 14 ** 2
        img[disc], truth[disc] = 30, 1
    if distractor:
        img[(yy - 85) ** 2 + (xx - 115) ** 2 < 14 ** 2] = 90
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2), truth


DEFECT_POINTS = np.array([[50, 40, 1], [45, 36, 1], [55, 44, 1], [10, 10, 0], [140, 110, 0], [20, 100, 0],
                          [120, 20, 0]], dtype=np.float64)


# ------------------------------------------------------------------ the pure functions
def test_regions_and_scores_of_a_label_map():
    labels = np.zeros((40, 40), np.int64)
    labels[2:6, 2:6] = 1                      # 16 px
    labels[20:30, 20:30] = 1                  # 100 px
    regions = find_regions(labels, background=0)
    assert [r.area for r in regions] == [100, 16] and regions[0].bbox == (20, 20, 30, 30)
    assert image_score("largest_region", labels) == 100
    # with class 1 as background, the finding is class 0's single big region
    assert image_score("largest_region", labels, background=1) == 1600 - 116
    proba = np.stack([1 - labels * 0.9, labels * 0.9]).astype(np.float32)
    assert image_score("quantile", labels, proba) == pytest.approx(0.9)
    with pytest.raises(PointsegError, match="needs probabilities"):
        image_score("quantile", labels)


def test_threshold_separates_scores_and_falls_back_without_clean_examples():
    t, source = choose_threshold([400, 900, 2000], [0, 10, 30])
    assert 30 < t < 400 and source == "leave-one-image-out"
    # overlapping: the threshold minimises false alarms + misses (one clean part at 500 is called NG)
    t, _ = choose_threshold([400, 900, 2000], [0, 10, 30, 500, 3000])
    assert part_confusion([400, 900, 2000], [0, 10, 30, 500, 3000], t)["misses"] == 0
    t, source = choose_threshold([400, 900], [])
    assert t == 200 and source.startswith("fallback")
    assert choose_threshold([], []) == (0.0, "default")


def test_overlapping_scores_get_the_midpoint_of_their_means_not_the_fewest_errors():
    """Known answer: log1p scores 1, 3 (clean) and 2, 6 (defective) overlap; their means are 2 and 4, so the
    threshold is expm1(3). Counting errors instead picks a threshold in a gap next to one image."""
    clean, defective = np.expm1([1.0, 3.0]), np.expm1([2.0, 6.0])
    t, source = choose_threshold(defective, clean)
    assert t == pytest.approx(np.expm1(3.0)) and source == "leave-one-image-out"
    t_err, _ = choose_threshold(defective, clean, overlap="errors")
    assert t_err != pytest.approx(t)
    assert part_confusion(defective, clean, t_err)["false_alarms"] + part_confusion(defective, clean, t_err)["misses"] == 1
    # separated scores: both rules take the middle of the gap (log scale for areas)
    assert choose_threshold([400, 900], [0, 30]) == choose_threshold([400, 900], [0, 30], overlap="errors")
    # a score without a log scale: plain means (0.2 + 0.6) / 2 and (0.5 + 0.9) / 2 -> 0.55
    assert choose_threshold([0.5, 0.9], [0.2, 0.6], "quantile")[0] == pytest.approx(0.55)
    # shares of the image: log scale too (geometric midpoint of the gap)
    t, _ = choose_threshold([1e-2], [1e-4], "region_share")
    assert t == pytest.approx(np.sqrt((1e-2 + 1e-5) * (1e-4 + 1e-5)) - 1e-5)
    with pytest.raises(PointsegError, match="overlap"):
        choose_threshold([1], [2], overlap="median")


def test_label_scores_leave_out_the_regions_a_defect_click_falls_in():
    labels = np.zeros((40, 50), np.int64)
    labels[2:12, 2:12] = 1            # 100 px, clicked
    labels[20:26, 30:35] = 1          # 30 px, not clicked
    proba = np.stack([1 - labels * 0.8, labels * 0.8]).astype(np.float32)
    proba[:, 2:12, 2:12] = np.array([0.05, 0.95], np.float32)[:, None, None]
    whole = label_scores(labels, proba)
    assert set(whole) == set(EVIDENCE_SCORES)
    assert (whole["largest_region"], whole["region_share"], whole["defect_share"]) == (100.0, 100 / 2000, 130 / 2000)
    assert whole["peak"] == pytest.approx(0.95)
    rest = label_scores(labels, proba, avoid=np.array([[5.5, 5.5]]))
    assert (rest["largest_region"], rest["defect_share"]) == (30.0, 30 / 2000)
    assert rest["peak"] == pytest.approx(0.8)   # the clicked region's pixels are left out of the probabilities
    assert image_score("region_share", labels) == whole["region_share"]
    assert label_scores(np.zeros((4, 4), np.int64), None) == {"largest_region": 0.0, "region_share": 0.0,
                                                              "defect_share": 0.0}


def test_auroc_and_confusion():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [1]) == 0.5 and np.isnan(auroc([1], []))
    pc = part_confusion([5, 50], [0, 60, 1], 10)
    assert (pc["false_alarms"], pc["misses"], pc["false_alarm_rate"], pc["miss_rate"]) == (1, 1, 1 / 3, 0.5)


def test_rule_parsing_and_validation():
    assert NGRule.parse("largest_region:300") == NGRule("largest_region", 300.0, source="user")
    assert NGRule.parse("quantile:0.9").score == "quantile"
    for bad in ("largest_region", "area:3", "largest_region:x"):
        with pytest.raises(PointsegError):
            NGRule.parse(bad)
    with pytest.raises(PointsegError, match=">= 0"):
        NGRule("largest_region", -1)
    d = decide_labels(np.zeros((5, 5), np.int64), None, NGRule("largest_region", 0))
    assert not d.ng and d.status == "OK" and d.regions == []


# ------------------------------------------------------------------ OK images in fit
def test_a_warm_started_clone_reuses_the_ok_images_pixel_pools(monkeypatch):
    """The app refits a clone of the last model on every click: the OK images' pools are sampled once."""
    import pointseg.segmenter as segmenter_module

    defect, _ = part(defect=True)
    clean, _ = part(defect=False, seed=1)
    seg = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False, warm_start=True)
    fmaps = [seg.extract_features(defect), seg.extract_features(clean)]
    calls = []
    original = segmenter_module._pixel_sample
    monkeypatch.setattr(segmenter_module, "_pixel_sample", lambda *a, **k: calls.append(1) or original(*a, **k))
    seg.fit(fmaps, [DEFECT_POINTS, None], ok=[False, True])
    first = len(calls)
    refit = seg.clone().fit(fmaps, [DEFECT_POINTS, None], ok=[False, True])
    assert first >= 1 and len(calls) == first  # the clone sampled nothing again
    assert (refit.predict(clean) == 0).all()


def test_ok_image_needs_no_points_and_trains_background():
    defect, _ = part(defect=True)
    clean, _ = part(defect=False, seed=1)
    seg = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False)
    seg.fit([defect, clean], [DEFECT_POINTS, None], ok=[False, True])
    report = seg.training_report_
    # the clicks' 4 background points plus 32 spread and 32 hard-negative pixels of the OK image
    assert report.points_per_class == {"ok": 4 + 64, "defect": 3}
    assert report.n_images == 2
    assert (seg.predict(clean) == 0).all()


def test_ok_image_with_defect_points_is_refused():
    defect, _ = part()
    seg = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False)
    with pytest.raises(PointsegError, match="marked OK.*'defect'"):
        seg.fit([defect, defect], [DEFECT_POINTS, DEFECT_POINTS], ok=[False, True])
    with pytest.raises(PointsegError, match="OK flags"):
        seg.fit([defect], [DEFECT_POINTS], ok=[False, True])


def test_ok_image_removes_a_false_finding_that_clicks_alone_leave():
    """A mid-grey disc that only appears on clean parts: the clicks say nothing about it, the OK image does
    (its pixels are the hard negatives the first fit finds)."""
    defect, _ = part(defect=True)
    clean, _ = part(defect=False, distractor=True, seed=1)
    other, _ = part(defect=False, distractor=True, seed=2)
    plain = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False).fit([defect], [DEFECT_POINTS])
    with_ok = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False)
    with_ok.fit([defect, clean], [DEFECT_POINTS, None], ok=[False, True])
    false_plain = (plain.predict(other) == 1).sum()
    false_ok = (with_ok.predict(other) == 1).sum()
    assert false_plain > 100 and false_ok < false_plain / 10
    assert (with_ok.predict(defect)[30:50, 40:60] == 1).mean() > 0.9   # the defect itself is still found


def test_background_class_by_name_or_index():
    defect, _ = part()
    seg = Segmenter(BACKBONE, classes=["defect", "ok"], background="ok", cross_validate=False)
    pts = DEFECT_POINTS.copy()
    pts[:, 2] = 1 - pts[:, 2]
    clean, _ = part(defect=False, seed=1)
    seg.fit([defect, clean], [pts, None], ok=[False, True])
    assert seg.background_ == 1
    assert seg.training_report_.points_per_class["ok"] == 4 + 64
    d = seg.decide(defect)
    assert d.ng and d.regions[0].label == 0 and 400 < d.regions[0].area < 800
    for bad in ("nothing", 2, True):
        with pytest.raises(PointsegError, match="background"):
            Segmenter(BACKBONE, classes=["defect", "ok"], background=bad).fit([defect], [pts])


# ------------------------------------------------------------------ the learned rule
@pytest.fixture(scope="module")
def fitted():
    defects = [part(defect=True, seed=s)[0] for s in (0, 1)]
    cleans = [part(defect=False, distractor=True, seed=s)[0] for s in (2, 3)]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"])
    seg.fit(defects + cleans, [DEFECT_POINTS, DEFECT_POINTS, None, None], ok=[False, False, True, True])
    return seg


def test_rule_is_learned_leave_one_image_out_and_reported(fitted):
    rule = fitted.ng_rule_
    assert rule.source == "leave-one-image-out" and (rule.n_ok, rule.n_ng) == (2, 2)
    # the defect disc is ~600 px; clean parts held out score far less
    assert 0 < rule.threshold < 600
    pc = fitted.training_report_.part_confusion
    assert pc["ok_images"] == 2 and pc["ng_images"] == 2 and pc["false_alarms"] == 0 and pc["misses"] == 0
    assert "per part" in fitted.training_report_.summary()
    # every label score's leave-one-image-out evidence comes from the same held-out maps
    ev = fitted.ng_evidence_
    assert all(len(ev[k]["ng"]) == 2 and len(ev[k]["ok"]) == 2 for k in EVIDENCE_SCORES)
    assert ev["region_share"]["ng"][0] == pytest.approx(ev["largest_region"]["ng"][0] / (128 * 160))


def test_quantile_rule_is_learned_from_the_same_held_out_maps(fitted):
    """ng_rule="quantile": the threshold on the 99.9th percentile of the defect probability, read off the
    same leave-one-image-out evidence the area rule uses; it decides new parts like the area rule here."""
    defects = [part(defect=True, seed=s)[0] for s in (0, 1)]
    cleans = [part(defect=False, distractor=True, seed=s)[0] for s in (2, 3)]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"], ng_rule="quantile")
    seg.fit(defects + cleans, [DEFECT_POINTS, DEFECT_POINTS, None, None], ok=[False, False, True, True])
    rule = seg.ng_rule_
    ev = seg.ng_evidence_["quantile"]
    assert rule.score == "quantile" and rule.source == "leave-one-image-out" and 0 < rule.threshold < 1
    assert max(ev["ok"]) < rule.threshold < min(ev["ng"])           # separated evidence: inside the gap
    assert rule.threshold == pytest.approx(choose_threshold(ev["ng"], ev["ok"] + ev["clean_surface"], "quantile")[0])
    assert seg.decide(part(defect=True, seed=7)[0]).ng
    assert not seg.decide(part(defect=False, distractor=True, seed=8)[0]).ng
    with pytest.raises(PointsegError, match="ng_rule must be one of"):
        Segmenter(BACKBONE, classes=["ok", "defect"], ng_rule="peak").fit(defects, [DEFECT_POINTS] * 2)


def test_decide_on_new_parts(fitted):
    d = fitted.decide(part(defect=True, seed=7)[0])
    assert d.ng and d.score > d.threshold == fitted.ng_rule_.threshold and d.regions[0].area == d.score
    d = fitted.decide(part(defect=False, distractor=True, seed=8)[0])
    assert not d.ng and d.status == "OK"
    assert fitted.decide(part(defect=False, seed=8)[0], rule=NGRule("quantile", 1.0)).ng is False


def test_without_ok_images_clean_examples_come_from_click_free_regions():
    """No OK image: on each defective image (left out in turn) the regions no defect click falls in stand for
    clean surface; the threshold lies between them and the defect (~600 px)."""
    defects = [part(defect=True, distractor=True, seed=s)[0] for s in (0, 1)]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"]).fit(defects, [DEFECT_POINTS, DEFECT_POINTS])
    rule = seg.ng_rule_
    assert rule.source == "leave-one-image-out" and (rule.n_ok, rule.n_ng) == (0, 2)
    assert 0 < rule.threshold < 600
    assert seg.decide(part(defect=True, seed=5)[0]).ng
    assert seg.training_report_.part_confusion is None   # no OK image: no per-part confusion to report
    one = Segmenter(BACKBONE, classes=["ok", "defect"]).fit(defects[:1], [DEFECT_POINTS])
    assert one.ng_rule_.source.startswith("default") and one.ng_rule_.threshold == 0


def test_rule_and_background_survive_the_model_file(fitted, tmp_path):
    path = tmp_path / "m.pointseg"
    fitted.save(path)
    loaded = Segmenter.load(path)
    assert loaded.ng_rule_ == fitted.ng_rule_ and loaded.background_ == 0
    image = part(defect=True, seed=9)[0]
    assert loaded.decide(image).score == fitted.decide(image).score
    assert loaded.training_report_.part_confusion == fitted.training_report_.part_confusion


def _rewrite_meta(path, out, **changes):
    from safetensors.numpy import load, save

    data = path.read_bytes()
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    meta = json.loads(header["__metadata__"]["pointseg"])
    meta.update(changes)
    from pointseg.modelfile import CHECKSUM_KEY, content_checksum

    meta[CHECKSUM_KEY] = content_checksum(load(data), meta)  # a consistent edit: the field checks must catch it
    out.write_bytes(save(load(data), metadata={"pointseg": json.dumps(meta)}))


def test_damaged_decision_fields_are_refused_and_old_files_get_defaults(fitted, tmp_path):
    path = tmp_path / "m.pointseg"
    fitted.save(path)
    _rewrite_meta(path, tmp_path / "bad.pointseg", ng_rule={"score": "largest_region", "threshold": -5})
    with pytest.raises(ModelFileError, match="ng_rule"):
        Segmenter.load(tmp_path / "bad.pointseg")
    _rewrite_meta(path, tmp_path / "bad2.pointseg", background_class=7)
    with pytest.raises(ModelFileError, match="background_class"):
        Segmenter.load(tmp_path / "bad2.pointseg")
    _rewrite_meta(path, tmp_path / "old.pointseg", ng_rule=None, background_class=0)
    old = Segmenter.load(tmp_path / "old.pointseg")
    assert old.ng_rule_.threshold == 0 and old.ng_rule_.source.startswith("default")


# ------------------------------------------------------------------ the command line
def run(*args):
    return subprocess.run([sys.executable, "-m", "pointseg.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_train_with_ok_images_then_predict_applies_the_stored_rule(tmp_path):
    entries = []
    for s in (0, 1):
        Image.fromarray(part(defect=True, seed=s)[0]).save(tmp_path / f"ng{s}.png")
        entries.append({"path": f"ng{s}.png", "points": DEFECT_POINTS.tolist()})
    for s in (2, 3):
        Image.fromarray(part(defect=False, distractor=True, seed=s)[0]).save(tmp_path / f"ok{s}.png")
        entries.append({"path": f"ok{s}.png", "ok": True})
    (tmp_path / "ann.json").write_text(json.dumps({"classes": ["ok", "defect"], "images": entries}))
    new = {"new_ng.png": part(defect=True, seed=5)[0], "new_ok.png": part(defect=False, distractor=True, seed=6)[0]}
    for name, img in new.items():
        Image.fromarray(img).save(tmp_path / name)
    result = run("train", tmp_path / "ann.json", "-o", tmp_path / "m.pointseg", "--backbone", BACKBONE)
    assert result.returncode == 0, result.stderr
    assert "per part" in result.stdout and "OK/NG rule: NG when largest_region >" in result.stdout
    threshold = Segmenter.load(tmp_path / "m.pointseg").ng_rule_.threshold

    def summary(*extra):
        out = tmp_path / f"out{len(extra)}"
        result = run("predict", tmp_path / "m.pointseg", tmp_path / "new_ng.png", tmp_path / "new_ok.png",
                     "-o", out, *extra)
        assert result.returncode == 0, result.stderr
        return {r["image"]: r for r in csv.DictReader(open(out / "summary.csv"))}

    rows = summary()
    assert rows["new_ng.png"]["status"] == "NG" and rows["new_ok.png"]["status"] == "OK"
    assert float(rows["new_ng.png"]["ng_threshold"]) == pytest.approx(threshold, rel=1e-5)
    assert float(rows["new_ng.png"]["ng_score"]) > threshold >= float(rows["new_ok.png"]["ng_score"])
    rows = summary("--ng-rule", "largest_region:100000")
    assert {r["status"] for r in rows.values()} == {"OK"}
    rows = summary("--ng-area", "0.0")          # the area-fraction override still works
    assert rows["new_ng.png"]["status"] == "NG"
    bad = run("predict", tmp_path / "m.pointseg", tmp_path / "new_ng.png", "-o", tmp_path / "x", "--ng-rule", "area")
    assert bad.returncode == 2 and "SCORE:THRESHOLD" in bad.stderr


def test_ng_rule_predictions_yield_to_a_stop_request_like_the_folds():
    """Inside ``cross_validation_context`` the NG rule's leave-one-image-out loop asks ``should_stop`` too,
    so the app's background work never keeps a click waiting for a whole pass over the images."""
    from pointseg.classifier import CrossValidationInterrupted, check_interrupted, cross_validation_context

    check_interrupted()                                    # outside a context: nothing happens
    images = [part(defect=True, seed=s)[0] for s in (0, 3)] + [part(defect=False, seed=1)[0]]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"])
    with cross_validation_context(lambda: ctx.result is not None) as ctx:   # stop once the folds are done
        with pytest.raises(CrossValidationInterrupted):
            seg.fit(images, [DEFECT_POINTS, DEFECT_POINTS, None], ok=[False, False, True])
    assert ctx.result is not None                          # the estimate was made, the NG rule was not
    with cross_validation_context(lambda: False):
        seg.fit(images, [DEFECT_POINTS, DEFECT_POINTS, None], ok=[False, False, True])
    assert seg.ng_rule_.n_ok == 1


def test_a_stop_request_is_seen_between_filter_tiles_of_a_held_out_prediction():
    """The NG rule's held-out predictions ask ``should_stop`` between the fine filter bank's tiles (and between
    the two fits of an OK image's hard-negative mining), not once per image: on 1-MP images a whole
    prediction costs ~250 ms of filtering, which a click after a pause in the app would otherwise wait for."""
    from pointseg.classifier import cross_validation_context
    from pointseg.features import FINE_TILE

    h, w = 2 * FINE_TILE - 40, 3 * FINE_TILE - 40          # 2 x 3 filter tiles per image
    images = [part(h, w, defect=True, seed=s)[0] for s in (0, 3)] + [part(h, w, defect=False, seed=1)[0]]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"])
    calls = {"before": 0, "after": 0}

    def should_stop():
        calls["after" if ctx.result is not None else "before"] += 1
        return False

    with cross_validation_context(should_stop) as ctx:
        seg.fit(images, [DEFECT_POINTS, DEFECT_POINTS, None], ok=[False, False, True])
    assert seg.ng_rule_.n_ok == 1
    # three held-out predictions (two defective images, one OK) of six tiles each, each tile asked before
    assert calls["after"] >= 3 * 6


def test_the_ng_rules_held_out_predictions_do_not_evict_the_tiles_in_use(monkeypatch):
    """Learning the NG rule predicts every annotated image once; in the app that runs when the user pauses,
    and its filter tiles used to push the tiles of the image being clicked out of the shared cache, so the
    next click recomputed them. They now enter the cache only where there is room."""
    from pointseg import features
    from pointseg.lru import ByteLRU

    h, w = 2 * features.FINE_TILE, 2 * features.FINE_TILE
    images = [part(h, w, defect=True, seed=s)[0] for s in (0, 3)] + [part(h, w, defect=False, seed=1)[0]]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"])
    fmaps = [seg.extract_features(im) for im in images]
    viewed = seg.extract_features(part(h, w, defect=True, seed=7)[0])
    one_image = 4 * features.FINE_TILE ** 2 * 4 * viewed.fine_channels      # 4 tiles, float32
    small = ByteLRU(int(1.5 * one_image), size=lambda a: a.nbytes)          # room for one image's tiles
    monkeypatch.setattr(features, "fine_tile_cache", lambda: small)
    for fmap in fmaps + [viewed]:
        fmap._fine_source = None                                            # made anew on the small cache
    seg.fit(fmaps, [DEFECT_POINTS, DEFECT_POINTS, None], ok=[False, False, True])
    seg.predict(viewed)                                                     # the image the user looks at
    viewed_tiles = {k for k in small._items if k[0] == viewed.key}
    assert len(viewed_tiles) == 4
    seg.fit(fmaps, [DEFECT_POINTS, DEFECT_POINTS, None], ok=[False, False, True])   # held-out predictions
    assert seg.ng_rule_.n_ok == 1
    assert viewed_tiles <= set(small._items)

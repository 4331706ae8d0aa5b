"""The anomaly image score (pointseg.anomaly): a memory bank of OK images' cells, the ``"anomaly"`` NG rule,
its storage in the model file and its use by decide / predict; exported graphs refuse it loudly."""

import json

import numpy as np
import pytest

from pointseg import Segmenter
from pointseg.anomaly import (
    BANK_MAX,
    AnomalyBank,
    build_bank,
    cell_features,
    cell_grid_size,
    interior,
    nearest_distances,
    safe_background_cells,
)
from pointseg.decision import NGRule, decide_labels
from pointseg.errors import ModelFileError, PointsegError

BACKBONE = "efficientnet_lite0"  # ships with its package: no weights needed
H, W = 128, 160


def texture(seed, defect=False, unseen=False):
    """Horizontal stripes (period 8 px) with noise; ``defect``: a dark disc at (50, 40), the type the user
    clicks; ``unseen``: a 40 x 40 patch of the same stripes turned vertical at (110, 80) - same brightness,
    another texture, a defect type no click ever showed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = 140 + 40 * np.sin(2 * np.pi * yy / 8) + rng.normal(0, 4, (H, W))
    if unseen:
        box = (slice(60, 100), slice(90, 130))
        img[box] = (140 + 40 * np.sin(2 * np.pi * xx / 8) + rng.normal(0, 4, (H, W)))[box]
    if defect:
        img[(yy - 40) ** 2 + (xx - 50) ** 2 < 12 ** 2] = 20
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


CLICKS = np.array([[50, 40, 1], [46, 37, 1], [54, 43, 1], [10, 10, 0], [140, 110, 0], [20, 100, 0], [120, 20, 0]],
                  dtype=np.float64)


@pytest.fixture(scope="module")
def trained():
    """Two defective images (dark discs, clicked) and three OK images; one model per NG rule."""
    images = [texture(s, defect=True) for s in (0, 1)] + [texture(s) for s in (2, 3, 4)]
    points = [CLICKS, CLICKS, None, None, None]
    ok = [False, False, True, True, True]
    area = Segmenter(BACKBONE, classes=["ok", "defect"]).fit(images, points, ok=ok)
    anomaly = area.clone(ng_rule="anomaly").fit(images, points, ok=ok)
    return area, anomaly


# ------------------------------------------------------------------ the bank itself
def test_nearest_distances_and_subsampled_bank_are_exact_and_bounded():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    brute = np.sqrt(((queries[:, None] - bank[None]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(nearest_distances(queries, bank), brute, rtol=1e-4, atol=1e-4)
    big = build_bank([rng.normal(size=(BANK_MAX, 6)), rng.normal(size=(500, 6))])
    assert big.n_vectors == BANK_MAX and big.n_channels == 6
    assert build_bank([np.zeros((0, 6))]) is None
    with pytest.raises(PointsegError, match="scale"):
        AnomalyBank(big.vectors, big.mean, -big.scale, big.projection)


def test_cells_cover_the_image_and_the_edge_is_left_out():
    seg = Segmenter(BACKBONE, classes=["ok", "defect"])
    fmap = seg.extract_features(texture(0)[:100, :90])   # not a multiple of the stride
    rows, cols = cell_grid_size(fmap)
    assert (rows, cols) == (13, 12)
    feats = cell_features(fmap)
    assert feats.shape == (rows * cols, fmap.data.shape[0]) and np.isfinite(feats).all()
    keep = interior((rows, cols))
    assert keep.sum() == (rows - 4) * (cols - 4) and not keep[0].any() and not keep[:, -1].any()
    assert interior((3, 3)).all()                         # too small to leave an edge out: every cell counts
    labels = np.zeros((100, 90), np.int64)
    labels[48:52, 40:44] = 1                              # a defect in cell (6, 5)
    safe = safe_background_cells(labels, fmap, 0, np.array([[85.0, 5.0]]))   # and a defect click in (0, 10)
    assert not safe[6, 5] and not safe[4, 3] and safe[6, 9] and not safe[0, 10] and not safe[2, 8]


# ------------------------------------------------------------------ the known answer
def test_an_unseen_defect_type_is_flagged_by_the_anomaly_score_not_by_the_supervised_one(trained):
    area, anomaly = trained
    unseen, clean, seen = texture(10, unseen=True), texture(11), texture(12, defect=True)
    assert anomaly.ng_rule_.score == "anomaly" and anomaly.ng_rule_.source == "leave-one-image-out"
    assert area.ng_rule_.score == "largest_region"
    assert not area.decide(unseen).ng                     # the clicks never showed this type: missed
    assert anomaly.decide(unseen).ng                      # unlike every OK cell: flagged
    assert not anomaly.decide(clean).ng and not area.decide(clean).ng
    assert anomaly.decide(seen).ng and area.decide(seen).ng
    # the score is the distance map's maximum over the interior, and it peaks where the patch is
    fmap = anomaly.extract_features(unseen)
    dist = anomaly.anomaly_bank_.distance_map(fmap)
    r, c = np.unravel_index(np.argmax(np.where(interior(dist.shape), dist, -1)), dist.shape)
    assert 60 <= r * 8 + 4 < 100 and 90 <= c * 8 + 4 < 130
    assert anomaly.anomaly_score(unseen) == pytest.approx(anomaly.decide(unseen).score)
    pc = anomaly.training_report_.part_confusion
    assert pc["score"] == "anomaly" and pc["ok_images"] == 3 and pc["ng_images"] == 2


def test_without_ok_images_the_bank_is_the_defective_images_background():
    images = [texture(s, defect=True) for s in (0, 1, 2)]
    seg = Segmenter(BACKBONE, classes=["ok", "defect"], ng_rule="anomaly").fit(images, [CLICKS] * 3)
    assert seg.anomaly_bank_.source == "defective_background" and seg.ng_rule_.score == "anomaly"
    evidence = seg.ng_evidence_["anomaly"]
    assert len(evidence["ng"]) == 3 and len(evidence["clean_surface"]) == 3 and evidence["ok"] == []
    assert seg.decide(texture(10, unseen=True)).ng and not seg.decide(texture(11)).ng


def test_the_rule_and_score_are_checked():
    with pytest.raises(PointsegError, match="ng_rule must be one of"):
        Segmenter(BACKBONE, classes=["ok", "defect"], ng_rule="area").fit([texture(0, defect=True)], [CLICKS])
    assert NGRule.parse("anomaly:12.5") == NGRule("anomaly", 12.5, source="user")
    with pytest.raises(PointsegError, match="anomaly bank"):
        decide_labels(np.zeros((4, 4), np.int64), None, NGRule("anomaly", 1.0))
    plain = Segmenter(BACKBONE, classes=["ok", "defect"], cross_validate=False).fit([texture(0, defect=True)], [CLICKS])
    with pytest.raises(PointsegError, match="no anomaly bank"):
        plain.decide(texture(1), rule=NGRule("anomaly", 1.0))


# ------------------------------------------------------------------ storage
def test_bank_and_rule_survive_the_model_file(trained, tmp_path):
    _, anomaly = trained
    anomaly.save(tmp_path / "m.pointseg")
    loaded = Segmenter.load(tmp_path / "m.pointseg")
    assert loaded.ng_rule_ == anomaly.ng_rule_ and loaded.ng_rule == "anomaly"
    for key in ("vectors", "mean", "scale", "projection"):
        np.testing.assert_array_equal(getattr(loaded.anomaly_bank_, key), getattr(anomaly.anomaly_bank_, key))
    image = texture(10, unseen=True)
    assert loaded.decide(image).score == pytest.approx(anomaly.decide(image).score, rel=1e-6)
    assert loaded.get_params()["ng_rule"] == "anomaly"


def test_area_rule_files_carry_no_bank_and_old_files_load_with_the_area_rule(trained, tmp_path):
    area, anomaly = trained
    area.save(tmp_path / "area.pointseg")
    anomaly.save(tmp_path / "anomaly.pointseg")
    assert (tmp_path / "area.pointseg").stat().st_size < (tmp_path / "anomaly.pointseg").stat().st_size / 4
    loaded = Segmenter.load(tmp_path / "area.pointseg")
    assert loaded.anomaly_bank_ is None and loaded.ng_rule_.score == "largest_region"

    def before_the_fields(meta):                  # a file written before them: no anomaly_bank, no params.ng_rule
        meta.pop("anomaly_bank")
        meta["params"].pop("ng_rule")

    _edit_meta(tmp_path / "area.pointseg", tmp_path / "old.pointseg", before_the_fields)
    old = Segmenter.load(tmp_path / "old.pointseg")
    assert old.anomaly_bank_ is None and old.ng_rule == "largest_region" and old.ng_rule_ == area.ng_rule_
    assert old.decide(texture(12, defect=True)).ng
    # an anomaly rule without its bank, or a bank without its tensors, is refused naming the field
    _edit_meta(tmp_path / "area.pointseg", tmp_path / "bad.pointseg",
               lambda meta: meta.update(ng_rule={"score": "anomaly", "threshold": 3.0}))
    with pytest.raises(ModelFileError, match="anomaly_bank"):
        Segmenter.load(tmp_path / "bad.pointseg")
    _edit_meta(tmp_path / "area.pointseg", tmp_path / "bad2.pointseg",
               lambda meta: meta.update(anomaly_bank={"source": "ok_images"}))
    with pytest.raises(ModelFileError, match="anomaly_vectors"):
        Segmenter.load(tmp_path / "bad2.pointseg")


def _edit_meta(path, out, edit):
    """Rewrite a model file's metadata through ``edit(meta)``, with a consistent checksum (so the field
    checks, not the checksum, must catch what is wrong)."""
    from safetensors.numpy import load, save

    from pointseg.modelfile import CHECKSUM_KEY, content_checksum

    data = path.read_bytes()
    meta = json.loads(json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])["__metadata__"]["pointseg"])
    edit(meta)
    meta[CHECKSUM_KEY] = content_checksum(load(data), meta)
    out.write_bytes(save(load(data), metadata={"pointseg": json.dumps(meta)}))


# ------------------------------------------------------------------ the command line and the exported graph
def test_train_with_the_anomaly_rule_then_predict_flags_the_unseen_type(tmp_path):
    import csv

    from PIL import Image

    from test_decision import run

    entries = []
    for s in (0, 1):
        Image.fromarray(texture(s, defect=True)).save(tmp_path / f"ng{s}.png")
        entries.append({"path": f"ng{s}.png", "points": CLICKS.tolist()})
    for s in (2, 3, 4):
        Image.fromarray(texture(s)).save(tmp_path / f"ok{s}.png")
        entries.append({"path": f"ok{s}.png", "ok": True})
    (tmp_path / "ann.json").write_text(json.dumps({"classes": ["ok", "defect"], "images": entries}))
    Image.fromarray(texture(10, unseen=True)).save(tmp_path / "unseen.png")
    Image.fromarray(texture(11)).save(tmp_path / "clean.png")
    bad = run("train", tmp_path / "ann.json", "-o", tmp_path / "x.pointseg", "--backbone", BACKBONE, "--ng-rule", "area")
    assert bad.returncode == 2 and "ng_rule must be one of" in bad.stderr and not (tmp_path / "x.pointseg").exists()
    result = run("train", tmp_path / "ann.json", "-o", tmp_path / "m.pointseg", "--backbone", BACKBONE,
                 "--ng-rule", "anomaly")
    assert result.returncode == 0, result.stderr
    assert "OK/NG rule: NG when anomaly >" in result.stdout
    out = tmp_path / "out"
    result = run("predict", tmp_path / "m.pointseg", tmp_path / "unseen.png", tmp_path / "clean.png", "-o", out)
    assert result.returncode == 0, result.stderr
    rows = {r["image"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["unseen.png"]["status"] == "NG" and rows["clean.png"]["status"] == "OK"
    # the exported graph cannot compute the score: export says so instead of deciding differently
    from pointseg.deploy.export import export_model

    with pytest.raises(PointsegError, match="exported graph cannot compute"):
        export_model(tmp_path / "m.pointseg", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()

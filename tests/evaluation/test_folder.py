"""The folder protocol and the next-image ranking on a synthetic folder whose answer is known."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointseg.decision import annotation_priority, rank_images_for_annotation
from pointseg.evaluation.datasets import load_dataset
from pointseg.evaluation.folder import FolderConfig, clicks_to_reach, folder_session, markdown_folder, run_folder

BACKBONE = "efficientnet_lite0"
TYPE_B = {"im09", "im10", "im11"}


def make_folder(root: Path) -> Path:
    """Nine images of kind A (dark background 40, bright square 200 = defect) and three of kind B (a black
    square on a mid-grey, striped background): a model that has seen only A is unsure about B's background
    and wrong about its defect, so B is where the next clicks teach the most."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(12):
        rng = np.random.default_rng(i)
        mask = np.zeros((64, 80), np.uint8)
        top, left = 8 + 3 * (i % 5), 10 + 4 * (i % 6)
        mask[top:top + 16, left:left + 18] = 1
        if f"im{i:02d}" in TYPE_B:
            bg = 120 + 25 * (np.sin(np.arange(80) / 2.0)[None, :] > 0)
        else:
            bg = np.full((64, 80), 40.0)
        defect = 0.0 if f"im{i:02d}" in TYPE_B else 200.0
        img = np.where(mask == 1, defect, bg) + rng.normal(0, 3, (64, 80))
        Image.fromarray(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, 2)).save(
            root / "images" / f"im{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i:02d}.png")
    (root / "classes.json").write_text(json.dumps({"0": "normal", "1": "defect"}))
    return root


@pytest.fixture(scope="module")
def folder_ds(tmp_path_factory):
    return load_dataset(make_folder(tmp_path_factory.mktemp("folder")))


def _make(ds):
    from pointseg import FeatureCache, Segmenter

    cache = FeatureCache()
    return lambda: Segmenter(BACKBONE, classes=list(ds.classes), cache=cache, cross_validate=False)


def test_ranking_puts_the_unfamiliar_images_first(folder_ds):
    make = _make(folder_ds)
    seg = make()
    a = folder_ds.load_image("im01")
    seg.fit([a], [np.array([[20, 15, 1], [60, 50, 0], [5, 5, 0]], dtype=np.float64)])
    stems = ["im02", "im03", "im09", "im05", "im10"]
    order = rank_images_for_annotation(seg, [folder_ds.load_image(s) for s in stems], kind="uncertainty")
    assert {stems[i] for i, _ in order[:2]} == {"im09", "im10"}
    assert order[0][1] >= order[1][1] >= order[-1][1]
    margin = rank_images_for_annotation(seg, [folder_ds.load_image(s) for s in stems], kind="margin")
    assert stems[margin[0][0]] in TYPE_B
    with pytest.raises(Exception, match="ranking"):
        annotation_priority(seg.predict_full(a), kind="nope")


def test_folder_session_moves_to_the_ranked_image_and_records_the_curve(folder_ds):
    masks = {s: folder_ds.load_mask(s) for s in folder_ds.stems}
    images = {s: folder_ds.load_image(s) for s in folder_ds.stems}
    held = ["im00", "im04", "im07", "im11"]
    folder = [s for s in folder_ds.stems if s not in held]
    config = FolderConfig(per_image=3, budget=6)
    curve = folder_session(_make(folder_ds)(), folder, masks, "im01", "uncertainty", config, held, images, 2,
                           np.random.default_rng(0))
    assert [c["image"] for c in curve][0] == "im01" and curve[1]["image"] in TYPE_B
    assert [c["clicks"] for c in curve] == [3, 6] and [c["images"] for c in curve] == [1, 2]
    assert all(0 <= c["transfer"]["miou"] <= 1 and c["transfer"]["n_images"] == 4 for c in curve)
    assert clicks_to_reach(curve, curve[1]["transfer"]["fg_iou"], "fg_iou") <= 6
    assert np.isnan(clicks_to_reach(curve, 2.0, "fg_iou"))


def test_run_folder_compares_orders_over_seeds(folder_ds):
    config = FolderConfig(seeds=(0, 1), orders=("random", "uncertainty"), per_image=3, budget=6, test=4)
    result = run_folder(folder_ds, _make(folder_ds), config)
    assert len(result["runs"]) == 4 and result["held_out"] == ["im00", "im04", "im07", "im11"]
    firsts = {(r["seed"], r["order"]): r["first"] for r in result["runs"]}
    assert firsts[(0, "random")] == firsts[(0, "uncertainty")]       # both orders start on the same image
    row = result["summary"]["orders"]["uncertainty"]
    assert row["fg_iou"]["6"]["n"] == 2 and "clicks_vs_random" in row
    assert "| uncertainty |" in markdown_folder(result)
    json.dumps(result)


def test_clicks_ratio_counts_an_order_that_never_gets_there():
    from pointseg.evaluation.folder import clicks_ratio

    def curve(values):
        return [{"clicks": 5 * (i + 1), "transfer": {"fg_iou": v}} for i, v in enumerate(values)]

    config = FolderConfig(per_image=5, budget=15)
    rand = curve([0.1, 0.2, 0.3])
    # at 10 clicks random has 0.2, reached by the fast order at 5; at 15, 0.3 at 10: (5/10 + 10/15) / 2
    assert clicks_ratio(curve([0.25, 0.3, 0.4]), rand, [5, 10, 15], config) == pytest.approx((0.5 + 10 / 15) / 2)
    assert clicks_ratio(rand, rand, [5, 10, 15], config) == pytest.approx(1.0)
    # never reaching 0.3 counts as budget + per_image = 20 clicks
    assert clicks_ratio(curve([0.1, 0.2, 0.2]), rand, [5, 10, 15], config) == pytest.approx((1.0 + 20 / 15) / 2)


def test_rare_class_diversity_and_density_rankings(folder_ds):
    from pointseg.decision import class_rarity, density_scores
    from pointseg.segmenter import Prediction

    seg = _make(folder_ds)()
    a = folder_ds.load_image("im01")
    seg.fit([a], [np.array([[20, 15, 1], [60, 50, 0], [5, 5, 0]], dtype=np.float64)])
    rarity = class_rarity(seg)
    assert rarity == pytest.approx([1 / 3, 1 / 2])                 # 2 background marks, 1 defect mark
    # rare_class: the image predicted to show more of the barely-marked class comes first
    proba = np.zeros((2, 10, 10), np.float32)
    proba[0], proba[1] = 0.9, 0.1
    little = Prediction(np.zeros((10, 10), np.int64), proba.copy(), 1 - proba.max(0))
    proba[1, :5], proba[0, :5] = 0.9, 0.1
    much = Prediction(np.zeros((10, 10), np.int64), proba, 1 - proba.max(0))
    assert annotation_priority(much, "rare_class", rarity) > annotation_priority(little, "rare_class", rarity)
    # diversity: the image of the other kind is farthest from the annotated one
    stems = ["im02", "im09", "im03", "im05"]
    order = rank_images_for_annotation(seg, [folder_ds.load_image(s) for s in stems], "diversity", annotated=[a])
    assert stems[order[0][0]] == "im09"
    with pytest.raises(Exception, match="annotated"):
        rank_images_for_annotation(seg, [a], "diversity")
    # density: the lone image of its kind is the least typical of the candidates
    fmaps = [seg.extract_features(folder_ds.load_image(s)) for s in stems]
    density = density_scores(seg, fmaps)
    assert int(np.argmin(density)) == 1 and density.max() <= 1


def test_folder_session_gives_the_coverage_ranking_one_cluster_per_image_of_the_budget(folder_ds, monkeypatch):
    import pointseg.decision as decision

    asked = []
    real = decision.coverage_clusters

    def spy(candidates, annotated, clusters, seed=0):
        asked.append(clusters)
        return real(candidates, annotated, clusters, seed)

    monkeypatch.setattr(decision, "coverage_clusters", spy)
    masks = {s: folder_ds.load_mask(s) for s in folder_ds.stems}
    images = {s: folder_ds.load_image(s) for s in folder_ds.stems}
    held = ["im00", "im04", "im07", "im11"]
    folder = [s for s in folder_ds.stems if s not in held]
    config = FolderConfig(per_image=3, budget=6, coverage="budget")   # two images: two clusters, A's and B's
    curve = folder_session(_make(folder_ds)(), folder, masks, "im01", "committee_coverage", config, held, images,
                           2, np.random.default_rng(0))
    assert asked == [2]                      # ranked once: not again once the budget is spent
    assert curve[1]["image"] in TYPE_B       # the uncovered kind next


def test_the_coverage_setting_is_checked():
    with pytest.raises(Exception, match="coverage"):
        FolderConfig(coverage="all").check()
    FolderConfig(coverage="annotated").check()

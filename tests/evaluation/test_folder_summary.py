"""The folder protocol's summary figures on hand-made curves with known answers."""
from __future__ import annotations

import pytest

from pointseg.evaluation.folder import FolderConfig, summarize_folder


def _curve(values, per_image=5):
    return [{"clicks": per_image * (i + 1), "transfer": {"fg_iou": v, "miou": v}} for i, v in enumerate(values)]


def _runs(order_values: dict[str, list[list[float]]]):
    return [{"seed": seed, "order": order, "curve": _curve(values)}
            for order, per_seed in order_values.items() for seed, values in enumerate(per_seed)]


CONFIG = FolderConfig(seeds=(0, 1), orders=("random", "ranked"), per_image=5, budget=20, test=1, candidates=4)


def test_mean_curves_ratio_reads_the_averaged_curves_in_steps():
    # random's mean curve: 0.1, 0.2, 0.3, 0.4 (final 0.4, first reached at 20 clicks)
    # ranked's mean curve: 0.1, 0.3, 0.45, 0.5 -> first >= 0.4 at 15 clicks: 15 / 20
    runs = _runs({"random": [[0.1, 0.1, 0.2, 0.3], [0.1, 0.3, 0.4, 0.5]],
                  "ranked": [[0.1, 0.2, 0.4, 0.5], [0.1, 0.4, 0.5, 0.5]]})
    row = summarize_folder(runs, CONFIG)["orders"]["ranked"]
    assert row["clicks_vs_random_mean_curve"] == pytest.approx(0.75)
    # per seed: seed 0 random final 0.3 (reached at 20), ranked reaches it at 15; seed 1: 0.5 at 20 vs 15
    assert row["clicks_vs_random"]["mean"] == pytest.approx(0.75)


def test_mean_curves_ratio_is_none_when_the_order_never_gets_there_and_counts_an_early_random_reach():
    behind = _runs({"random": [[0.1, 0.2, 0.3, 0.4]] * 2, "ranked": [[0.1, 0.1, 0.2, 0.3]] * 2})
    assert summarize_folder(behind, CONFIG)["orders"]["ranked"]["clicks_vs_random_mean_curve"] is None
    # random's mean curve reaches its final value already at 10 clicks (then dips): the base is 10, not 20
    early = _runs({"random": [[0.1, 0.4, 0.3, 0.4]] * 2, "ranked": [[0.1, 0.2, 0.4, 0.4]] * 2})
    assert summarize_folder(early, CONFIG)["orders"]["ranked"]["clicks_vs_random_mean_curve"] == pytest.approx(1.5)


def test_merged_runs_where_an_order_lacks_some_seeds_are_summarised_over_the_seeds_it_has():
    runs = _runs({"random": [[0.1, 0.2, 0.3, 0.4]] * 3, "ranked": [[0.1, 0.4, 0.4, 0.4]]})   # ranked: seed 0 only
    config = FolderConfig(seeds=(0, 1, 2), orders=("random", "ranked"), per_image=5, budget=20, test=1, candidates=4)
    row = summarize_folder(runs, config)["orders"]["ranked"]
    assert row["clicks_vs_random"]["n"] == 1 and row["clicks_vs_random"]["mean"] == pytest.approx(0.5)
    assert row["fg_iou"]["20"]["n"] == 1

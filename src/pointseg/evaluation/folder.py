"""The folder protocol: a simulated user working through a folder, one image after another.

Which images are annotated decides much of what a model learns. Here the user starts with one image
(drawn per seed), gives it the corrective protocol's clicks (one per class present, then one at the deepest
point of the largest error, refitting after each) until it has ``per_image`` clicks, then moves to the next
image of the folder, chosen either at random or by pointseg's ranking
(:func:`pointseg.decision.rank_images_for_annotation` over the images not yet annotated), until ``budget``
clicks in all. After each image the held-out images (fixed, evenly spaced, never annotated) are predicted:
the curve is held-out IoU against total clicks. Both orders start from the same first image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pointseg.decision import DEFAULT_RANKING, RANKINGS
from pointseg.errors import PointsegError

from .datasets import SegmentationDataset, evenly_spaced
from .methods import to_core_points
from .metrics import IoUAccumulator, mean_std
from .protocols import corrective_click, initial_clicks

ORDERS = ("random",) + RANKINGS


@dataclass
class FolderConfig:
    seeds: tuple[int, ...] = (0,)
    orders: tuple[str, ...] = ("random", DEFAULT_RANKING)
    per_image: int = 5            # clicks on an image before moving on
    budget: int = 30              # total clicks
    test: int = 10                # held-out images
    candidates: int | None = 30   # folder images the user may move to (evenly spaced; None: all)
    #: clusters the "committee_coverage" ranking covers: "budget" = the images the budget allows, "annotated"
    #: = one more than the images annotated so far (what the ranking does when nobody tells it a budget)
    coverage: str = "annotated"

    def check(self) -> None:
        bad = [o for o in self.orders if o not in ORDERS]
        if bad or not self.orders:
            raise PointsegError(f"unknown order {bad[0] if bad else ''!r}; choose from {', '.join(ORDERS)}")
        if self.per_image < 1 or self.budget < self.per_image:
            raise PointsegError(f"need 1 <= --per-image <= --budget, got {self.per_image} and {self.budget}")
        if self.coverage not in ("budget", "annotated"):
            raise PointsegError(f"coverage must be 'budget' or 'annotated', got {self.coverage!r}")
        if self.test < 1 or (self.candidates is not None and self.candidates < 2):
            raise PointsegError("the folder protocol needs --test >= 1 held-out images and --candidates >= 2")


def folder_session(seg, folder: dict, masks: dict, first: str, order: str, config: FolderConfig,
                   held: list[str], images: dict, n_classes: int, rng) -> list[dict]:
    """One simulated user; returns the curve ``[{"clicks", "images", "image", "transfer"}, ...]``."""
    from pointseg.decision import rank_images_for_annotation

    seg.cross_validate = False   # the report's cross-validation is not what is measured here
    annotated, clicks = [], []
    current, total, curve = first, 0, []
    while current is not None and total < config.budget:
        annotated.append(current)
        clicks.append(initial_clicks(masks[current], n_classes))
        total += len(clicks[-1])
        while True:
            seg.fit([images[s] for s in annotated], [to_core_points(c) for c in clicks])
            if len(clicks[-1]) >= config.per_image or total >= config.budget:
                break
            click = corrective_click(seg.predict(images[current]), masks[current], clicks[-1])
            if click is None:
                break
            clicks[-1] = np.vstack([clicks[-1], click[None]])
            total += 1
        acc = IoUAccumulator(n_classes)
        for s in held:
            acc.add(masks[s], seg.predict(images[s]))
        curve.append({"clicks": total, "images": len(annotated), "image": current, "transfer": acc.as_dict(
            [str(k) for k in range(n_classes)])})
        rest = [s for s in folder if s not in annotated]
        if not rest or total >= config.budget:
            break       # the budget is spent: no next image to rank
        if order == "random":
            current = rest[int(rng.integers(len(rest)))]
        else:
            ranked = rank_images_for_annotation(seg, [images[s] for s in rest], kind=order,
                                                annotated=[images[s] for s in annotated],
                                                points=[to_core_points(c) for c in clicks],
                                                clusters=math.ceil(config.budget / config.per_image)
                                                if config.coverage == "budget" else None)
            current = rest[ranked[0][0]]
    return curve


def run_folder(dataset: SegmentationDataset, make, config: FolderConfig, on_progress=None) -> dict:
    """Run every order for every seed with fresh Segmenters from ``make()``; JSON-serialisable results."""
    config.check()
    stems = list(dataset.stems)
    held = list(evenly_spaced(stems, config.test))
    pool = [s for s in stems if s not in set(held)]
    folder = list(evenly_spaced(pool, config.candidates)) if config.candidates else pool
    masks = {s: dataset.load_mask(s) for s in folder + held}
    images = {s: dataset.load_image(s) for s in folder + held}
    informative = [s for s in folder if len(np.unique(masks[s][masks[s] != 255])) >= 2]
    if not informative:
        raise PointsegError("no folder image shows two classes; the first image must")
    runs = []
    for seed in config.seeds:
        first = informative[int(np.random.default_rng([seed, 17]).integers(len(informative)))]
        for order in config.orders:
            if on_progress:
                on_progress(f"{dataset.name} · seed {seed} · {order}")
            seg = make()
            curve = folder_session(seg, folder, masks, first, order, config, held, images, dataset.n_classes,
                                   np.random.default_rng([seed, 19]))
            runs.append({"seed": seed, "order": order, "first": first, "curve": curve})
    return {"dataset": dataset.name, "config": asdict(config), "held_out": held, "runs": runs,
            "summary": summarize_folder(runs, config)}


def _value_at(curve: list[dict], clicks: int, key: str) -> float:
    """Held-out ``key`` (miou / fg_iou) of the last state with at most ``clicks`` total clicks."""
    value = math.nan
    for c in curve:
        if c["clicks"] <= clicks:
            value = c["transfer"][key]
    return value


def clicks_to_reach(curve: list[dict], target: float, key: str) -> float:
    """Total clicks at which ``curve`` first reaches ``target`` (NaN when it never does)."""
    for c in curve:
        if c["transfer"][key] >= target - 1e-12:
            return float(c["clicks"])
    return math.nan


def clicks_ratio(curve: list[dict], random_curve: list[dict], checkpoints: list[int], config: FolderConfig,
                 key: str = "fg_iou") -> float:
    """Clicks ``curve`` needs to reach the random order's IoU, as a share of the clicks the random order
    needed, averaged over the checkpoints after the first image (where the orders can differ): 0.75 = 25 %
    fewer clicks. Where ``curve`` never gets there, it counts as ``budget + per_image`` clicks (at least one
    more image), so an order that falls behind is not excused by leaving it out."""
    ratios = []
    for k in checkpoints[1:]:
        target = _value_at(random_curve, k, key)
        if math.isnan(target):
            continue
        base = clicks_to_reach(random_curve, target, key)
        need = clicks_to_reach(curve, target, key)
        ratios.append((config.budget + config.per_image if math.isnan(need) else need) / base)
    return float(np.mean(ratios)) if ratios else math.nan


def summarize_folder(runs: list[dict], config: FolderConfig) -> dict:
    """Per order: mean ± sd over seeds of held-out IoU at each multiple of ``per_image`` clicks, and the
    clicks each non-random order needs to reach the random order's final IoU (per seed, then averaged) and
    :func:`clicks_ratio` (the same at every checkpoint)."""
    checkpoints = list(range(config.per_image, config.budget + 1, config.per_image))
    out: dict = {"checkpoints": checkpoints, "orders": {}}
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["order"]] = r["curve"]
    for order in config.orders:
        curves = [by_seed[s][order] for s in by_seed if order in by_seed[s]]
        row = {}
        for key in ("miou", "fg_iou"):
            row[key] = {str(k): _stat([_value_at(c, k, key) for c in curves]) for k in checkpoints}
        # the area under the curve: one steadier figure than any single checkpoint
        row["fg_iou_mean_over_checkpoints"] = _stat(
            [float(np.mean([_value_at(c, k, "fg_iou") for k in checkpoints])) for c in curves])
        if order != "random" and "random" in config.orders:
            ratios = []
            for s, cs in by_seed.items():
                if order not in cs or "random" not in cs:
                    continue          # merged runs: this seed was run without this order
                target = _value_at(cs["random"], config.budget, "fg_iou")
                need = clicks_to_reach(cs[order], target, "fg_iou")
                base = clicks_to_reach(cs["random"], target, "fg_iou")
                ratios.append(need / base if not math.isnan(need) else math.nan)
            row["clicks_vs_random"] = _stat([r for r in ratios if not math.isnan(r)])
            row["reached_random"] = int(sum(not math.isnan(r) for r in ratios))
            row["clicks_ratio"] = _stat([clicks_ratio(cs[order], cs["random"], checkpoints, config)
                                         for cs in by_seed.values() if order in cs and "random" in cs])
        out["orders"][order] = row
    for order, row in out["orders"].items():
        if order != "random" and "random" in out["orders"]:
            row["clicks_vs_random_mean_curve"] = mean_curve_clicks_ratio(row, out["orders"]["random"],
                                                                         checkpoints)
    return out


def mean_curve_clicks_ratio(row: dict, random_row: dict, checkpoints: list[int]) -> float | None:
    """Clicks the order's *mean* curve (over seeds) needs to reach the random order's mean final IoU, over
    the clicks random's mean curve needs (the active-learning literature's "same accuracy with N % fewer
    labels", read off the averaged learning curves). Steps, not interpolation: an order reaches a value at
    the first checkpoint whose mean is at least it, so the figure never credits clicks between images.
    ``None`` when the order's mean curve never reaches it within the budget.

    Why beside the per-seed figure: per seed, random's final IoU is often already reached on the first
    image (which both orders share), and those seeds then say nothing about the order; averaging the
    curves first asks the question on the typical curve instead."""
    def first_reach(r: dict, target: float) -> int | None:
        return next((k for k in checkpoints
                     if r["fg_iou"][str(k)]["mean"] is not None and r["fg_iou"][str(k)]["mean"] >= target - 1e-12),
                    None)

    target = random_row["fg_iou"][str(checkpoints[-1])]["mean"]
    if target is None:
        return None
    need, base = first_reach(row, target), first_reach(random_row, target)
    return None if need is None or not base else need / base


def _stat(values) -> dict:
    mean, std = mean_std(values)
    return {"mean": None if math.isnan(mean) else mean, "std": None if math.isnan(std) else std,
            "n": int(sum(1 for v in values if not math.isnan(v)))}


def markdown_folder(result: dict) -> str:
    s = result["summary"]
    ks = s["checkpoints"]
    lines = ["| order | " + " | ".join(f"defect IoU @{k}" for k in ks)
             + " | mean over checkpoints | clicks to reach random's IoU (mean over checkpoints) "
             "| clicks to reach random's final | mean curves: clicks to reach random's final |",
             "|---|" + "---|" * (len(ks) + 4)]
    for order, row in s["orders"].items():
        cells = []
        for k in ks:
            st = row["fg_iou"][str(k)]
            cells.append("-" if st["mean"] is None else f"{st['mean']:.3f} ±{st['std']:.3f}")
        extra = "-"
        if "clicks_vs_random" in row and row["clicks_vs_random"]["mean"] is not None:
            extra = (f"{row['clicks_vs_random']['mean']:.2f}× random's ({row['reached_random']} of "
                     f"{len(result['config']['seeds'])} seeds reach it)")
        elif "clicks_vs_random" in row:
            extra = f"never ({row['reached_random']} seeds reach it)"
        auc = row["fg_iou_mean_over_checkpoints"]
        cells.append("-" if auc["mean"] is None else f"{auc['mean']:.3f} ±{auc['std']:.3f}")
        ratio = row.get("clicks_ratio", {"mean": None})
        cells.append("-" if ratio["mean"] is None else f"{ratio['mean']:.2f}× ±{ratio['std']:.2f}")
        curve = row.get("clicks_vs_random_mean_curve", "-")
        curve = "never" if curve is None else curve if curve == "-" else f"{curve:.2f}×"
        lines.append(f"| {order} | " + " | ".join(cells) + f" | {extra} | {curve} |")
    return "\n".join(lines)

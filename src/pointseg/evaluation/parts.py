"""The per-part protocol: does the model call unseen parts OK and NG correctly?

An inspection user annotates a few defective parts (corrective clicks) and marks a few clean parts OK, trains,
and runs the model over the rest of the line. What matters then is per part: how often a clean part is called
NG (false alarm) and a defective one OK (miss), under the rule the model learned (:mod:`pointseg.decision`),
and how well the image score ranks parts at all (AUROC, independent of any threshold).

Precisely, for each seed: the held-out parts are fixed (evenly spaced over the defective and over the clean
images, the same for every seed); ``defective`` training images are drawn among the other defective images and
``ok_images`` among the other clean ones (``numpy.random.default_rng([seed, 13])``). The simulated user
clicks the defective images with the corrective protocol (:mod:`pointseg.evaluation.protocols`: one click
per class, then one click at the deepest point of the largest error, refitting after each, ``budget`` clicks per
image), the OK images carry no clicks; the final fit learns the NG rule leave-one-image-out. Every held-out
part is then predicted and scored. A part is defective when its mask has any non-background pixel.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pointseg.errors import PointsegError

from .datasets import SegmentationDataset, evenly_spaced
from .methods import to_core_points
from .metrics import IoUAccumulator, mean_std
from .protocols import corrective_click, initial_clicks


@dataclass
class PartsConfig:
    seeds: tuple[int, ...] = (0,)
    defective: int = 3                      # annotated defective images per seed
    ok_images: tuple[int, ...] = (3, 0)     # OK-marked images per seed; one condition per value
    budget: int = 10                        # corrective clicks per defective image
    test: int | None = None                 # held-out parts (None: all the others)
    compare_anomaly: bool = True            # also learn the anomaly rule from the same fit and score it

    def check(self) -> None:
        if self.defective < 1:
            raise PointsegError("the per-part protocol needs at least one annotated defective image")
        if any(n < 0 for n in self.ok_images) or not self.ok_images:
            raise PointsegError("--ok-images must be counts >= 0, e.g. 3 or 3,0")
        if self.budget < 1:
            raise PointsegError("--budget must be at least 1")


def part_is_defective(mask: np.ndarray, background: int = 0) -> bool:
    """A part is NG when its mask has any labelled pixel other than background (ignore pixels excluded)."""
    from .datasets import IGNORE

    return bool(((mask != background) & (mask != IGNORE)).any())


def parts_split(stems, defective: dict[str, bool], seed: int, n_defective: int, n_ok: int,
                test: int | None, reserve_ok: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """``(defective training images, OK training images, held-out parts)`` for one seed (module docstring).

    ``reserve_ok`` clean images are kept out of the held-out set (default ``n_ok``), so conditions with
    different OK counts are scored on the same parts."""
    ng = [s for s in stems if defective[s]]
    ok = [s for s in stems if not defective[s]]
    reserve_ok = n_ok if reserve_ok is None else max(reserve_ok, n_ok)
    if test is None:
        held_ng = evenly_spaced(ng, len(ng) - n_defective)
        held_ok = evenly_spaced(ok, len(ok) - reserve_ok)
    else:
        share = len(ng) / max(1, len(ng) + len(ok))
        # the rare defective parts get up to half of the held-out set, so the miss rate has some resolution,
        # but twice the training count stays out of it, so seeds draw different defective training images
        k_ng = min(max(1, len(ng) - 2 * n_defective), max(1, round(test * share), test // 2))
        held_ng = evenly_spaced(ng, max(0, k_ng))
        held_ok = evenly_spaced(ok, max(0, min(len(ok) - reserve_ok, test - len(held_ng))))
    rest_ng = [s for s in ng if s not in set(held_ng)]
    rest_ok = [s for s in ok if s not in set(held_ok)]
    if len(rest_ng) < n_defective or len(rest_ok) < n_ok:
        raise PointsegError(
            f"{len(rest_ng)} defective and {len(rest_ok)} clean image(s) left for training, but "
            f"{n_defective} and {n_ok} asked for; lower --test, --train-images or --ok-images"
        )
    rng = np.random.default_rng([seed, 13])
    train_ng = sorted(rest_ng[i] for i in rng.choice(len(rest_ng), n_defective, replace=False))
    train_ok = sorted(rest_ok[i] for i in rng.choice(len(rest_ok), n_ok, replace=False)) if n_ok else []
    return train_ng, train_ok, list(held_ng) + list(held_ok)


def corrective_session(seg, images: list[np.ndarray], masks: list[np.ndarray], ok_images: list[np.ndarray],
                       budget: int) -> list[np.ndarray]:
    """Click the defective ``images`` as the corrective protocol does, with ``ok_images`` in every fit;
    returns the clicks per image. ``seg`` ends fitted on them (without the NG rule: see :func:`run_parts`)."""
    K = len(seg.classes)
    clicks = [initial_clicks(m, K) for m in masks]
    all_images = list(images) + list(ok_images)
    ok_flags = [False] * len(images) + [True] * len(ok_images)

    def fit():
        pts = [to_core_points(c) for c in clicks] + [None] * len(ok_images)
        seg.fit(all_images, pts, ok=ok_flags)

    saved, seg.cross_validate = seg.cross_validate, False
    try:
        fit()
        done = [False] * len(images)
        for k in range(2, budget + 1):
            for i, image in enumerate(images):
                if done[i] or len(clicks[i]) >= k:
                    continue
                click = corrective_click(seg.predict(image), masks[i], clicks[i])
                if click is None:
                    done[i] = True
                    continue
                clicks[i] = np.vstack([clicks[i], click[None]])
                fit()
    finally:
        seg.cross_validate = saved
    return clicks


def run_parts(dataset: SegmentationDataset, methods: dict, config: PartsConfig, on_progress=None) -> dict:
    """Run the per-part protocol for each ``methods`` entry (name -> a factory returning a fresh
    :class:`pointseg.Segmenter`) and each seed and OK count; returns a JSON-serialisable dict
    (``runs``: one entry per (method, seed, ok_images); ``summary``: mean and spread over seeds)."""
    from pointseg.decision import EVIDENCE_SCORES, auroc, choose_threshold, label_scores, part_confusion

    config.check()
    masks = {s: dataset.load_mask(s) for s in dataset.stems}
    defective = {s: part_is_defective(m) for s, m in masks.items()}
    images: dict[str, np.ndarray] = {}

    def image(stem):
        if stem not in images:
            images[stem] = dataset.load_image(stem)
        return images[stem]

    tick = on_progress or (lambda *a: None)
    models = []   # (method, seed, n_ok, seg, held)
    for seed in config.seeds:
        for n_ok in config.ok_images:
            train_ng, train_ok, held = parts_split(dataset.stems, defective, seed, config.defective, n_ok,
                                                   config.test, reserve_ok=max(config.ok_images))
            for name, make in methods.items():
                tick(0, f"{dataset.name} · {name} · seed {seed} · {n_ok} OK · training")
                seg = make()
                clicks = corrective_session(seg, [image(s) for s in train_ng], [masks[s] for s in train_ng],
                                            [image(s) for s in train_ok], config.budget)
                seg.cross_validate = True
                pts = [to_core_points(c) for c in clicks] + [None] * len(train_ok)
                seg.fit([image(s) for s in train_ng + train_ok], pts, ok=[False] * len(train_ng) + [True] * len(train_ok))
                if config.compare_anomaly and seg.ng_rule != "anomaly":
                    # the same clicks and head, the rule learned on the anomaly score: both rules in one run
                    seg.anomaly_twin_ = seg.clone(ng_rule="anomaly").fit(
                        [image(s) for s in train_ng + train_ok], pts, ok=[False] * len(train_ng) + [True] * len(train_ok))
                models.append({"method": name, "seed": seed, "ok_images": n_ok, "seg": seg, "held": held,
                               "train": {"defective": train_ng, "ok": train_ok,
                                         "clicks": [np.asarray(c).tolist() for c in clicks]},
                               "scores": {k: {} for k in EVIDENCE_SCORES},
                               "iou": IoUAccumulator(dataset.n_classes)})
                tick(1, f"{dataset.name} · {name} · seed {seed} · {n_ok} OK · trained")
    held_all = sorted({s for m in models for s in m["held"]})
    sizes = {s: list(images[s].shape[:2]) for s in images}   # the training images (still loaded)
    for stem in held_all:
        img = image(stem)
        sizes[stem] = list(img.shape[:2])
        for m in models:
            if stem not in m["held"]:
                continue
            seg = m["seg"]
            result = seg.predict_full(img, probabilities=True)
            for kind, value in label_scores(result.labels, result.probabilities, seg.background_).items():
                m["scores"][kind][stem] = value
            scorer = getattr(seg, "anomaly_twin_", seg)
            if getattr(scorer, "anomaly_bank_", None) is not None:
                m["scores"].setdefault("anomaly", {})[stem] = scorer.anomaly_score(img)
            m["iou"].add(masks[stem], result.labels)
        images.pop(stem, None)
        tick(0, f"{dataset.name} · held-out parts")
    runs = []
    for m in models:
        seg = m["seg"]
        rule = seg.ng_rule_
        entry = {"method": m["method"], "seed": m["seed"], "ok_images": m["ok_images"], "train": m["train"],
                 "context_upscale": int(getattr(seg, "context_upscale_", 1)),
                 "by_stem": m["scores"], "defective": {s: defective[s] for s in m["held"]},
                 "rule": rule.as_dict(), "loio": seg.training_report_.part_confusion,
                 "transfer": m["iou"].as_dict(list(dataset.classes)), "scores": {}, "auroc": {}}
        scorer = getattr(seg, "anomaly_twin_", seg)
        entry["evidence"] = {**(getattr(seg, "ng_evidence_", None) or {}),
                             **{k: v for k, v in (getattr(scorer, "ng_evidence_", None) or {}).items() if v}}
        bank = getattr(scorer, "anomaly_bank_", None)
        entry["bank"] = None if bank is None else {"source": bank.source, "n_vectors": bank.n_vectors}
        for kind in m["scores"]:
            ng = [v for s, v in m["scores"][kind].items() if defective[s]]
            ok = [v for s, v in m["scores"][kind].items() if not defective[s]]
            entry["scores"][kind] = {"ng": ng, "ok": ok}
            entry["auroc"][kind] = auroc(ng, ok)
        kind = rule.score
        ng, ok = entry["scores"][kind]["ng"], entry["scores"][kind]["ok"]
        entry["stored_rule"] = part_confusion(ng, ok, rule.threshold)
        entry["rules"] = rules_of(entry)
        # the best any threshold could do on these held-out parts (an oracle, to read the rule against)
        best, _ = choose_threshold(ng, ok, kind, overlap="errors")
        entry["oracle"] = part_confusion(ng, ok, best)
        runs.append(entry)
    return {"dataset": dataset.name, "config": asdict(config), "runs": runs, "summary": summarize_parts(runs),
            "sizes": sizes}


def rules_of(entry: dict) -> dict:
    """Every rule the run's fit could have learned (one per image score with leave-one-image-out evidence,
    the stored one among them), applied to the same held-out parts: ``{score: part_confusion + threshold}``."""
    from pointseg.decision import part_confusion, threshold_from_evidence

    out = {}
    for kind, evidence in (entry.get("evidence") or {}).items():
        if kind in entry["scores"] and evidence["ng"]:
            t, _ = threshold_from_evidence(evidence, kind)
            out[kind] = {**part_confusion(entry["scores"][kind]["ng"], entry["scores"][kind]["ok"], t), "threshold": t}
    return out


def summarize_parts(runs: list[dict]) -> dict:
    """Mean and sample sd over seeds, per (method, OK count): false-alarm / miss rates of the stored rule,
    AUROC per score, defect IoU on the held-out parts."""
    out: dict = {}
    for r in runs:
        out.setdefault(f"{r['method']} | {r['ok_images']} OK", []).append(r)
    table = {}
    for key, group in out.items():
        row = {}
        for field in ("false_alarm_rate", "miss_rate"):
            row[field] = _stat([g["stored_rule"][field] for g in group])
            row[f"oracle_{field}"] = _stat([g["oracle"][field] for g in group])
        for kind in group[0]["auroc"]:
            row[f"auroc_{kind}"] = _stat([g["auroc"].get(kind) for g in group])
        rules = [g.get("rules") or rules_of(g) for g in group]
        for kind in rules[0]:
            for field in ("false_alarm_rate", "miss_rate"):
                row[f"rule_{kind}_{field}"] = _stat([r.get(kind, {}).get(field) for r in rules])
        row["defect_iou"] = _stat([g["transfer"]["fg_iou"] for g in group])
        row["context_upscale"] = [g.get("context_upscale") for g in group]   # per seed: did the size rule fire
        row["n_seeds"] = len(group)
        table[key] = row
    return table


def _stat(values) -> dict:
    mean, std = mean_std([v for v in values if v is not None])
    return {"mean": None if math.isnan(mean) else mean, "std": None if math.isnan(std) else std}


def markdown_parts(result: dict) -> str:
    """The summary as a markdown table (mean ± sd over seeds)."""
    def cell(s):
        return "-" if s["mean"] is None else f"{s['mean']:.3f} ±{s['std']:.3f}"

    none = {"mean": None}
    lines = ["| method | OK images | false alarms | misses | AUROC largest region | AUROC quantile | AUROC anomaly | "
             "defect IoU | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for key, row in result["summary"].items():
        method, ok = key.split(" | ")
        lines.append(f"| {method} | {ok.split()[0]} | {cell(row['false_alarm_rate'])} | {cell(row['miss_rate'])} | "
                     f"{cell(row['auroc_largest_region'])} | {cell(row['auroc_quantile'])} | "
                     f"{cell(row.get('auroc_anomaly', none))} | {cell(row['defect_iou'])} | {row['n_seeds']} |")
    lines += ["", "| method | OK images | rule (image score) | false alarms | misses |", "|---|---|---|---|---|"]
    for key, row in result["summary"].items():
        method, ok = key.split(" | ")
        for kind in sorted({k[5:].rsplit("_false_alarm_rate", 1)[0] for k in row if k.endswith("_false_alarm_rate")
                            and k.startswith("rule_")}):
            lines.append(f"| {method} | {ok.split()[0]} | {kind} | {cell(row[f'rule_{kind}_false_alarm_rate'])} | "
                         f"{cell(row[f'rule_{kind}_miss_rate'])} |")
    return "\n".join(lines)

"""Offline screen of per-part NG rules on saved per-part protocol results (no model is fitted).

    python bench/screen_parts.py bench/results/accuracy_parts_magnetic_tile_parts_ctx.json [more.json ...]

Every run of `bench/accuracy_parts.py` stores, per seed and condition, the held-out parts' image scores
(`by_stem`) and the leave-one-image-out evidence of each score (`evidence`). From these this prints, per
method and OK count (mean ± sd over seeds): the rule each score would learn (false alarms, misses), the
oracle threshold on the held-out parts themselves, rules that combine scores, threshold variants, and two
diagnostics: the share of defective held-out parts that score 0 (no region at all), and the misses per
defect type (the stem's prefix, e.g. magnetic tiles' "blowhole_...") with whether that type was annotated.
"""
from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pointseg.decision import AREA_EPS, auroc, choose_threshold, part_confusion, threshold_from_evidence  # noqa: E402


#: how the "learned" rows place a threshold where the evidence overlaps ("errors": the rule the runs of
#: 2026-12-02 stored; --overlap means: today's)
OVERLAP = "errors"


def split(run: dict, kind: str) -> tuple[list[float], list[float]]:
    scores = run["by_stem"].get(kind) or {}
    ng = [v for s, v in scores.items() if run["defective"][s]]
    ok = [v for s, v in scores.items() if not run["defective"][s]]
    return ng, ok


def rates(ng_flags, ok_flags) -> tuple[float, float]:
    """(false-alarm rate, miss rate) from NG decisions on the defective and on the clean parts."""
    return float(np.mean(ok_flags)), float(1 - np.mean(ng_flags))


def learned(run: dict, kind: str):
    ev = (run.get("evidence") or {}).get(kind)
    if not ev or not ev["ng"] or kind not in run["by_stem"]:
        return None
    t, _ = threshold_from_evidence(ev, kind, overlap=OVERLAP)
    return t


def rule_rates(run: dict, kind: str, threshold: float | None):
    if threshold is None:
        return None
    ng, ok = split(run, kind)
    c = part_confusion(ng, ok, threshold)
    return c["false_alarm_rate"], c["miss_rate"]


def combined_rates(run: dict, kinds: tuple[str, ...]):
    """NG when the mean of the scores, each divided by its own learned threshold, exceeds 1."""
    ts = [learned(run, k) for k in kinds]
    if any(t is None or t <= 0 for t in ts) or any(k not in run["by_stem"] for k in kinds):
        return None
    stems = list(run["by_stem"][kinds[0]])
    total = sum(_ratio(run, k, t, stems) for k, t in zip(kinds, ts)) / len(kinds)
    ng_flags = [bool(x > 1) for x, s in zip(total, stems) if run["defective"][s]]
    ok_flags = [bool(x > 1) for x, s in zip(total, stems) if not run["defective"][s]]
    return rates(ng_flags, ok_flags)


def _ratio(run, kind, t, stems) -> np.ndarray:
    """Each part's score relative to the threshold: 1 at the threshold (areas on a log scale)."""
    v = np.array([run["by_stem"][kind][s] for s in stems], dtype=np.float64)
    if kind == "largest_region":
        return np.log1p(v) / math.log1p(t)
    if kind in ("region_share", "defect_share"):
        # distance above log(eps) relative to the threshold's: 0 at no region, 1 at the threshold
        lo = math.log(1e-5)
        return (np.log(v + 1e-5) - lo) / (math.log(t + 1e-5) - lo)
    return v / t


def threshold_variants(run: dict, kind: str) -> dict:
    """Other ways to read a threshold off the same leave-one-image-out evidence."""
    ev = (run.get("evidence") or {}).get(kind)
    if not ev or not ev["ng"]:
        return {}
    out = {}
    pos = np.asarray(ev["ng"], float)
    clean = np.asarray(list(ev["ok"]) + list(ev["clean_surface"]), float)
    ok_only = np.asarray(ev["ok"], float)
    if len(ok_only):
        out["ok images only"], _ = choose_threshold(pos, ok_only, kind, overlap=OVERLAP)
    out["clean surface only"], _ = choose_threshold(pos, np.asarray(ev["clean_surface"], float), kind, overlap=OVERLAP)
    if len(clean):
        eps = AREA_EPS.get(kind)
        warp = (lambda v: np.log(v + eps)) if eps else (lambda v: v)
        unwarp = (lambda v: np.exp(v) - eps) if eps else (lambda v: v)
        # midway (log scale for areas) between the largest clean and the smallest defective score
        out["midway max-clean/min-defect"] = float(unwarp((warp(clean.max()) + warp(pos.min())) / 2))
        # midway between the clean and the defective means (log scale): less hostage to one extreme image
        out["midway of means"] = float(unwarp((warp(clean).mean() + warp(pos).mean()) / 2))
        # where the evidence separates, the current rule (the gap's midpoint); where it does not, the means'
        # midpoint instead of the threshold that minimises errors on the few annotated images
        separable = clean.max() < pos.min()
        out["gap midpoint if separable, else midway of means"] = (
            float(unwarp((warp(clean.max()) + warp(pos.min())) / 2)) if separable
            else out["midway of means"])
        # max clean score (every annotated clean example OK)
        out["max clean"] = float(clean.max())
    return {name: rule_rates(run, kind, t) for name, t in out.items()}


def per_type(run: dict, kind: str, threshold: float) -> dict:
    """Miss rate per defect type (stem prefix) and whether that type was among the annotated images."""
    trained = {s.split("_")[0] for s in run["train"]["defective"]}
    out = {}
    for s, v in run["by_stem"][kind].items():
        if run["defective"][s]:
            t = s.split("_")[0]
            out.setdefault(t, [0, 0, t in trained])
            out[t][0] += int(v <= threshold)
            out[t][1] += 1
    return out


def fmt(values) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    return f"{np.mean(vals):.3f} ±{np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}"


def main(paths) -> None:
    runs = [r for p in paths for r in json.loads(Path(p).read_text())["runs"]]
    groups = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["ok_images"])].append(r)
    kinds = [k for k in ("largest_region", "region_share", "defect_share", "quantile", "peak", "anomaly")
             if k in runs[0]["by_stem"] or k in runs[0].get("scores", {})]
    for r in runs:   # older JSONs: the anomaly scores live in `scores` only
        if "anomaly" in r.get("scores", {}) and "anomaly" not in r["by_stem"]:
            held = [s for s in r["by_stem"]["largest_region"]]
            ng = [s for s in held if r["defective"][s]]
            ok = [s for s in held if not r["defective"][s]]
            r["by_stem"]["anomaly"] = {**dict(zip(ng, r["scores"]["anomaly"]["ng"])),
                                       **dict(zip(ok, r["scores"]["anomaly"]["ok"]))}
    for (method, n_ok), group in groups.items():
        print(f"\n## {method} | {n_ok} OK | seeds {[g['seed'] for g in group]} | context factor "
              f"{[g.get('context_upscale') for g in group]}")
        print("| rule | false alarms | misses | sum | AUROC | oracle FA | oracle misses |")
        print("|---|---|---|---|---|---|---|")
        for kind in kinds:
            rr = [rule_rates(g, kind, learned(g, kind)) for g in group]
            au = [auroc(*split(g, kind)) for g in group]
            orc = []
            for g in group:
                ng, ok = split(g, kind)
                if ng and ok:
                    t, _ = choose_threshold(ng, ok, kind, overlap="errors")
                    c = part_confusion(ng, ok, t)
                    orc.append((c["false_alarm_rate"], c["miss_rate"]))
            row(kind, rr, au, orc)
        for combo in (("largest_region", "anomaly"), ("region_share", "anomaly"), ("largest_region", "quantile"),
                      ("largest_region", "peak"), ("region_share", "peak")):
            if all(k in kinds for k in combo):
                row(" + ".join(combo), [combined_rates(g, combo) for g in group], [], [])
        for kind in ("largest_region", "region_share"):
            if kind not in kinds:
                continue
            variants = defaultdict(list)
            for g in group:
                for name, v in threshold_variants(g, kind).items():
                    variants[name].append(v)
            for name, vals in variants.items():
                row(f"{kind}, threshold: {name}", vals, [], [])
        zero = [np.mean([v == 0 for v in split(g, "largest_region")[0]]) for g in group]
        zero_ok = [np.mean([v == 0 for v in split(g, "largest_region")[1]]) for g in group]
        print(f"\ndefective held-out parts with no region at all (score 0): {fmt(zero)}; clean ones: {fmt(zero_ok)}")
        types = defaultdict(lambda: [0, 0, 0, 0])   # misses, parts where annotated / not annotated
        for g in group:
            t = learned(g, "largest_region")
            if t is None:
                continue
            for name, (miss, n, seen) in per_type(g, "largest_region", t).items():
                types[name][0 if seen else 2] += miss
                types[name][1 if seen else 3] += n
        print("misses per defect type (stored rule): " + "; ".join(
            f"{k}: {a}/{b} when annotated, {c}/{d} when not" for k, (a, b, c, d) in sorted(types.items())))


def row(name, rr, au, orc) -> None:
    rr = [x for x in rr if x is not None]
    fa = [x[0] for x in rr]
    mi = [x[1] for x in rr]
    print(f"| {name} | {fmt(fa)} | {fmt(mi)} | {fmt([a + b for a, b in rr])} | {fmt(au)} | "
          f"{fmt([o[0] for o in orc])} | {fmt([o[1] for o in orc])} |")


RULES = [("largest_region", "errors"), ("largest_region", "means"), ("region_share", "means"),
         ("defect_share", "means"), ("quantile", "errors"), ("quantile", "means"), ("peak", "means"),
         ("anomaly", "errors"), ("anomaly", "means")]
COMBOS = [(("largest_region", "anomaly"), "errors"), (("largest_region", "anomaly"), "means"),
          (("largest_region", "quantile"), "means")]


def summary(paths) -> None:
    """One markdown table: a row per rule (score x how its threshold meets overlapping evidence), a column
    per (file, method, OK count): false alarms / misses, mean over seeds, and the mean of FA + misses."""
    global OVERLAP
    groups = {}
    for p in paths:
        res = json.loads(Path(p).read_text())
        for r in res["runs"]:
            groups.setdefault(f"{res['dataset'].replace('_parts', '')} {r['method']} {r['ok_images']} OK", []).append(r)
    cols = list(groups)
    print("| rule | " + " | ".join(cols) + " | mean of FA + misses |")
    print("|---|" + "---|" * (len(cols) + 1))
    saved = OVERLAP
    for name, overlap in RULES + COMBOS:
        OVERLAP = overlap
        cells, sums = [], []
        for c in cols:
            if isinstance(name, tuple):
                rr = [combined_rates(g, name) for g in groups[c]]
            else:
                rr = [rule_rates(g, name, learned(g, name)) for g in groups[c]]
            rr = [x for x in rr if x is not None]
            if not rr:
                cells.append("-")
                continue
            fa, mi = np.mean([x[0] for x in rr]), np.mean([x[1] for x in rr])
            sums.append(fa + mi)
            cells.append(f"{fa:.3f} / {mi:.3f}" + ("" if len(rr) == len(groups[c]) else f" ({len(rr)} seeds)"))
        label = " + ".join(name) if isinstance(name, tuple) else name
        print(f"| {label}, {overlap} | " + " | ".join(cells) + f" | {np.mean(sums):.3f} |")
    OVERLAP = saved


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--overlap"]:
        OVERLAP, args = args[1], args[2:]
    if args[:1] == ["--summary"]:
        summary(args[1:])
    else:
        main(args)

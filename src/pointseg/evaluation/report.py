"""Turn evaluation results (the dict from :func:`pointseg.evaluation.runner.evaluate`) into tables, JSON,
CSV, Markdown and a plot of mIoU against clicks."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def _fmt(stat: dict | None, digits: int = 3, spread: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if spread and stat.get("n", 0) > 1 and stat.get("std") is not None:
        text += f" ±{stat['std']:.{digits}f}"
    return text


def _fg_label(results: dict) -> str:
    classes = results["dataset"]["classes"]
    return f"{classes[1]} IoU" if len(classes) == 2 else "defect IoU (mean of classes 1..K-1)"


#: tolerant foreground scores an entry may carry (runner's EvalConfig.tolerance; old results have none)
TOLERANT_KEYS = ("fg_f1_tol", "fg_precision_tol", "fg_recall_tol")


def tolerant_rows(results: dict) -> list[dict]:
    """Rows of the tolerant-F1 table (corrective protocol): per (method, split) the foreground F1 with
    the tolerance at the report's click counts, ``{"method", "split", "tolerance", "cells": {"@k": stat}}``;
    empty for results without tolerant scores."""
    cfg = results["config"]
    rows = []
    for method, entry in results["summary"].get("corrective", {}).items():
        for split in ("interactive", "transfer"):
            cells, tol = {}, None
            for k in cfg["report_at"]:
                if k > cfg["budget"]:
                    continue
                st = entry["curve"].get(split, {}).get(str(k))
                if st and "fg_f1_tol" in st:
                    cells[f"@{k}"], tol = st["fg_f1_tol"], st.get("tolerance_px", tol)
            if cells:
                rows.append({"method": method, "split": split, "tolerance": tol, "cells": cells})
    return rows


def _noc_fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.2f}"
    if stat.get("n", 0) > 1:
        text += f" ±{stat['std']:.2f}"
    return text


def table_rows(results: dict) -> list[dict]:
    """Rows of the summary tables: one per (protocol, method, split) with formatted cells."""
    s = results["summary"]
    cfg = results["config"]
    rows = []
    for method, table in s.get("random", {}).items():
        for split in ("interactive", "transfer"):
            cells = {}
            for n in sorted(set(cfg["clicks"])):
                st = table.get(split, {}).get(str(n))
                cells[f"{n}/class"] = (st["miou"], st["fg_iou"]) if st else (None, None)
            if any(v[0] for v in cells.values()):
                rows.append({"protocol": "random", "method": method, "split": split, "cells": cells})
    for method, entry in s.get("corrective", {}).items():
        for split in ("interactive", "transfer"):
            cells = {}
            for k in cfg["report_at"]:
                if k > cfg["budget"]:
                    continue
                st = entry["curve"].get(split, {}).get(str(k))
                cells[f"@{k}"] = (st["miou"], st["fg_iou"]) if st else (None, None)
            row = {"protocol": "corrective", "method": method, "split": split, "cells": cells}
            if split == "interactive":
                row["noc"] = entry["noc"]
            if any(v[0] for v in cells.values()) or split == "interactive":
                rows.append(row)
    return rows


def print_tables(results: dict, console=None) -> None:
    """Readable tables on the terminal (rich): mIoU and the defect-class IoU, mean ± sd over seeds."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    ds = results["dataset"]
    cfg = results["config"]
    seeds = cfg["seeds"]
    fg = _fg_label(results)
    rows = table_rows(results)
    split_info = results.get("splits", {})
    first = next(iter(split_info.values()), {"train": [], "test": []})
    console.print(
        f"[bold]{ds['name']}[/]: {ds['n_images']} images, classes {', '.join(ds['classes'])}; "
        f"{len(first['train'])} training image(s) per seed, {len(first['test'])} held-out; "
        f"seeds {', '.join(map(str, seeds))}. Cells: mIoU / {fg}, mean ± sd over seeds."
    )
    for protocol, title in (("random", "Random clicks (N per class per image)"),
                            ("corrective", f"Corrective clicks (per image, budget {cfg['budget']})")):
        prow = [r for r in rows if r["protocol"] == protocol]
        if not prow:
            continue
        table = Table(title=title, show_lines=False)
        table.add_column("method")
        table.add_column("split")
        cols = list(prow[0]["cells"])
        for c in cols:
            table.add_column(c, justify="right")
        nocs = list(prow[0].get("noc", {})) if protocol == "corrective" else []
        for t in nocs:
            table.add_column(f"NoC@{t}", justify="right")
        for r in prow:
            cells = [f"{_fmt(m)}\n{_fmt(f)}" for m, f in (r["cells"][c] for c in cols)]
            noc_cells = [_noc_fmt(r["noc"][t]) if "noc" in r else "" for t in nocs]
            table.add_row(r["method"], r["split"], *cells, *noc_cells)
        console.print(table)
    tol_rows = tolerant_rows(results)
    if tol_rows:
        table = Table(title=f"{fg.replace(' IoU', '')} F1 within {tol_rows[0]['tolerance']:g} px")
        table.add_column("method")
        table.add_column("split")
        cols = list(tol_rows[0]["cells"])
        for c in cols:
            table.add_column(c, justify="right")
        for r in tol_rows:
            table.add_row(r["method"], r["split"], *[_fmt(r["cells"].get(c)) for c in cols])
        console.print(table)
    timings = results.get("timings", {})
    if timings:
        parts = []
        for m, t in timings.items():
            fit = f"{t['fit_ms_mean']:.0f} ms/fit" if t.get("fit_ms_mean") is not None else "–"
            pred = f"{t['predict_ms_per_mp']:.0f} ms/MP predict" if t.get("predict_ms_per_mp") is not None else "–"
            feats = (f"features {t['features_ms_per_mp']:.0f} ms/MP, " if t.get("features_ms_per_mp") is not None
                     else "")
            parts.append(f"{m}: {t['wall_s']:.1f} s ({feats}{fit}, {pred})")
        console.print("Time: " + "; ".join(parts))


def _sanitize(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _sanitize(obj.item())
        except (TypeError, ValueError):
            pass
    return obj


def write_json(results: dict, path: str | Path) -> Path:
    """Write the full results (config, splits, every run, summary); NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_sanitize(results), indent=1, allow_nan=False))
    return path


def csv_rows(results: dict) -> list[dict]:
    """Long-format rows: one value per (method, protocol, split, clicks, seed, metric); seed "mean"/"std"
    rows hold the spread over seeds."""
    ds = results["dataset"]["name"]
    rows = []

    def emit(method, protocol, split, clicks, seed, metrics: dict):
        for metric, value in metrics.items():
            rows.append({"dataset": ds, "method": method, "protocol": protocol, "split": split,
                         "clicks": clicks, "seed": seed, "metric": metric, "value": value})

    def flat(entry):
        d = {"miou": entry["miou"], "fg_iou": entry["fg_iou"]}
        d.update({f"iou:{k}": v for k, v in entry["iou"].items()})
        d.update({k: entry[k] for k in TOLERANT_KEYS if k in entry})
        return d

    for r in results["runs"]:
        if r["protocol"] == "random":
            for p in r["points"]:
                for split in ("interactive", "transfer"):
                    if p[split]:
                        emit(r["method"], "random", split, p["clicks"], r["seed"], flat(p[split]))
        else:
            for c in r["curve"]:
                for split in ("interactive", "transfer"):
                    if c[split]:
                        emit(r["method"], "corrective", split, c["clicks"], r["seed"], flat(c[split]))
            emit(r["method"], "corrective", "interactive", "", r["seed"], {f"noc@{t}": v for t, v in r["noc"].items()})
    s = results["summary"]
    for method, table in s.get("random", {}).items():
        for split, per_n in table.items():
            for n, st in per_n.items():
                for agg in ("mean", "std"):
                    emit(method, "random", split, int(n), agg, _agg(st, agg))
    for method, entry in s.get("corrective", {}).items():
        for split, per_k in entry["curve"].items():
            for k, st in per_k.items():
                for agg in ("mean", "std"):
                    emit(method, "corrective", split, int(k), agg, _agg(st, agg))
        for agg in ("mean", "std"):
            emit(method, "corrective", "interactive", "", agg, {f"noc@{t}": v[agg] for t, v in entry["noc"].items()})
    return rows


def _agg(st: dict, agg: str) -> dict:
    d = {"miou": st["miou"][agg], "fg_iou": st["fg_iou"][agg]}
    d.update({f"iou:{k}": v[agg] for k, v in st["iou"].items()})
    d.update({k: st[k][agg] for k in TOLERANT_KEYS if k in st})
    return d


def write_csv(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = csv_rows(results)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["dataset", "method", "protocol", "split", "clicks", "seed", "metric", "value"])
        writer.writeheader()
        for row in rows:
            v = row["value"]
            row["value"] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"
            writer.writerow(row)
    return path


def plot_curves(results: dict, path: str | Path, metric: str = "miou", dpi: int = 80) -> Path:
    """PNG of ``metric`` against clicks, one line per method: a panel per (protocol, split) present;
    shaded band = ± one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    s = results["summary"]
    panels = []
    for protocol in ("random", "corrective"):
        for split in ("interactive", "transfer"):
            series = {}
            for method, entry in s.get(protocol, {}).items():
                per = entry.get(split, {}) if protocol == "random" else entry["curve"].get(split, {})
                pts = sorted((int(k), st[metric]["mean"], st[metric]["std"] or 0.0)
                             for k, st in per.items() if st[metric]["mean"] is not None)
                if pts:
                    series[method] = pts
            if series:
                panels.append((protocol, split, series))
    if not panels:
        raise ValueError("nothing to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    methods = list(results.get("methods", {})) or sorted({m for _, _, se in panels for m in se})
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    label = "mIoU" if metric == "miou" else _fg_label(results)
    for ax, (protocol, split, series) in zip(axes[0], panels):
        for method, pts in series.items():
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            sd = [p[2] for p in pts]
            ax.plot(xs, ys, marker="o" if len(xs) <= 8 else None, ms=3, lw=1.5, label=method,
                    color=colors.get(method))
            ax.fill_between(xs, [y - d for y, d in zip(ys, sd)], [y + d for y, d in zip(ys, sd)],
                            color=colors.get(method), alpha=0.15, lw=0)
        ax.set_title(f"{protocol} · {split}", fontsize=9)
        ax.set_xlabel("clicks per class per image" if protocol == "random" else "clicks per image", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    top = max(ax.get_ylim()[1] for ax in axes[0])
    for ax in axes[0]:
        ax.set_ylim(0, 1 if metric == "miou" else min(1.0, top))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.suptitle(f"{results['dataset']['name']}: {label} vs clicks (mean ± sd over seeds)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def markdown_tables(results: dict) -> str:
    """The summary as Markdown (for BENCHMARKS.md): cells "mIoU / defect IoU", mean ± sd over seeds."""
    rows = table_rows(results)
    out = []
    fg = _fg_label(results)
    for protocol in ("random", "corrective"):
        prow = [r for r in rows if r["protocol"] == protocol]
        if not prow:
            continue
        cols = list(prow[0]["cells"])
        nocs = list(prow[0].get("noc", {})) if protocol == "corrective" else []
        head = ["method", "split"] + [f"{c}" for c in cols] + [f"NoC@{t}" for t in nocs]
        out.append(f"*{protocol} clicks — mIoU / {fg}*\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in prow:
            cells = [f"{_fmt(m, 3, False)} / {_fmt(f, 3, False)}" for m, f in (r["cells"][c] for c in cols)]
            noc_cells = [_noc_fmt(r["noc"][t]) if "noc" in r else "" for t in nocs]
            out.append("| " + " | ".join([r["method"], r["split"], *cells, *noc_cells]) + " |")
        out.append("")
    tol_rows = tolerant_rows(results)
    if tol_rows:
        cols = list(tol_rows[0]["cells"])
        out.append(f"*corrective clicks — {fg.replace(' IoU', '')} F1 within {tol_rows[0]['tolerance']:g} px*\n")
        out.append("| " + " | ".join(["method", "split", *cols]) + " |")
        out.append("|" + "---|" * (len(cols) + 2))
        for r in tol_rows:
            out.append("| " + " | ".join([r["method"], r["split"], *[_fmt(r["cells"].get(c), 3, False) for c in cols]]) + " |")
        out.append("")
    return "\n".join(out)

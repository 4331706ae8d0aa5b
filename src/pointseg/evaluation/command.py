"""``pointseg evaluate``: measure accuracy per click with a simulated user, side by side with the anchors."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Protocol(str, Enum):
    random = "random"
    corrective = "corrective"
    both = "both"
    parts = "parts"
    folder = "folder"


_METHOD_HELP = "Method to evaluate (repeat to compare; default: default). See the methods above."


def _ints(text: str, what: str) -> tuple[int, ...]:
    from pointseg.errors import PointsegError

    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            try:
                out.extend(range(int(a), int(b) + 1))
            except ValueError:
                raise PointsegError(f"{what}: {part!r} is not a range like 0-4") from None
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise PointsegError(f"{what}: {part!r} is not an integer; write e.g. 0,1,2") from None
    if not out:
        raise PointsegError(f"{what} is empty")
    return tuple(out)


def _dataset_and_options(kw: dict):
    """The dataset and the method options both protocols share (``-o key=value`` plus the named flags)."""
    from .datasets import load_dataset
    from .methods import parse_options

    dataset = load_dataset(kw["dataset_dir"], max_megapixels=kw["max_megapixels"])
    options = parse_options(kw["option"])
    for key in ("backbone", "precision", "tile_size", "C"):
        if kw[key] is not None:
            options[key] = kw[key]
    return dataset, options


def evaluate_command(
    dataset_dir: Annotated[Path, typer.Argument(
        help="Dataset folder: images/, masks/ (same stems, uint8 class ids, 255 = ignore), classes.json, "
             "optional meta.json with ignore_index.", show_default=False)],
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help=_METHOD_HELP, show_default=False)] = None,
    protocol: Annotated[Protocol, typer.Option(
        help="random (N clicks per class drawn 2 px inside the class), corrective (NoC protocol: click the "
             "deepest point of the largest error, retrain after each click) or both; parts: per-part OK/NG "
             "decisions (corrective clicks on --train-images defective images + --ok-images clean ones marked OK; "
             "false alarms, misses and AUROC on held-out parts including clean ones); folder: a user working "
             "through a folder (--per-image clicks per image, then the next image at random or by pointseg's "
             "ranking, up to --budget clicks in all; held-out IoU against total clicks).")] = Protocol.both,
    train_images: Annotated[int, typer.Option(
        "--train-images", "-k", help="Training images drawn per seed (among images showing >= 2 classes).")] = 3,
    train: Annotated[Optional[list[str]], typer.Option(
        "--train", help="Use these image stems for training (repeat; overrides --train-images).",
        show_default=False)] = None,
    test: Annotated[Optional[int], typer.Option(
        "--test", "-n", help="Held-out images, evenly spaced over the dataset (same for every seed); "
                             "default: every image not used for training.", show_default=False)] = None,
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0,1,2 or 0-4; mean and spread are over seeds.")] = "0,1,2",
    clicks: Annotated[str, typer.Option(help="Random protocol: clicks per class per image (nested).")] = "2,5,10,20",
    budget: Annotated[int, typer.Option(
        help="Corrective and parts protocols: click budget per training image; folder protocol: total clicks.")] = 20,
    transfer_at: Annotated[str, typer.Option(
        "--transfer-at", help="Corrective protocol: clicks per image at which held-out images are scored "
                              "(comma list, or 'all' for every click).")] = "5,10,20",
    margin: Annotated[int, typer.Option(help="Random clicks keep this many px away from class boundaries.")] = 2,
    ok_images: Annotated[str, typer.Option(
        "--ok-images", help="Parts protocol: clean images marked OK per seed, one condition per value.")] = "3,0",
    per_image: Annotated[int, typer.Option(
        "--per-image", help="Folder protocol: corrective clicks on an image before moving to the next.")] = 5,
    candidates: Annotated[int, typer.Option(
        help="Folder protocol: folder images the user may move to (evenly spaced among those not held out; "
             "0 = all).")] = 30,
    order: Annotated[str, typer.Option(
        help="Folder protocol: the order(s) compared: both (random and ranking), random, ranking (pointseg's "
             "default ranking, committee), or a comma list of random and ranking kinds "
             "(committee, committee_diverse, uncertainty, margin, rare_class, diversity, dense_uncertainty, "
             "uncertain_diverse).")] = "both",
    backbone: Annotated[Optional[str], typer.Option(
        help="Backbone for the 'default' method (and any Segmenter option not set by a spec).",
        show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option(
        help="Backbone weights file (resnet*; POINTSEG_WEIGHTS_DIR is also searched).", show_default=False)] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto or fp32.", show_default=False)] = None,
    tile_size: Annotated[Optional[int], typer.Option("--tile-size", show_default=False)] = None,
    C: Annotated[Optional[float], typer.Option("--C", help="Logistic regression C.", show_default=False)] = None,
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", "-o", help="Any other Segmenter option as KEY=VALUE (repeatable).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all results as JSON.",
                                                     show_default=False)] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write long-format CSV.", show_default=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write a PNG of mIoU against clicks, one line per method.", show_default=False)] = None,
    cache_mb: Annotated[int, typer.Option("--cache-mb", help="Feature cache size (MB), shared by all methods.")] = 3000,
    max_megapixels: Annotated[Optional[float], typer.Option(
        "--max-megapixels", help="Downscale larger images (and masks) to this size; default: never.",
        show_default=False)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Evaluate methods on DATASET_DIR with a simulated user: mIoU and defect IoU on the clicked images
    (interactive) and on held-out images (transfer), NoC@80/85/90, mean and spread over seeds.

    Methods (-m, all see the same clicks): default | seed (resnet18 layers 1-3 + logistic regression, the
    reference) | skimage-rf (scikit-image filter bank + random forest) | BACKBONE (e.g. resnet18) |
    BACKBONE-rf or default-rf (deep features + random forest). Add Segmenter options and a label per method:
    -m 'default:C=0.5,tile_size=512@C0.5'.

    Example: pointseg evaluate ../shared/datasets/crackforest -m default -m seed -m skimage-rf
    --protocol corrective --test 10 --json out.json --plot out.png
    """
    params = dict(locals())
    from pointseg.errors import PointsegError

    try:
        _run(**params)
    except PointsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(**kw) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pointseg.errors import PointsegError

    from .methods import build_method, parse_method_spec
    from .report import plot_curves, print_tables, write_csv, write_json
    from .runner import EvalConfig, evaluate, progress_units

    protocol = getattr(kw["protocol"], "value", kw["protocol"])
    if protocol == "parts":
        return _run_parts(kw)
    if protocol == "folder":
        return _run_folder(kw)
    protocols = {"both": ("random", "corrective"), "random": ("random",), "corrective": ("corrective",)}.get(protocol)
    if protocols is None:
        raise PointsegError(f"--protocol {protocol!r}: use random, corrective or both")
    transfer_at = None if kw["transfer_at"].strip().lower() == "all" else _ints(kw["transfer_at"], "--transfer-at")
    config = EvalConfig(
        protocols=protocols,
        seeds=_ints(kw["seeds"], "--seeds"),
        train_images=kw["train_images"],
        train_stems=tuple(kw["train"]) if kw["train"] else None,
        test=kw["test"],
        clicks=_ints(kw["clicks"], "--clicks"),
        budget=kw["budget"],
        margin=kw["margin"],
        transfer_at=transfer_at,
    )
    config.check()
    dataset, options = _dataset_and_options(kw)
    specs = [parse_method_spec(m) for m in (kw["method"] or ["default"])]
    cache = None
    if any(s.base != "skimage-rf" for s in specs):
        from pointseg import FeatureCache

        cache = FeatureCache(max_bytes=int(kw["cache_mb"]) * 1_000_000)
    weights = str(kw["weights"]) if kw["weights"] else None
    methods = [build_method(s, dataset.classes, options=options, weights=weights, cache=cache) for s in specs]

    out = Console()
    if kw["progress"]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("loading", total=progress_units(config, len(methods)))

            def on_progress(advance, description):
                bar.update(task, advance=advance, description=description)

            results = evaluate(dataset, methods, config, on_progress=on_progress)
    else:
        results = evaluate(dataset, methods, config)

    print_tables(results, out)
    if kw["json_out"]:
        out.print(f"JSON: {write_json(results, kw['json_out'])}")
    if kw["csv_out"]:
        out.print(f"CSV: {write_csv(results, kw['csv_out'])}")
    if kw["plot"]:
        out.print(f"plot: {plot_curves(results, kw['plot'])}")


def _run_parts(kw) -> None:
    """``--protocol parts``: the per-part protocol (:mod:`pointseg.evaluation.parts`)."""
    import json

    from rich.console import Console

    from .parts import PartsConfig, markdown_parts, run_parts

    config = PartsConfig(seeds=_ints(kw["seeds"], "--seeds"), defective=kw["train_images"],
                         ok_images=_ints(kw["ok_images"], "--ok-images"), budget=kw["budget"], test=kw["test"])
    config.check()
    dataset, options = _dataset_and_options(kw)
    factories = _segmenter_factories(kw, dataset, options, "parts")
    result = run_parts(dataset, factories, config)
    out = Console()
    out.print(markdown_parts(result), markup=False, highlight=False, soft_wrap=True)
    if kw["json_out"]:
        kw["json_out"].write_text(json.dumps(result, indent=1))
        out.print(f"JSON: {kw['json_out']}")


def _segmenter_factories(kw, dataset, options, protocol: str) -> dict:
    """Method name -> a factory of fresh logistic pointseg Segmenters sharing one feature cache (the parts
    and folder protocols refit and predict through the Segmenter itself, so anchors cannot take part)."""
    from pointseg import FeatureCache
    from pointseg.errors import PointsegError

    from .methods import SegmenterMethod, build_method, parse_method_spec

    cache = FeatureCache(max_bytes=int(kw["cache_mb"]) * 1_000_000)
    weights = str(kw["weights"]) if kw["weights"] else None
    factories = {}
    for spec in (parse_method_spec(m) for m in (kw["method"] or ["default"])):
        method = build_method(spec, dataset.classes, options=options, weights=weights, cache=cache)
        if not isinstance(method, SegmenterMethod) or method.segmenter.classifier != "logistic":
            raise PointsegError(f"--method {spec.text}: the {protocol} protocol needs a logistic pointseg Segmenter")
        seg = method.segmenter
        factories[method.name] = lambda seg=seg: type(seg)(**seg.get_params(), cache=cache)
    return factories


def folder_orders(text: str) -> tuple[str, ...]:
    """``--order``: both | random | ranking | a comma list of orders (:data:`pointseg.evaluation.folder.ORDERS`)."""
    from pointseg.decision import DEFAULT_RANKING
    from pointseg.errors import PointsegError

    from .folder import ORDERS

    names = {"both": ("random", DEFAULT_RANKING), "ranking": (DEFAULT_RANKING,)}
    out: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        for name in names.get(part, (part,)):
            if name not in ORDERS:
                raise PointsegError(f"--order {part!r}: use both, random, ranking or a comma list of "
                                    f"{', '.join(ORDERS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise PointsegError("--order is empty; use both, random or ranking")
    return tuple(out)


def _run_folder(kw) -> None:
    """``--protocol folder``: which image next (:mod:`pointseg.evaluation.folder`), per method."""
    import json

    from rich.console import Console

    from pointseg.fileio import atomic_write_bytes

    from .folder import FolderConfig, markdown_folder, run_folder

    config = FolderConfig(seeds=_ints(kw["seeds"], "--seeds"), orders=folder_orders(kw["order"]),
                          per_image=kw["per_image"], budget=kw["budget"],
                          test=kw["test"] if kw["test"] is not None else FolderConfig.test,
                          candidates=kw["candidates"] or None)
    config.check()
    dataset, options = _dataset_and_options(kw)
    factories = _segmenter_factories(kw, dataset, options, "folder")
    out, err = Console(), Console(stderr=True)
    results = {}
    for name, make in factories.items():
        progress = (lambda d: err.print(d, highlight=False)) if kw["progress"] else None
        results[name] = run_folder(dataset, lambda make=make: make().set_params(cross_validate=False), config,
                                   on_progress=progress)
        out.print(f"\n{dataset.name} · {name} · held-out defect IoU (mean ±sd over {len(config.seeds)} seed{'s' * (len(config.seeds) != 1)}) "
                  f"against total clicks", markup=False, highlight=False, soft_wrap=True)
        out.print(markdown_folder(results[name]), markup=False, highlight=False, soft_wrap=True)
    if kw["json_out"]:
        payload = {"protocol": "folder", "dataset": dataset.name, "methods": results}
        atomic_write_bytes(Path(kw["json_out"]), json.dumps(payload, indent=1).encode())
        out.print(f"JSON: {kw['json_out']}")

"""The ``pointseg`` command line: thin wrappers over the library's public API."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from pointseg.fileio import atomic_write_bytes
from pointseg.errors import OutputError, PointsegError
from pointseg.evaluation.command import evaluate_command
from pointseg.server.command import serve_command
from pointseg.deploy.command import export_command, serve_model_command

app = typer.Typer(
    name="pointseg",
    help="Interactive few-shot semantic segmentation: click a few points per class, label every pixel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

WeightsOption = Annotated[
    Optional[Path],
    typer.Option("--weights", help="Backbone weights file or folder (needed for resnet*; see `pointseg info`)."),
]


MinRegionOption = Annotated[Optional[int], typer.Option(
    "--min-region", min=0,
    help="Relabel predicted regions smaller than this many pixels with the class around them (0 = off; "
         "predict: overrides the model's setting).")]


class ProbabilityFormat(str, Enum):
    npy = "npy"
    tiff = "tiff"


@app.command()
def train(
    annotations: Annotated[Path, typer.Argument(help="Annotation JSON: classes and per-image points/scribbles.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (.pointseg).")],
    backbone: Annotated[Optional[str], typer.Option(help="Feature backbone (default: the default preset's).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Named configuration, e.g. 'seed' (ResNet-18, the reference).")] = None,
    weights: WeightsOption = None,
    c: Annotated[Optional[float], typer.Option("--C", help="Inverse regularisation strength of the logistic regression.")] = None,
    download: Annotated[bool, typer.Option(help="Download missing torchvision weights (needs internet).")] = False,
    min_region: MinRegionOption = None,
    ng_rule: Annotated[str, typer.Option("--ng-rule", help="Image score the learned OK/NG rule thresholds: largest_region (area of the largest defect region, px), quantile (99.9th percentile of the defect probability; not for images predicted in tiles) or anomaly (how unlike the OK images the most unusual spot is; also flags defect types no click showed; not exportable to ONNX).")] = "largest_region",
    context_upscale: Annotated[Optional[str], typer.Option(
        help="The stride-32 context sees images enlarged by 1, 2 or 4, or 'size' (the default): x4 when the "
             "training images are smaller than its receptive field (~258 px; helped NEU-Seg and magnetic "
             "tiles, costs extraction time on them); 1 turns it off.")] = None,
) -> None:
    """Train a model on annotated images and print the training report."""
    from pointseg.annotations import AnnotationSet
    from pointseg.presets import preset_params
    from pointseg.segmenter import Segmenter

    ann = AnnotationSet.load(annotations)
    _output_file(output)  # before training: minutes of work must not end in "cannot write"
    params = preset_params(preset or "default")
    if backbone:
        params["backbone"] = backbone
    if c is not None:
        params["C"] = c
    if min_region is not None:
        params["min_region"] = min_region
    if context_upscale is not None:
        params["context_upscale"] = int(context_upscale) if context_upscale.isdigit() else context_upscale
    from pointseg.segmenter import check_ng_rule

    check_ng_rule(ng_rule)   # a user error before minutes of feature extraction
    seg = Segmenter(**params, classes=ann.classes, colors=ann.colors, weights=weights, download=download,
                    ng_rule=ng_rule)
    images = [img.path for img in ann.images]
    with console.status(f"extracting {params['backbone']} features of {len(images)} image(s) and training…"):
        seg.fit(images, [img.points for img in ann.images], [img.scribbles for img in ann.images],
                ok=[img.ok for img in ann.images])
    seg.save(output)
    _print_report(seg)
    console.print(f"model written to [bold]{output}[/bold]")


def _output_folder(path: Path, option: str = "--output") -> Path:
    """Create the output folder (or accept an existing one) and prove it writable, before any work starts."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a folder (it is created if missing)")
    _make_folder(path, option, path)
    _probe_writable(path, option)
    return path


def _output_file(path: Path, option: str = "--output") -> Path:
    """Check that ``path`` can be written as a file (not a folder, its folder writable) before any work starts."""
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name, e.g. {path / 'model.pointseg'}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
    _make_folder(parent, option, path)
    _probe_writable(parent, option, target=path)
    return path


def _make_folder(folder: Path, option: str, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option} {target}: cannot create the folder {folder} ({exc.strerror}); "
                          "choose another path", exc.errno) from None


def _probe_writable(folder: Path, option: str, target: Path | None = None) -> None:
    """Write and remove a tiny file in ``folder``: the one test that permissions, read-only mounts and
    special file systems (``/proc``) cannot fool, unlike :func:`os.access` (which says yes to root)."""
    import os

    probe = folder / f".pointseg-write-test-{os.getpid()}"  # per process: two runs may share a folder
    try:
        atomic_write_bytes(probe, b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        reason = exc.message.split(": ", 1)[-1] if isinstance(exc, OutputError) else exc.strerror
        raise OutputError(f"{option} {target or folder}: cannot write in {folder}: {reason}", exc.errno) from None


def _print_report(seg) -> None:
    from rich.table import Table

    r = seg.training_report_
    table = Table(title="training report", show_header=True)
    table.add_column("class")
    table.add_column("points", justify="right")
    table.add_column("accuracy on its points", justify="right")
    for name in seg.classes_:
        acc = r.per_class_accuracy.get(name)
        table.add_row(name, str(r.points_per_class[name]), "-" if acc is None else f"{acc:.1%}")
    Console().print(table)
    Console().print(r.summary(), markup=False, highlight=False)
    Console().print(f"OK/NG rule: {seg.ng_rule_.describe()}", markup=False, highlight=False)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model file from `pointseg train` (path or URL).")],
    inputs: Annotated[list[str], typer.Argument(
        help="Images, folders, globs, @list.txt (one path or URL a line), fsspec URLs; zarr / OME-Zarr / TIFF "
             "images above --tile-above pixels are predicted in tiles.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder (path or URL) for labels, summary.csv and the manifest.")],
    overlay: Annotated[bool, typer.Option(help="Also write <name>_overlay.png.")] = False,
    probabilities: Annotated[Optional[ProbabilityFormat], typer.Option(help="Also write float16 probabilities (npy or tiff).")] = None,
    ng_area: Annotated[Optional[float], typer.Option("--ng-area", help="Mark an image NG when more than this fraction of it is not the background class (overrides the model's NG rule).")] = None,
    ng_rule: Annotated[Optional[str], typer.Option("--ng-rule", help="Override the model's learned OK/NG rule: SCORE:THRESHOLD, e.g. largest_region:300 (px), quantile:0.9 or anomaly:25 (models trained with --ng-rule anomaly); 'any' = NG when any region is found.")] = None,
    weights: WeightsOption = None,
    min_region: MinRegionOption = None,
    workers: Annotated[Optional[str], typer.Option(
        "--workers", help="Run on a local Dask cluster of N single-threaded worker processes ('auto': one per core).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Run on an existing Dask cluster, e.g. tcp://host:8786.")] = None,
    scheduler_file: Annotated[Optional[str], typer.Option(
        "--scheduler-file", help="Run on the Dask cluster described by this scheduler file (dask-jobqueue, dask-mpi).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also take images in sub-folders.")] = False,
    resume: Annotated[bool, typer.Option(help="Skip images an earlier run into OUT finished with the same model and options.")] = False,
    channels: Annotated[Optional[str], typer.Option(
        help="Channels of zarr / OME-Zarr / TIFF images to use, e.g. 0,1,2 or 1 (default: all of 1, 3 or 4).")] = None,
    tile_above: Annotated[int, typer.Option(
        "--tile-above", min=1, help="Predict zarr / OME-Zarr / TIFF images above this many pixels as tile tasks.")] = 16_000_000,
    engine: Annotated[Optional[str], typer.Option(help="torch: the library path, all PyTorch; onnxruntime or "
                      "openvino: the model exported to one ONNX graph (once, cached). Default: the library path "
                      "with its backbone on the fastest installed engine.")] = None,
) -> None:
    """Label every pixel of new images with a trained model, here or on a Dask cluster."""
    from pointseg.batch.command import run_predict

    if "://" not in str(output):
        _output_folder(Path(output))  # a local folder is proved writable before any work starts
    code = run_predict(
        model, inputs, output, overlay=overlay, probabilities=probabilities.value if probabilities else None,
        ng_area=ng_area, ng_rule=ng_rule, weights=weights, min_region=min_region, workers=workers,
        scheduler=scheduler,
        scheduler_file=scheduler_file, recursive=recursive, resume=resume, channels=channels,
        tile_above=tile_above, engine=engine, console=console,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the demo's outputs.")] = Path("demo-output"),
    backbone: Annotated[Optional[str], typer.Option(help="Feature backbone (default: the default preset's).")] = None,
    weights: WeightsOption = None,
) -> None:
    """Run the whole job on a built-in example (a tissue image from scikit-image; no download)."""
    from pointseg.demo import DEMO_POINTS, run_demo

    _output_folder(output)
    with console.status("training on the demo clicks and labelling the image…"):
        result = run_demo(output, backbone=backbone, weights=weights)
    console.print(f"{len(DEMO_POINTS)} clicks → {result['report'].summary()}", markup=False, highlight=False)
    for name, path in result["paths"].items():
        console.print(f"  {name:8s} {path}")


@app.command()
def info() -> None:
    """Backbones, where their weights were found, and the device and precision in use."""
    import torch
    from rich.table import Table

    from pointseg import __version__
    from pointseg.backbones import available_backbones, get_spec
    from pointseg.backbones.weights import resolve_weights
    from pointseg.features import resolve_device, resolve_precision
    from pointseg.presets import DEFAULT_BACKBONE

    device = resolve_device(None)
    out = Console()
    out.print(f"pointseg {__version__}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    out.print(f"device: {device}; precision: {resolve_precision('auto', device)} (auto)")
    table = Table(show_header=True)
    missing: list[str] = []
    for col in ("backbone", "channels", "weights", "found via"):
        table.add_column(col)
    for name in available_backbones():
        spec = get_spec(name)
        try:
            source = resolve_weights(spec)
            where, how = str(source.path), source.how
        except PointsegError as exc:
            where, how = "[red]not found[/red] (see below)", "-"
            missing.append(str(exc))
        label = name + (" (default)" if name == DEFAULT_BACKBONE else "") + (" (seed)" if name == "resnet18" else "")
        table.add_row(label, str(spec.channels), where, how)
    out.print(table)
    for message in missing:
        out.print(f"- {message}", highlight=False, markup=False)


app.command("serve")(serve_command)
app.command("export")(export_command)
app.command("serve-model")(serve_model_command)
app.command("evaluate")(evaluate_command)


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2, never a traceback.

    User errors are pointseg's own (:class:`PointsegError`), the command line's (an unknown option, a value
    out of range: click's usage errors, shortened to one line) and the machine's (:class:`OSError`: a disk
    full or read-only, a file that vanished).
    """
    click = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # `pointseg` alone: the help, as usual
        code = exc.exit_code
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "pointseg"
        _error_line(f"{exc.format_message()} (see `{command} --help`)")
        code = 2
    except typer.Abort:
        console.print("aborted", highlight=False)
        code = 130
    except PointsegError as exc:
        _error_line(str(exc))
        code = 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _error_line(f"{exc.strerror or exc}{where}; check the disk and the paths given")
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions():
    try:
        from typer._click import exceptions  # typer >= 0.25 ships its own copy of click
    except ImportError:
        from click import exceptions
    return exceptions


def _error_line(message: str) -> None:
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())), highlight=False,
                  soft_wrap=True)


if __name__ == "__main__":
    main()

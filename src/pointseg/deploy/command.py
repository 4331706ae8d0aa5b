"""``pointseg export`` and ``pointseg serve-model``: thin commands over :mod:`pointseg.deploy`."""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pointseg.errors import PointsegError


def export_command(
    model: Annotated[Path, typer.Argument(help="Model file from `pointseg train` (.pointseg).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write (.onnx).")],
    weights: Annotated[Optional[Path], typer.Option(help="Backbone weights file or folder (resnet*).")] = None,
    check_image: Annotated[Optional[Path], typer.Option(
        help="Image to check the graph on (default: a built-in tissue crop).")] = None,
) -> None:
    """Export MODEL as one ONNX graph (uint8 images → probabilities and labels), checked against PyTorch."""
    from pointseg.deploy.export import LABEL_AGREEMENT, PROBA_ATOL, export_model

    image = None
    if check_image is not None:
        from pointseg.imageio import read_image

        image = read_image(check_image)
    meta = export_model(model, output, weights=weights, test_image=image)
    check = meta["export_check"]
    typer.echo(f"{output} written: {len(meta['classes'])} classes, {meta['backbone']}, opset {meta['opset']}; "
               f"check on a {check['image_size'][1]}x{check['image_size'][0]} image: labels equal on "
               f"{check['label_agreement']:.4%} (need {LABEL_AGREEMENT:.1%}), probabilities within "
               f"{check['proba_max_abs_diff']:.1e} (allowed {PROBA_ATOL:g})", err=True)


def serve_model_command(
    model: Annotated[Path, typer.Argument(metavar="MODEL_OR_ONNX", help="A .pointseg model or an exported .onnx.")],
    host: Annotated[str, typer.Option(help="Address to bind; anything but the loopback requires a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8766,
    token: Annotated[Optional[str], typer.Option(help="Access token (generated when binding a non-loopback "
                                                      "address).", envvar="POINTSEG_TOKEN")] = None,
    engine: Annotated[str, typer.Option(help="openvino, onnxruntime or auto.")] = "auto",
    weights: Annotated[Optional[Path], typer.Option(help="Backbone weights (exporting a resnet* model).")] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MB).")] = 64.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Predictions running at once.")] = 1,
    queue: Annotated[int, typer.Option(min=0, help="Requests waiting at most; more get 503.")] = 8,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads of the runtime (default: all).")] = None,
) -> None:
    """Serve MODEL_OR_ONNX for a production line: POST /predict, GET /health, /model, /metrics."""
    import socket

    import uvicorn

    from pointseg.deploy.runtime import Runner
    from pointseg.deploy.service import LOOPBACK, ServiceSettings, create_service

    path = model
    if model.suffix.lower() != ".onnx":
        from pointseg.deploy.export import cached_graph

        typer.echo(f"exporting {model.name} to ONNX (once; cached)…", err=True)
        path = cached_graph(model, weights)
    runner = Runner(path, engine=engine, threads=threads)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise PointsegError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(24)
    settings = ServiceSettings(host=host, token=token, max_body_bytes=int(max_body_mb * 1024 * 1024),
                               max_concurrency=concurrency, max_queue=queue)
    app = create_service(runner, settings)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"pointseg serve-model: {path.name} ({', '.join(runner.classes)}) on {runner.engine}; "
               f"http://{shown}:{port}/predict", err=True)
    if token and host not in LOOPBACK:
        typer.echo(f"token (send as Authorization: Bearer …): {token}", err=True)
    sys.stderr.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    os._exit(0)

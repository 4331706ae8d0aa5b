"""``pointseg serve``: open (or create) a project folder and serve the interactive app."""
from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer


def serve_command(
    project_dir: Annotated[Path, typer.Argument(
        metavar="PROJECT_DIR", help="Project folder (created if missing); holds project.sqlite and caches.")],
    images: Annotated[Optional[list[Path]], typer.Option(
        "--images", "-i", metavar="DIR",
        help="Folder of images to add to the project (by reference; repeatable).")] = None,
    host: Annotated[str, typer.Option(
        help="Address to bind. Anything but the loopback requires an access token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the app in the default browser.")] = False,
    token: Annotated[Optional[str], typer.Option(
        help="Access token for the API (generated and printed when binding a non-loopback address).",
        envvar="POINTSEG_TOKEN")] = None,
    backbone: Annotated[Optional[str], typer.Option(
        help="Feature backbone for a new project (default: pointseg's default). Fixed once chosen.")] = None,
    weights: Annotated[Optional[Path], typer.Option(
        help="Backbone weights file or folder (ResNet backbones).", envvar="POINTSEG_WEIGHTS")] = None,
) -> None:
    """Serve the interactive click → train → correct app for PROJECT_DIR and print its URL.

    In the page: 1–9 pick a class; P, S, E point, scribble, eraser; Ctrl+Z, Ctrl+Shift+Z undo, redo; ← → previous, next image; F fit; G suggest where to click; ? all keys.
    """
    import uvicorn

    from pointseg.errors import PointsegError
    from pointseg.presets import DEFAULT_BACKBONE
    from pointseg.backbones.registry import available_backbones
    from pointseg.server.app import Settings, create_app, register_folder
    from pointseg.server.guards import is_loopback
    from pointseg.server.store import ProjectStore, StoreError, project_lock

    import sqlite3

    err = typer.echo
    if backbone is not None and backbone not in available_backbones():
        err(f"error: unknown backbone {backbone!r}; choose one of: {', '.join(available_backbones())}", err=True)
        raise typer.Exit(2)
    try:
        store = ProjectStore(project_dir)
        lock = project_lock(store.dir)
    except StoreError as exc:
        err(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, sqlite3.Error) as exc:  # a read-only disk or folder, no permission, a full disk
        reason = getattr(exc, "strerror", None) or str(exc)
        err(f"error: cannot open the project {project_dir}: {reason}; pointseg serve writes to its project "
            "folder, so give a writable one (or copy the project to a writable disk)", err=True)
        raise typer.Exit(2) from None

    stored_backbone = store.get_meta("backbone")
    pin_backbone = stored_backbone is None      # pinned once the server runs, not on a failed start
    if stored_backbone is None:
        stored_backbone = backbone or DEFAULT_BACKBONE
    elif backbone and backbone != stored_backbone:
        err(f"error: this project uses the {stored_backbone} backbone (its features and annotations are "
            f"tied to it); start a new project folder to use {backbone}", err=True)
        raise typer.Exit(2)

    for folder in images or []:
        if not folder.is_dir():
            err(f"error: --images {folder} is not a folder", err=True)
            raise typer.Exit(2)
        try:
            added, known, problems = register_folder(store, folder)
        except PointsegError as exc:
            err(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        err(f"{folder}: {added} image(s) added, {known} already in the project")
        for p in problems[:10]:
            err(f"  skipped {p}")

    import socket

    try:  # a clear message now rather than uvicorn's after the model has been loaded
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        err(f"error: cannot listen on {host}:{port} ({exc.strerror}); choose another --port", err=True)
        raise typer.Exit(2) from None

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
    from pointseg import limits

    try:
        max_upload, max_json = limits.max_upload_bytes(), limits.max_json_body_bytes()
    except PointsegError as exc:       # a malformed POINTSEG_MAX_* variable
        err(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = Settings(project_dir=store.dir, host=host, token=token, backbone=stored_backbone,
                        weights=str(weights) if weights else None,
                        max_upload_bytes=max_upload, max_json_bytes=max_json)
    app = create_app(settings, store=store)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    summary = store.summary()
    err(f"pointseg serve: project {store.dir} ({summary['n_images']} images, "
        f"{summary['n_annotations']} annotations, backbone {stored_backbone})")
    err(f"open {url}")
    if token and not is_loopback(host):
        err("the API requires the token above on every request (it is in the URL)")
    sys.stdout.flush()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)

    def _when_started() -> None:
        import time

        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        if pin_backbone:
            store.set_meta("backbone", stored_backbone)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
    threading.Thread(target=_when_started, daemon=True).start()
    code = 0
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful shutdown
        pass
    except SystemExit as exc:  # uvicorn exits this way when it cannot start
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        store.close()
        lock.close()
    # Everything is committed and closed. Skip the interpreter's teardown of torch and the worker threads,
    # which takes seconds on a busy machine, has nothing left to save, and can abort in torch's C++.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

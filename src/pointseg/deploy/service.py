"""``pointseg serve-model``: the inspection service for a production line, over a torch-free :class:`Runner`.

Endpoints: ``POST /predict`` (one image as the request body, or several as multipart ``images`` fields:
a batch), ``GET /health``, ``GET /model``, ``GET /metrics`` (Prometheus text). Like ``pointseg serve`` it
listens on the loopback by default and requires a token on any other address (``Authorization: Bearer``
or ``?token=``). Request bodies are counted as they arrive and cut off at ``max_body_bytes`` (413); at most
``max_concurrency`` predictions run at once and ``max_queue`` wait, the rest get 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pointseg.errors import ImageError, PointsegError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ServiceSettings:
    host: str = "127.0.0.1"
    token: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_batch: int = 32
    max_concurrency: int = 1
    max_queue: int = 8


class BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """ASGI middleware: counts request body bytes as they arrive and stops at the limit (no full read first)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over {limit} bytes; send smaller or fewer images "
                                   "(or start the service with a larger --max-body-mb)"}, status_code=413)


class _Metrics:
    """Prometheus metrics in a registry of this app's own (two services in one process do not mix)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("pointseg_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.images = Counter("pointseg_images", "images predicted", registry=self.registry)
        self.ng = Counter("pointseg_ng", "images decided NG", registry=self.registry)
        self.latency = Histogram("pointseg_predict_seconds", "latency of POST /predict (whole request)",
                                 buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
                                 registry=self.registry)


def create_service(runner, settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``runner`` (a :class:`pointseg.deploy.runtime.Runner`)."""
    settings = settings or ServiceSettings()
    if settings.host not in LOOPBACK and not settings.token:
        raise PointsegError("serving on a non-loopback address needs an access token")
    metrics = _Metrics()
    slots = asyncio.Semaphore(settings.max_concurrency)
    waiting = {"n": 0}
    app = FastAPI(title="pointseg inspection service", version=str(runner.metadata.get("pointseg_version")))

    def authorised(request: Request) -> None:
        if not settings.token:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
            request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong token; send Authorization: Bearer <token>")

    @app.exception_handler(ImageError)
    async def _bad_image(request, exc):
        metrics.requests.labels(request.url.path, "400").inc()
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/health", dependencies=[Depends(authorised)])
    def health() -> dict:
        return {"status": "ok", "engine": runner.engine, "precision": runner.precision}

    @app.get("/model", dependencies=[Depends(authorised)])
    def model() -> dict:
        keys = ("classes", "colors", "background_class", "ng_rule", "ng_area", "min_region", "backbone", "features",
                "pointseg_version", "model_sha256", "model_file", "export_check")
        return {k: runner.metadata.get(k) for k in keys} | {"engine": runner.engine}

    @app.get("/metrics", dependencies=[Depends(authorised)])
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(request: Request, labels: str | None = None) -> dict:
        start = time.perf_counter()
        if labels not in (None, "png"):
            raise HTTPException(422, "labels= takes 'png' (or leave it out)")
        images = await _read_images(request, settings.max_batch)
        if waiting["n"] >= settings.max_queue:
            metrics.requests.labels("/predict", "503").inc()
            return JSONResponse({"detail": "busy: too many requests waiting; retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        waiting["n"] += 1
        try:
            await slots.acquire()
        finally:
            waiting["n"] -= 1
        try:
            queued = time.perf_counter()
            results = await run_in_threadpool(_predict_all, runner, images, labels == "png")
        finally:
            slots.release()
        elapsed = time.perf_counter() - start
        metrics.latency.observe(elapsed)
        metrics.images.inc(len(results))
        metrics.ng.inc(sum(r["status"] == "NG" for r in results))
        metrics.requests.labels("/predict", "200").inc()
        timing = {"request_ms": elapsed * 1e3, "queue_ms": (queued - start) * 1e3}
        if len(results) == 1 and not images[0][1]:
            return results[0] | {"timings": results[0]["timings"] | timing}
        return {"results": results, "timings": timing}

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


async def _read_images(request: Request, max_batch: int) -> list[tuple[bytes, str | None]]:
    """``[(bytes, name)]``: the raw body (one image, name None) or multipart ``images`` fields (a batch)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=max_batch, max_fields=max_batch)
        files = form.getlist("images")
        if not files:
            raise HTTPException(422, "multipart requests carry their images in fields named 'images'")
        return [(await f.read(), getattr(f, "filename", None) or f"image{i}") for i, f in enumerate(files)]
    body = await request.body()
    if not body:
        raise HTTPException(422, "send the image bytes as the request body (or multipart 'images' fields)")
    return [(body, None)]


def _predict_all(runner, images, with_png: bool) -> list[dict]:
    from pointseg.deploy.runtime import load_rgb

    decoded = []
    for data, name in images:
        try:
            decoded.append(load_rgb(data))
        except ImageError as exc:
            raise ImageError(f"{name}: {exc}" if name else str(exc)) from None
    probabilities = runner.needs_probabilities
    results = runner.predict_batch(decoded, probabilities) if len(decoded) > 1 else \
        [runner.predict(decoded[0], probabilities)]
    return [_result_json(runner, r, name, with_png) for r, (_, name) in zip(results, images)]


def _result_json(runner, result, name, with_png: bool) -> dict:
    t0 = time.perf_counter()
    decision = runner.decide(result)
    row = runner.summary(result)
    areas = np.bincount(result.labels.ravel(), minlength=len(runner.classes))
    out = {
        "status": row["status"],  # the model's area rule (the app's NG setting) when it has one, else the NG rule
        "score": decision.score,
        "threshold": decision.threshold,
        "size": list(result.labels.shape),
        "area": {c: int(areas[k]) for k, c in enumerate(runner.classes)},
        "fraction": {c: row[f"fraction_{c}"] for c in runner.classes},
        "region_count": {c: row[f"regions_{c}"] for k, c in enumerate(runner.classes) if k != runner.background},
        "regions": [r.as_dict() | {"class": runner.classes[r.label]} for r in decision.regions],
        "summary": row,
    }
    if name:
        out["image"] = name
    if with_png:
        from pointseg.outputs import encode_png, palette_image

        out["labels_png"] = base64.b64encode(encode_png(palette_image(result.labels, runner.colors))).decode()
    out["timings"] = result.timings | {"decide_ms": (time.perf_counter() - t0) * 1e3}
    return out

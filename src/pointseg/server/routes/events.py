"""The event stream (server-sent events): edits, models, features, batch progress, settings."""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from pointseg.server.deps import ServicesDep

router = APIRouter(prefix="/api", tags=["events"])


def _offer(queue: asyncio.Queue, event: dict) -> None:
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:  # a stalled tab misses events; it re-syncs on the next one
        pass


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


# not in the OpenAPI schema: an endless text/event-stream is no operation a generic client can call
@router.get("/events", include_in_schema=False)
async def stream(request: Request, services: ServicesDep):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
    unsubscribe = services.events.subscribe(lambda event: loop.call_soon_threadsafe(_offer, queue, event))
    store, scheduler = services.store, services.scheduler

    async def gen():
        try:
            yield _sse({"type": "hello", "rev": store.rev(), **scheduler.status()})
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=10)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(event)
        finally:
            unsubscribe()

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

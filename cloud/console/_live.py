"""Live parts of pages as server-sent events: a person's keycards, a property's doors.

Theory of operation: a page marks a region with ``data-live`` (the URL of its stream);
``static/live.js`` opens an ``EventSource`` on it and replaces the region's content
with each ``update`` event's HTML. The stream re-renders the region's fragment from
the database every :attr:`~cloud.console._web.ConsoleConfig.live_poll_s` seconds, in
a worker thread and its own short transaction, and sends it only when it changed —
so it shows changes made by any cloud process (a phone's receipt upload, an MQTT
door's receipt), and costs the browser nothing while nothing changes. Each render
signs the session in again and checks what it may see, so signing out, or a person
leaving the manager's portfolios, ends the stream (a ``gone`` event). A comment line
every :attr:`~cloud.console._web.ConsoleConfig.live_keepalive_s` keeps proxies from
closing an idle stream; after :attr:`~cloud.console._web.ConsoleConfig.live_max_s` the
stream ends and the browser reconnects, so no stream lives forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import NotFoundError
from ..service import CloudService
from ._manager import checked_id
from ._session import SignInRequired, signed_in
from ._views import doors_view, person_view, property_view
from ._web import base_path, config_of, render_fragment, transaction

__all__ = ["router", "sse_event"]

router = APIRouter()

Fragment = Callable[[CloudService, str], str]
"""(service, manager id) → the region's HTML."""


def sse_event(event: str, data: str) -> str:
    """One server-sent event; every line of ``data`` becomes a ``data:`` line."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


@router.get("/people/{person_id}/live")
def person_live(request: Request, person_id: str) -> StreamingResponse:
    person_id, base = checked_id(person_id, "person"), base_path(request)

    def fragment(service: CloudService, manager_id: str) -> str:
        view = person_view(service, manager_id, person_id)
        return render_fragment("_cards.html", {"person": view, "base": base})

    return _stream(request, fragment)


@router.get("/doors/{property_id}/live")
def doors_live(request: Request, property_id: str) -> StreamingResponse:
    property_id, base = checked_id(property_id, "property"), base_path(request)

    def fragment(service: CloudService, manager_id: str) -> str:
        prop = property_view(service, manager_id, property_id)
        rows = doors_view(service, manager_id, prop.id)
        return render_fragment("_doors.html", {"doors": rows, "base": base})

    return _stream(request, fragment)


def _render(request: Request, fragment: Fragment) -> str:
    with transaction(request, read_only=True) as service:  # a poll never waits for writers
        user = signed_in(request, service, "manager")
        return fragment(service, user.caller.subject_id)


def _stream(request: Request, fragment: Fragment) -> StreamingResponse:
    """The region's stream; the first render happens now, so a 404 or sign-in is answered
    as a page before any event is sent."""
    first = _render(request, fragment)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(request, fragment, first), media_type="text/event-stream", headers=headers
    )


async def _events(request: Request, fragment: Fragment, first: str) -> AsyncIterator[str]:
    config = config_of(request)
    loop = asyncio.get_running_loop()
    start = last_sent = loop.time()
    yield "retry: 2000\n" + sse_event("update", first)
    last = first
    while loop.time() - start < config.live_max_s and not await request.is_disconnected():
        await asyncio.sleep(config.live_poll_s)
        try:
            html = await run_in_threadpool(_render, request, fragment)
        except (NotFoundError, SignInRequired):
            yield sse_event("gone", "")
            return
        if html != last:
            last, last_sent = html, loop.time()
            yield sse_event("update", html)
        elif loop.time() - last_sent >= config.live_keepalive_s:
            last_sent = loop.time()
            yield ": keep-alive\n\n"

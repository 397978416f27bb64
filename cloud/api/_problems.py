"""Refusals as ``application/problem+json`` (RFC 9457), and the request body limit.

Theory of operation: :func:`problem` builds every refusal: ``{type, title,
status, detail}`` with a ``detail`` a person can act on. The exception handlers
map each kind of failure to one: a :class:`~cloud.errors.CloudError` keeps its
status and reason; bytes a lock did not sign are 422; invalid JSON or fields are
422, described field by field; unknown routes 404; anything unexpected a 500 that
says nothing of its cause. :class:`BodyLimit` refuses bodies over
:data:`MAX_BODY_BYTES` with 413, by header or while reading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CloudError
from ..service import SELF_ACTIVATION_WINDOW_S
from ._schemas import PATTERNS, Problem

__all__ = [
    "MAX_BODY_BYTES",
    "PROBLEM_JSON",
    "PROBLEM_RESPONSES",
    "BodyLimit",
    "cloud_problem",
    "http_problem",
    "internal_problem",
    "problem",
    "protocol_problem",
    "validation_problem",
]

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 256 * 1024
"""Largest request body accepted (an audit batch of 1,000 events is ~50 KB as hex)."""


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    body = {"type": f"urn:latchsim:problem:{slug}", "title": title, "status": status}
    return JSONResponse(
        {**body, "detail": detail}, status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def cloud_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)
    headers = {
        401: {"WWW-Authenticate": "Bearer"},
        429: {"Retry-After": str(SELF_ACTIVATION_WINDOW_S)},
    }.get(exc.status)
    return problem(exc.status, exc.title, exc.reason, headers)


async def protocol_problem(_request: Request, exc: Exception) -> JSONResponse:
    return problem(422, "Invalid input", f"the bytes were refused: {exc}")


async def validation_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [_describe(error) for error in exc.errors()[:5]]
    return problem(422, "Invalid input", "; ".join(parts)[:1000])


def _describe(error: Any) -> str:
    """One validation error as a person reads it: where, and what is expected."""
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    kind, ctx = error.get("type"), error.get("ctx", {})
    if kind == "json_invalid":
        where = f"at character {loc[-1]}" if loc else "at the start"
        return f"the body is not valid JSON: {ctx.get('error', 'invalid')} ({where})"
    if not loc and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object, sent with Content-Type: application/json"
    message = str(error.get("msg", "invalid"))
    if kind == "string_pattern_mismatch":
        message = "must be " + PATTERNS.get(ctx.get("pattern"), f"like {ctx.get('pattern')}")
    return f"{'.'.join(loc) or 'body'}: {message}"


async def http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    where = f"{request.method} {request.url.path[:200]}"
    detail = {
        404: f"there is no {where}; the routes are listed at /openapi.json",
        405: f"{where} is not allowed; the routes are listed at /openapi.json",
        400: "the body could not be read as JSON (a number in it may be too long)",
    }.get(exc.status_code, str(exc.detail))
    title = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "Error"
    return problem(exc.status_code, title, detail, exc.headers)


_STATUSES = {s.value for s in HTTPStatus}


async def internal_problem(_request: Request, _exc: Exception) -> JSONResponse:
    return problem(500, "Internal error", "the request was not applied; try again later")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await self._refuse()(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refuse(self) -> JSONResponse:
        return problem(413, "Content Too Large", f"send at most {self.limit} bytes per request")

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"send at most {self.limit} bytes per request")
            return message

        return limited


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": HTTPStatus(code).phrase}
    for code in (401, 403, 404, 409, 413, 422, 429)
}
"""What any route may answer instead of its result (listed in the OpenAPI spec)."""

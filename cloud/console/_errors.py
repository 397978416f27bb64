"""Refusals as pages: what went wrong and what to do, never a stack trace.

Theory of operation: the console app's exception handlers. A page that needs a
session sends the browser to the sign-in page (and back afterwards). A
:class:`~cloud.errors.CloudError` keeps its status and its reason, which the service
wrote for a person to act on; anything outside a manager's portfolios is a
:class:`~cloud.errors.NotFoundError` there, so the page is a 404 that does not say
whether the id exists elsewhere. Unknown routes (and a GET of a URL forms only post
to) are 404, a malformed request 422, and
anything unexpected a 500 that says the change was not applied.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CloudError, NotFoundError
from ._session import SignInRequired
from ._web import base_path, render

__all__ = [
    "cloud_error_page",
    "crash_page",
    "error_page",
    "http_error_page",
    "sentence",
    "sign_in_redirect",
]

log = logging.getLogger(__name__)

_NOT_FOUND = "There is nothing at this address in your portfolios. Go back to People or Doors."


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    """A page that explains a refusal."""
    return render(request, "error.html", status=status, title=title, detail=detail)


async def sign_in_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = request.url.path if request.method == "GET" else ""
    query = f"?next={quote(target, safe='/')}" if target.startswith("/") else ""
    return RedirectResponse(f"{base_path(request)}/sign-in{query}", status_code=303)


async def cloud_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CloudError)
    if isinstance(exc, NotFoundError):
        return error_page(request, 404, "Not found", _NOT_FOUND)
    return error_page(request, exc.status, exc.title, sentence(exc.reason))


async def http_error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestValidationError):
        return error_page(request, 422, "Invalid input", "The request could not be read.")
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):  # a page only posted to is no page to get
        return error_page(request, 404, "Not found", _NOT_FOUND)
    return error_page(request, exc.status_code, "Error", "The request could not be served.")


async def crash_page(request: Request, _exc: Exception) -> Response:
    log.exception("console request failed: %s %s", request.method, request.url.path[:200])
    detail = "Something went wrong on our side; nothing was changed. Try again in a minute."
    return error_page(request, 500, "Internal error", detail)


def sentence(reason: str) -> str:
    """A service reason as a sentence: capitalised, ending with a full stop."""
    text = reason.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."

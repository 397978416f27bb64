"""Routes to sign in and out, and the console's front door.

Theory of operation: ``GET /`` sends a signed-in manager to People, a signed-in
resident to their keycard page and anyone else to the sign-in page. Signing in
checks the double-submit CSRF value and the access token (see :mod:`._session`), then
sets the session cookie and goes to ``next`` if it is a path of the console, else to
the front door. A wrong or unknown token gets one answer, whichever check failed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import CloudError, UnauthenticatedError
from ._session import (
    PhoneTokenError,
    check_csrf,
    check_login_csrf,
    clear_session_cookie,
    current_user,
    end_session,
    login_csrf,
    session_token,
    set_login_csrf_cookie,
    set_session_cookie,
    start_session,
)
from ._web import FormError, base_path, config_of, field, read_form, render, transaction

__all__ = ["router"]

router = APIRouter()

_HOMES = {"manager": "/people", "resident": "/card"}


@router.get("/")
def front_door(request: Request) -> Response:
    home = "/sign-in"
    if session_token(request) is not None:
        with transaction(request) as service:
            user = current_user(request, service)
        home = _HOMES[user.role] if user is not None else home
    return RedirectResponse(base_path(request) + home, status_code=303)


@router.get("/sign-in")
def sign_in_page(request: Request, next: Annotated[str, Query(max_length=200)] = "") -> Response:
    return _sign_in_form(request, next)


def _sign_in_form(request: Request, next_path: str, error: CloudError | None = None) -> Response:
    value = login_csrf(request)
    status = error.status if error else 200
    response = render(
        request,
        "signin.html",
        status=status,
        csrf=value,
        next=_safe_next(request, next_path),
        error=error.reason if error else None,
    )
    set_login_csrf_cookie(request, response, value)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    next_path = ""
    try:
        form = await read_form(request)
        next_path = form.get("next", "")[:200]
        check_login_csrf(request, form.get("csrf"))
        token = field(form, "token", "token", "Access token")
    except CloudError as exc:
        return _sign_in_form(request, next_path, exc)
    return await run_in_threadpool(_start, request, token, next_path)


def _start(request: Request, token: str, next_path: str) -> Response:
    try:
        with transaction(request) as service:
            lasts_s = config_of(request).session_max_age_s
            caller, session = start_session(service, token, lasts_s=lasts_s)
    except PhoneTokenError as exc:
        return _sign_in_form(request, next_path, exc)
    except UnauthenticatedError:
        return _sign_in_form(request, next_path, _UNKNOWN)
    target = _safe_next(request, next_path) or base_path(request) + _HOMES[caller.role]
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, session)
    return response


_UNKNOWN = UnauthenticatedError(
    "that access token is not known; check it and try again, or ask your manager for one"
)
"""One answer for every token that does not sign anyone in."""


def _safe_next(request: Request, next_path: str) -> str:
    """``next`` if it is a page of this console (never another site), else empty."""
    base = base_path(request)
    ok = next_path.startswith(base + "/") and "//" not in next_path and "\\" not in next_path
    return next_path if ok and next_path.isprintable() else ""


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    try:
        form = await read_form(request)
    except FormError:
        form = {}
    return await run_in_threadpool(_end, request, form.get("csrf"))


def _end(request: Request, csrf: str | None) -> Response:
    """Delete the session's token (its CSRF token required) and clear the cookie."""
    if session_token(request) is not None:
        with transaction(request) as service:
            user = current_user(request, service)
            if user is not None:
                check_csrf(user, csrf)
                end_session(service, user.token)
    response = RedirectResponse(base_path(request) + "/sign-in", status_code=303)
    clear_session_cookie(request, response)
    return response

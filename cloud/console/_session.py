"""Console sign-in sessions and CSRF tokens.

Theory of operation: a manager or resident signs in with the access token they were
given (the same bearer tokens the API takes; the console has no passwords of its
own). Signing in issues a *new* token for the console session
(:func:`cloud.auth.issue_token`: only its SHA-256 is stored, like every token) and
puts it in a cookie that scripts cannot read (``HttpOnly``), that other sites' forms
do not send (``SameSite=Lax``), scoped to the console's path, ``Secure`` over HTTPS.
Every request looks the cookie's token up in its own transaction
(:func:`cloud.auth.authenticate`), so sessions hold across cloud processes, and
signing out deletes the session's token row: the cookie is dead everywhere at once.

CSRF: every form carries a token derived from the session (HMAC-SHA256 keyed by the
session's secret), checked in constant time before the form is used. The sign-in
form, which has no session yet, uses a double-submit cookie: a random value in a
``SameSite=Strict`` cookie that the form must repeat.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import delete

from ..auth import Caller, Role, api_state, authenticate, issue_token
from ..errors import ForbiddenError, UnauthenticatedError
from ..models import Manager, Person, Token
from ..seed import token_hash
from ..service import CloudService
from ._web import base_path, config_of

__all__ = [
    "COOKIE",
    "LOGIN_CSRF_COOKIE",
    "ConsoleUser",
    "CsrfError",
    "PhoneTokenError",
    "SignInRequired",
    "check_csrf",
    "check_login_csrf",
    "clear_session_cookie",
    "current_user",
    "end_session",
    "login_csrf",
    "session_token",
    "set_login_csrf_cookie",
    "set_session_cookie",
    "signed_in",
    "start_session",
]

COOKIE = "latchsim_console"
LOGIN_CSRF_COOKIE = "latchsim_console_login"
_MAX_TOKEN_CHARS = 256
_CSRF_CONTEXT = b"latchsim console csrf v1"


class SignInRequired(Exception):
    """No valid session for a page that needs one (answered with the sign-in page)."""

    def __init__(self, role: Role | None = None) -> None:
        super().__init__("sign in first")
        self.role = role


class PhoneTokenError(UnauthenticatedError):
    """A phone's token offered to the console: phones do not sign in here."""


class CsrfError(ForbiddenError):
    """A form without the right security token: nothing was changed."""

    title = "Form expired"


@dataclass(frozen=True)
class ConsoleUser:
    """A signed-in console user and their session's secret."""

    caller: Caller
    name: str
    token: str

    @property
    def csrf(self) -> str:
        """The token every form of this session carries."""
        return csrf_for(self.token)

    @property
    def role(self) -> Role:
        return self.caller.role


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def session_token(request: Request) -> str | None:
    """The session cookie's token, if it could be one."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    return token


def signed_in(request: Request, service: CloudService, role: Role) -> ConsoleUser:
    """The signed-in user in ``role``; :class:`SignInRequired` for anyone else."""
    user = current_user(request, service)
    if user is None or user.role != role:
        raise SignInRequired(role)
    return user


def current_user(request: Request, service: CloudService) -> ConsoleUser | None:
    """Whoever the session cookie signs in (a manager or a resident), or None."""
    token = session_token(request)
    if token is None:
        return None
    try:
        caller = authenticate(service, token)
    except UnauthenticatedError:
        return None
    if caller.role == "phone":
        return None
    return ConsoleUser(caller, _name(service, caller), token)


def _name(service: CloudService, caller: Caller) -> str:
    row: Manager | Person | None
    if caller.role == "manager":
        row = service.session.get(Manager, caller.subject_id)
    else:
        row = service.session.get(Person, caller.subject_id)
    return row.name if row is not None else ""


def check_csrf(user: ConsoleUser, sent: str | None) -> None:
    """Refuse a form whose CSRF token is not this session's."""
    if not sent or not hmac.compare_digest(sent.encode(), user.csrf.encode()):
        raise CsrfError("this form has expired or did not come from the console; reload the page")


def start_session(service: CloudService, access_token: str, *, lasts_s: int) -> tuple[Caller, str]:
    """Check the access token and issue a console session token for its holder, good for
    ``lasts_s`` seconds (the cookie's lifetime: the server refuses it after that too)."""
    caller = authenticate(service, access_token)
    if caller.role == "phone":
        raise PhoneTokenError(
            "a phone's token cannot sign in to the console; use your manager or resident token"
        )
    expires_at = service.now + lasts_s
    return caller, issue_token(service, caller.role, caller.subject_id, expires_at=expires_at)


def end_session(service: CloudService, token: str) -> None:
    """Delete the session's token: the cookie no longer signs anyone in."""
    service.session.execute(delete(Token).where(Token.token_hash == token_hash(token)))


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=config_of(request).session_max_age_s,
        path=base_path(request) or "/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=base_path(request) or "/")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=base_path(request) or "/", httponly=True, samesite="lax")


def login_csrf(request: Request) -> str:
    """The sign-in form's double-submit value (the cookie's, or a new one)."""
    current = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if len(current) == 32 and all(c in "0123456789abcdef" for c in current):
        return current
    return api_state(request).settings.random(16).hex()


def set_login_csrf_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        path=base_path(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def check_login_csrf(request: Request, sent: str | None) -> None:
    """Refuse a sign-in form that does not repeat its cookie's value."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        raise CsrfError("the sign-in form has expired; reload the page and sign in again")

"""Who is calling: the request's transaction, bearer tokens and roles.

Theory of operation: every request runs in one database transaction.
:func:`open_service` is a FastAPI dependency that opens it, hands the operation a
:class:`~cloud.service.CloudService` (clock and randomness from the settings; the
bundle cache shared by every request of the process) and commits when the
operation returns or rolls back when it raises — before the response is sent, so
a client never sees a success that was lost. One refusal is committed instead: an
error marked ``commit_before_raise`` (:class:`~cloud.errors.WrongCodeError`), whose
transaction holds only the self-activation rate limit's rows: the failed attempt
it must count. Nothing of the rate limit lives in the process: it is in the database.

The bearer token of the ``Authorization`` header is looked up by its SHA-256
(:func:`cloud.seed.token_hash`; the database never holds a usable token) in that
same transaction and becomes a :class:`Caller`:

* ``manager`` — acts on the people and doors of their portfolios;
* ``resident`` — acts on themself (guests are residents with guest grants only);
* ``phone`` — an app login of a resident, valid while its mobile credential is.

:func:`require` builds the role checks used by the routes. No token or an unknown
one is 401; a known token of the wrong role is 403. Each says what to do next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from .errors import CloudError, ForbiddenError, UnauthenticatedError
from .models import Manager, Person, Phone, Token
from .seed import token_hash
from .service import CloudService
from .settings import CloudSettings
from .sync import BundleCache, took_outbox

__all__ = [
    "ApiState",
    "Caller",
    "CurrentService",
    "Role",
    "SharedState",
    "api_state",
    "authenticate",
    "issue_token",
    "open_read_service",
    "open_service",
    "require",
]

log = logging.getLogger(__name__)

Role = Literal["manager", "resident", "phone"]

MAX_TOKEN_CHARS = 256
"""Longer bearer tokens are refused without a lookup (ours are 48 hex digits)."""

_ROLE_NAMES: dict[str, str] = {
    "manager": "a manager's",
    "resident": "a resident's",
    "phone": "a phone's",
}
_HINTS: dict[str, str] = {
    "manager": "sign in to the console as a manager",
    "resident": "use the resident token you got when you signed up or were invited",
    "phone": "log this phone in with POST /v1/phones/login and use the token it returns",
}


@dataclass
class ApiState:
    """What every request of one app shares: settings, sessions and the bundle cache."""

    settings: CloudSettings
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    """For requests that only read (:func:`cloud.db.read_only_sessions`)."""
    cache: BundleCache = field(default_factory=BundleCache)
    on_outbox: Callable[[], None] | None = None
    """Called after a request's commit queued MQTT frames: the MQTT bridge's ``notify``."""

    def committed(self, session: Session) -> None:
        """After a commit: wake whoever sends the MQTT outbox if the commit added to it."""
        if took_outbox(session) and self.on_outbox is not None:
            try:
                self.on_outbox()
            except Exception:  # committed already: the sender's next poll still finds it
                log.exception("waking the MQTT sender after a commit failed")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``person_id`` is set for residents and phones."""

    role: Role
    subject_id: str
    person_id: str | None = None

    @property
    def person(self) -> str:
        """The person a resident or phone acts for (routes check the role first)."""
        if self.person_id is None:
            raise ForbiddenError("this needs a resident's or a phone's sign-in")
        return self.person_id


def api_state(request: Request) -> ApiState:
    """The app's shared state (a FastAPI dependency)."""
    state: ApiState = request.app.state.cloud
    return state


def open_service(request: Request) -> Iterator[CloudService]:
    """One transaction and one :class:`CloudService` per request (a FastAPI dependency).

    Committed when the operation returns or raises an error marked
    ``commit_before_raise``; otherwise closing the session rolls it back.
    """
    yield from _service(api_state(request), read_only=False)


def open_read_service(request: Request) -> Iterator[CloudService]:
    """:func:`open_service` for a request that writes nothing
    (:func:`cloud.db.read_only_sessions`)."""
    yield from _service(api_state(request), read_only=True)


def _service(state: ApiState, *, read_only: bool) -> Iterator[CloudService]:
    with (state.read_sessions if read_only else state.sessions)() as session:
        session.begin()
        try:
            yield CloudService(session, state.settings.clock(), state.settings.random, state.cache)
        except CloudError as exc:
            if exc.commit_before_raise:
                session.commit()
                state.committed(session)
            raise
        session.commit()
        state.committed(session)


SharedState = Annotated[ApiState, Depends(api_state)]
"""What every request of the app shares."""

CurrentService = Annotated[CloudService, Depends(open_service, scope="function")]
"""The request's service; commits or rolls back before the response is sent."""

_bearer = HTTPBearer(
    auto_error=False,
    description="A manager, resident or phone token: `Authorization: Bearer <token>`.",
)


def authenticate(service: CloudService, token: str) -> Caller:
    """The caller a bearer token stands for; :class:`UnauthenticatedError` if none."""
    row = service.session.get(Token, token_hash(token)) if len(token) <= MAX_TOKEN_CHARS else None
    if row is None:
        raise UnauthenticatedError("this bearer token is not known; sign in again for a new one")
    if row.expires_at is not None and row.expires_at <= service.now:
        raise UnauthenticatedError("this sign-in has expired; sign in again for a new token")
    if row.role == "manager" and service.session.get(Manager, row.subject_id) is not None:
        return Caller("manager", row.subject_id)
    if row.role == "resident" and service.session.get(Person, row.subject_id) is not None:
        return Caller("resident", row.subject_id, row.subject_id)
    if row.role == "phone":
        return _phone_caller(service, row.subject_id)
    raise UnauthenticatedError("the account of this token no longer exists")


def _phone_caller(service: CloudService, phone_id: str) -> Caller:
    phone = service.session.get(Phone, phone_id)
    if phone is None:
        raise UnauthenticatedError("this phone login no longer exists; log the phone in again")
    if phone.valid_until <= service.now:
        raise UnauthenticatedError(
            "this phone's login has expired; log it in again with POST /v1/phones/login"
        )
    return Caller("phone", phone.id, phone.person_id)


def current_caller(
    service: CurrentService,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The authenticated caller of this request (a FastAPI dependency)."""
    if credentials is None:
        raise UnauthenticatedError("sign in first: send the header 'Authorization: Bearer <token>'")
    return authenticate(service, credentials.credentials)


def require(*roles: Role) -> Callable[[Caller], Caller]:
    """A dependency admitting only ``roles`` (403 with what to do for any other)."""

    def check(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if caller.role not in roles:
            wanted = " or ".join(_ROLE_NAMES[r] for r in roles)
            raise ForbiddenError(
                f"this needs {wanted} sign-in, but the token is {_ROLE_NAMES[caller.role]}; "
                f"{_HINTS[roles[0]]}"
            )
        return caller

    check.__name__ = "require_" + "_or_".join(roles)
    return check


def issue_token(
    service: CloudService, role: Role, subject_id: str, *, expires_at: int | None = None
) -> str:
    """A new bearer token for ``subject_id``, good until ``expires_at`` (unix seconds;
    None: until deleted); only its SHA-256 is stored."""
    token = service.random(24).hex()
    service.session.add(
        Token(token_hash=token_hash(token), role=role, subject_id=subject_id, expires_at=expires_at)
    )
    return token

"""The cloud's HTTP API: an ASGI app (FastAPI) with an OpenAPI spec at ``/openapi.json``.

Theory of operation: each route is a thin adapter. It takes validated JSON
(bounded strings, bounded integers, binary frames as hex), lets :mod:`cloud.auth`
authenticate the bearer token and check the role, calls one or two operations of
:class:`~cloud.service.CloudService` — which check every object against the
caller's portfolios or identity and enforce the rules — and turns the result into
JSON. One request is one transaction (:func:`cloud.auth.open_service`): an
operation is applied whole or not at all. Nothing here reads a clock or a random
source except through :class:`~cloud.settings.CloudSettings`.

Every refusal is ``application/problem+json`` (RFC 9457) ``{type, title, status,
detail}`` with a ``detail`` a person can act on: a :class:`~cloud.errors.CloudError`
keeps its status and reason; bytes a lock did not sign (a forged or damaged
receipt or audit batch) are 422; invalid JSON or fields are 422; unknown routes
404; oversized bodies 413. Nothing a client sends should ever produce a 5xx.

Routes, all under ``/v1`` (M: manager, R: resident, P: phone token):

| method | path | who | what |
|---|---|---|---|
| GET | /people?q= | M | people of my portfolios, keycard status |
| GET | /people/{id} | M, R | one person (a resident: only themself) |
| POST | /people/{id}/keycards/{uid}/activate | M | activate on behalf |
| POST | /people/{id}/keycards/{uid}/deactivate | M | deactivate on behalf |
| POST | /people/{id}/keycards/{uid}/lost | M | report lost, optional replacement |
| POST | /guests | M | invite an app guest |
| GET | /me | R | myself and my doors |
| POST | /me/keycards/{uid}/activate | R | self-activate with the printed code |
| POST | /me/keycards/{uid}/deactivate | R | self-deactivate |
| POST | /me/keycards/{uid}/lost | R | report lost, optional replacement |
| POST | /me/guests | R | invite an app guest |
| GET | /doors | M | doors with sync status and health |
| GET | /doors/{id} | M | one door |
| POST | /doors | M | register a provisioned lock |
| POST | /doors/{id}/doorcodes | M, R | a daily or 15-minute keypad code |
| POST | /doors/{id}/receipts | M, P | upload a lock's receipt |
| POST | /doors/{id}/audit | M, P | upload an audit batch, get the ack |
| POST | /phones/login | R | register a phone key, get its credential |
| GET | /phones/bundles | P | pending bundles of my doors |
| GET | /phones/rotations | P | KEY_ROTATION frames after an epoch (``?after=N``) |
| POST | /phones/doors/{id}/time-sync | P | a TIME_SYNC bound to a lock's HELLO challenge |
"""

# The package, by area (each module's docstring says more):
#   _schemas   bounded request fields, request and response models
#   _views     building responses from the service's objects
#   _people    people and keycards (a manager's console, a resident's /me)
#   _guests    app guests and keypad doorcodes
#   _doors     a manager's doors; registering a lock
#   _uploads   receipts and audit batches phones carry back from locks
#   _phones    phone login, bundles, rotations and time syncs
#   _problems  problem+json refusals and the body limit
# The app below includes their routers in that order (the order of the spec).

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from protocol import ProtocolError

from ..auth import ApiState
from ..console import mount_console
from ..db import create_schema, make_engine, read_only_sessions, session_factory
from ..errors import CloudError
from ..settings import CloudSettings
from . import _doors, _guests, _people, _phones, _uploads
from ._problems import (
    MAX_BODY_BYTES,
    PROBLEM_JSON,
    PROBLEM_RESPONSES,
    BodyLimit,
    cloud_problem,
    http_problem,
    internal_problem,
    protocol_problem,
    validation_problem,
)

__all__ = ["MAX_BODY_BYTES", "PROBLEM_JSON", "app_from_environment", "create_app"]

_AREAS = (_people, _guests, _doors, _uploads, _phones)
"""The route modules, in the order their routes are matched and listed in the spec."""


def create_app(
    settings: CloudSettings,
    *,
    engine: Engine | None = None,
    on_outbox: Callable[[], None] | None = None,
) -> FastAPI:
    """The cloud's ASGI app on ``engine`` (default: ``settings.database_url``, schema made).

    ``on_outbox`` is called after each request whose commit queued MQTT frames: pass the
    MQTT bridge's ``notify`` so online doors get a change at once rather than at the
    bridge's next poll.
    """
    if engine is None:
        engine = make_engine(settings.database_url)
        create_schema(engine)
    app = FastAPI(
        title="Latchsim cloud",
        version="1",
        summary="Keycards, doors, guests and sync for a portfolio of smart locks.",
        description=__doc__,
    )
    app.state.cloud = ApiState(
        settings, session_factory(engine), read_only_sessions(engine), on_outbox=on_outbox
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(CloudError, cloud_problem)
    app.add_exception_handler(ProtocolError, protocol_problem)
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.add_exception_handler(StarletteHTTPException, http_problem)
    app.add_exception_handler(Exception, internal_problem)
    for area in _AREAS:
        app.include_router(area.router, responses=PROBLEM_RESPONSES)
    mount_console(app)  # the HTML console at /console (cloud.console); not in the spec
    return app


def app_from_environment() -> FastAPI:
    """``uvicorn --factory cloud.api:app_from_environment``: settings from the environment."""
    return create_app(CloudSettings())

"""The manager console and the resident activation page: server-rendered HTML.

Theory of operation: the console is a small ASGI app of its own, mounted by the
cloud's app at :data:`CONSOLE_PATH` (``/console``) and sharing its
:class:`~cloud.auth.ApiState` — the same database sessions, settings, bundle cache
and MQTT wake-up — so the JSON API stays as it is and every change still goes
through :class:`~cloud.service.CloudService`, which holds the rules (the portfolio
rule, the self-activation code and its rate limit, lost cards). The console adds
no rule of its own: it reads with the service's queries (plus a few read-only
ones in :mod:`._views`), renders Jinja2 templates, and turns the service's
refusals into pages that say what to do.

Pages are plain HTML forms with a little plain JavaScript (``static/live.js``)
for the live parts; nothing needs a build step. Live parts (a person's keycards,
a property's doors) are server-sent event streams (:mod:`._live`) that poll the
database and send a re-rendered fragment only when it changed, so any number of
cloud processes can serve them.

Modules, each with one job:

* :mod:`._web` — settings, templates, one transaction per request, bounded forms;
* :mod:`._session` — sign-in sessions (an HttpOnly, SameSite=Lax cookie holding a
  console token stored hashed like every bearer token) and CSRF tokens;
* :mod:`._views` — what the pages show, read from the service;
* :mod:`._signin`, :mod:`._manager`, :mod:`._resident`, :mod:`._live` — routes;
* :mod:`._errors` — refusals as pages (404 for anything outside a manager's
  portfolios, never 403, so ids do not leak).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..auth import ApiState
from ..errors import CloudError
from . import _live, _manager, _resident, _signin
from ._errors import cloud_error_page, crash_page, http_error_page, sign_in_redirect
from ._session import SignInRequired
from ._web import ConsoleConfig

__all__ = ["CONSOLE_PATH", "ConsoleConfig", "create_console", "mount_console"]

CONSOLE_PATH = "/console"
"""Where the cloud's app mounts the console."""

_STATIC = Path(__file__).parent / "static"


def create_console(state: ApiState, config: ConsoleConfig | None = None) -> FastAPI:
    """The console app on the cloud app's shared ``state``."""
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state.cloud = state
    console.state.console = config or ConsoleConfig()
    console.add_exception_handler(SignInRequired, sign_in_redirect)
    console.add_exception_handler(CloudError, cloud_error_page)
    console.add_exception_handler(StarletteHTTPException, http_error_page)
    console.add_exception_handler(RequestValidationError, http_error_page)
    console.add_exception_handler(Exception, crash_page)
    console.mount("/static", StaticFiles(directory=_STATIC), name="static")
    for area in (_signin, _manager, _live, _resident):
        console.include_router(area.router)
    return console


def mount_console(app: FastAPI, config: ConsoleConfig | None = None) -> None:
    """Mount the console on the cloud's ``app`` (made by :func:`cloud.api.create_app`)."""
    app.mount(CONSOLE_PATH, create_console(app.state.cloud, config))

"""A manager's pages: People, a person, Doors per property, and the Outbox.

Theory of operation: every page signs the manager in from the session cookie, then
reads through :mod:`._views`, which asks the service — so a manager sees only the
people and doors of their portfolios, and any other id, guessed or stale, is a 404.
A button posts a form (with the session's CSRF token) to one operation of the
service: activate or deactivate on behalf, or report a card lost with an optional
replacement. The form is read and bounded first; the operation runs in one
transaction. Success redirects back to the person's page with a notice (so a reload
does not post again); a refusal re-renders the page with the service's reason and
its status, and the refusal's transaction has been rolled back: nothing changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import CloudError, NotFoundError
from ..service import CloudService
from ._errors import sentence
from ._session import ConsoleUser, check_csrf, signed_in
from ._views import (
    doors_view,
    outbox_view,
    people_view,
    person_view,
    properties_view,
    property_view,
)
from ._web import (
    FormError,
    base_path,
    config_of,
    field,
    optional_field,
    read_form,
    render,
    transaction,
)

__all__ = ["NOTICES", "checked_id", "router"]

router = APIRouter()

_ID = re.compile(r"[0-9a-f]{32}")

NOTICES = {
    "activated": "Keycard activated. Doors without internet show as pending until a phone "
    "that opens them syncs them; an email told the person.",
    "deactivated": "Keycard deactivated. Doors without internet keep accepting it until a "
    "phone syncs them; they are listed below. An email told the person.",
    "lost": "Card reported lost and revoked everywhere. Doors that still accept it until "
    "they sync are listed under Lost cards.",
    "replaced": "Card reported lost and the replacement card activated. Doors that still "
    "accept the lost card until they sync are listed under Lost cards.",
}

Action = Callable[[CloudService, ConsoleUser, dict[str, str]], str]
"""An operation on a person: (service, manager, form) → the notice to show."""


def checked_id(value: str, what: str) -> str:
    """A 32-hex-digit id from a URL; anything else is simply not found."""
    if not _ID.fullmatch(value):
        raise NotFoundError(f"no {what} {value[:40]!r}")
    return value


@router.get("/people")
def people(
    request: Request,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    size = config_of(request).people_page_size
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        rows = people_view(
            service, user.caller.subject_id, q.strip(), limit=size + 1, offset=(page - 1) * size
        )
    return render(
        request,
        "people.html",
        user=user,
        people=rows[:size],
        q=q,
        page=page,
        more=len(rows) > size,
    )


@router.get("/people/{person_id}")
def person(
    request: Request, person_id: str, done: Annotated[str, Query(max_length=20)] = ""
) -> Response:
    return _person_page(request, person_id, NOTICES.get(done), None)


def _person_page(
    request: Request, person_id: str, notice: str | None, error: CloudError | None
) -> Response:
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        view = person_view(service, user.caller.subject_id, checked_id(person_id, "person"))
    return render(
        request,
        "person.html",
        status=error.status if error else 200,
        user=user,
        person=view,
        notice=notice,
        error=sentence(error.reason) if error else None,
    )


def _activate(service: CloudService, user: ConsoleUser, form: dict[str, str]) -> str:
    uid = field(form, "uid", "uid", "Card number")
    service.activate_on_behalf(user.caller.subject_id, form["person"], uid)
    return "activated"


def _deactivate(service: CloudService, user: ConsoleUser, form: dict[str, str]) -> str:
    uid = field(form, "uid", "uid", "Card number")
    service.deactivate_on_behalf(user.caller.subject_id, form["person"], uid)
    return "deactivated"


def _lost(service: CloudService, user: ConsoleUser, form: dict[str, str]) -> str:
    uid = field(form, "uid", "uid", "Lost card number")
    replacement = optional_field(form, "replacement", "uid", "Replacement card number")
    if replacement is not None and replacement.lower() == uid.lower():
        raise FormError("Replacement card number: enter a different card than the lost one")
    service.report_lost(
        form["person"], uid, replacement=replacement, manager_id=user.caller.subject_id
    )
    return "replaced" if replacement else "lost"


_ACTIONS: dict[str, Action] = {
    "activate": _activate,
    "deactivate": _deactivate,
    "lost": _lost,
}


@router.post("/people/{person_id}/{action}")
async def person_action(request: Request, person_id: str, action: str) -> Response:
    act = _ACTIONS.get(action)
    if act is None:
        raise NotFoundError(f"no action {action[:40]!r}")
    try:
        form = await read_form(request)
    except FormError as exc:
        return await run_in_threadpool(_person_page, request, person_id, None, exc)
    return await run_in_threadpool(_apply, request, checked_id(person_id, "person"), form, act)


def _apply(request: Request, person_id: str, form: dict[str, str], act: Action) -> Response:
    """Run ``act`` for a person the manager sees (anyone else: 404); a refusal re-renders."""
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        service.visible_person(user.caller.subject_id, person_id)
    try:
        with transaction(request) as service:
            user = signed_in(request, service, "manager")
            check_csrf(user, form.get("csrf"))
            notice = act(service, user, {**form, "person": person_id})
    except CloudError as exc:
        return _person_page(request, person_id, None, exc)
    url = f"{base_path(request)}/people/{person_id}?done={notice}"
    return RedirectResponse(url, status_code=303)


@router.get("/doors")
def properties(request: Request) -> Response:
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        rows = properties_view(service, user.caller.subject_id)
    return render(request, "properties.html", user=user, properties=rows)


@router.get("/doors/{property_id}")
def doors(request: Request, property_id: str) -> Response:
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        prop = property_view(service, user.caller.subject_id, checked_id(property_id, "property"))
        rows = doors_view(service, user.caller.subject_id, prop.id)
    return render(request, "doors.html", user=user, property=prop, doors=rows)


@router.get("/outbox")
def outbox(request: Request) -> Response:
    with transaction(request) as service:
        user = signed_in(request, service, "manager")
        emails = outbox_view(service, user.caller.subject_id)
    return render(request, "outbox.html", user=user, emails=emails)

"""The resident's page: activate a keycard with the code printed on it, or deactivate it.

Theory of operation: a signed-in resident sees their keycards and their status, and a
form for the card number and the code printed on the card. The service checks the
code under the per-person rate limit (a wrong code commits only the attempt it
counts; :func:`cloud.auth.open_service`). The page answers a wrong code, the rate
limit and every other refusal with one clear message and its status, and after a
change tells the resident the next step: which doors without internet still wait for
a phone — "open them with the app to sync them".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import CloudError, NotFoundError, RateLimitedError, WrongCodeError
from ..service import SELF_ACTIVATION_LIMIT, SELF_ACTIVATION_WINDOW_S
from ._errors import sentence
from ._session import check_csrf, signed_in
from ._views import resident_view
from ._web import FormError, base_path, field, read_form, render, transaction

__all__ = ["router"]

router = APIRouter()

_NOTICES = {
    "activate": "Your keycard is active.",
    "deactivate": "Your keycard is deactivated.",
}
_WRONG_CODE = (
    "That card number or activation code is not right. Check the code printed on the card "
    f"and try again; after {SELF_ACTIVATION_LIMIT} wrong tries you must wait "
    f"{SELF_ACTIVATION_WINDOW_S // 60} minutes."
)
_RATE_LIMITED = (
    f"Too many wrong codes. Wait {SELF_ACTIVATION_WINDOW_S // 60} minutes, then try again "
    "with the code printed on the card."
)


@router.get("/card")
def card_page(request: Request, done: Annotated[str, Query(max_length=20)] = "") -> Response:
    return _page(request, _NOTICES.get(done), None)


def _page(request: Request, notice: str | None, error: CloudError | None) -> Response:
    with transaction(request) as service:
        user = signed_in(request, service, "resident")
        view = resident_view(service, user.caller.person)
    return render(
        request,
        "resident.html",
        status=error.status if error else 200,
        user=user,
        person=view,
        notice=notice,
        error=_message(error) if error else None,
    )


def _message(error: CloudError) -> str:
    if isinstance(error, WrongCodeError):
        return _WRONG_CODE
    if isinstance(error, RateLimitedError):
        return _RATE_LIMITED
    return sentence(error.reason)


@router.post("/card/{action}")
async def card_action(request: Request, action: str) -> Response:
    if action not in ("activate", "deactivate"):
        raise NotFoundError(f"no action {action[:40]!r}")
    try:
        form = await read_form(request)
    except FormError as exc:
        return await run_in_threadpool(_page, request, None, exc)
    return await run_in_threadpool(_apply, request, action, form)


def _apply(request: Request, action: str, form: dict[str, str]) -> Response:
    try:
        with transaction(request) as service:
            user = signed_in(request, service, "resident")
            check_csrf(user, form.get("csrf"))
            uid = field(form, "uid", "uid", "Card number")
            if action == "activate":
                code = field(form, "code", "code", "Activation code")
                service.self_activate(user.caller.person, uid, code)
            else:
                service.self_deactivate(user.caller.person, uid)
    except CloudError as exc:
        return _page(request, None, exc)
    return RedirectResponse(f"{base_path(request)}/card?done={action}", status_code=303)

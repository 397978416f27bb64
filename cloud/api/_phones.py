"""Routes for phones: logging in, and fetching the bundles to carry to doors.

Theory of operation: a resident logs a phone in with its public key and gets a
signed mobile credential and a phone token, both shown once (the first-use rule
applies); with that token the phone fetches the sealed bundle of every door it
can open that is behind.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import CurrentService, issue_token
from ._schemas import BundlesOut, PhoneCaller, PhoneLoginIn, PhoneLoginOut, ResidentCaller

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.post("/phones/login", tags=["phones"], status_code=201, summary="Log a phone in")
def phone_login(
    body: PhoneLoginIn, service: CurrentService, caller: ResidentCaller
) -> PhoneLoginOut:
    credential = service.login_phone(caller.person, bytes.fromhex(body.public_key))
    phone_id = credential.credential_id.hex()
    return PhoneLoginOut(
        phone_id=phone_id,
        token=issue_token(service, "phone", phone_id),
        credential=credential.to_bytes().hex(),
        valid_from=credential.valid_from,
        valid_until=credential.valid_until,
        doors=[d.hex() for d in credential.scope_ids],
    )


@router.get("/phones/bundles", tags=["phones"], summary="Bundles to carry to your doors")
def phone_bundles(service: CurrentService, caller: PhoneCaller) -> BundlesOut:
    frames = service.pending_bundles(caller.person)
    return BundlesOut(bundles={door: frame.hex() for door, frame in sorted(frames.items())})

"""The phone's side of the cloud's HTTP API: log in, fetch bundles, upload what locks hand over.

Theory of operation
-------------------
:class:`CloudClient` is a thin, typed adapter over the cloud API (``cloud.api``) with an
``httpx.AsyncClient``; it holds no state but the bearer token. It tells apart the two
ways a call can fail, because the phone acts differently on each:

* :class:`CloudUnreachableError` — no answer (no signal, DNS, refused connection, a
  timeout, a 5xx): the phone keeps working offline. Uploads go to the store-and-forward
  queue (:class:`phone_bridge.store.PhoneStore`) and are drained later.
* :class:`CloudRefusedError` — the cloud answered 4xx with a ``problem+json`` reason a
  person can act on (``status``, ``title``, ``detail``): retrying the same call will not
  help, so the error is shown, and a refused upload is not queued again.

Calls: :meth:`CloudClient.login` (a resident's token and the phone's Ed25519 public key
give a phone token and a signed mobile credential; the client then uses the phone
token), :meth:`CloudClient.bundles` (the sealed BUNDLE frame of every door the person
can open that is behind), :meth:`CloudClient.upload` (a RECEIPT or AUDIT_BATCH frame,
answered for audits with the cloud-signed AUDIT_ACK frame to give the lock next time),
:meth:`CloudClient.rotations` (the KEY_ROTATION frames a lock at an older key epoch
needs, ``docs/protocol.md`` §6.7) and :meth:`CloudClient.time_sync` (a TIME_SYNC for one
door bound to the challenge of its HELLO, or none when the lock's clock is right, §6.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx

from .errors import PhoneBridgeError
from .store import Upload, UploadKind

__all__ = [
    "CloudClient",
    "CloudClientError",
    "CloudRefusedError",
    "CloudUnreachableError",
    "PhoneLogin",
    "Rotations",
    "TimeSyncAnswer",
    "UploadAnswer",
]

DEFAULT_TIMEOUT_S: Final = 10.0
_UPLOAD_PATHS: Final = {UploadKind.RECEIPT: "receipts", UploadKind.AUDIT: "audit"}


class CloudClientError(PhoneBridgeError):
    """A cloud call failed; the message says which call and why."""


class CloudUnreachableError(CloudClientError):
    """No usable answer (network, timeout, server error): work offline and retry later."""


class CloudRefusedError(CloudClientError):
    """The cloud refused the call (4xx); ``detail`` is its reason."""

    def __init__(self, call: str, status: int, title: str, detail: str) -> None:
        super().__init__(f"{call}: {status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail


@dataclass(frozen=True)
class PhoneLogin:
    """What a login returns: the phone's token and its signed mobile credential."""

    phone_id: str
    token: str
    credential: bytes
    valid_from: int
    valid_until: int
    doors: tuple[str, ...]


@dataclass(frozen=True)
class UploadAnswer:
    """The cloud's answer to an upload: for an audit batch, the AUDIT_ACK frame to deliver."""

    door_id: str
    pending: bool | None = None
    ack_frame: bytes | None = None


@dataclass(frozen=True)
class Rotations:
    """The cloud's key epoch and the KEY_ROTATION frames above the epoch asked for, in order."""

    epoch: int
    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class TimeSyncAnswer:
    """The cloud's answer to a time-sync request: a TIME_SYNC frame, or None (not needed)."""

    door_id: str
    cloud_time: int
    lock_time: int
    frame: bytes | None = None
    sequence: int | None = None
    key_epoch: int | None = None


class CloudClient:
    """The cloud API at ``base_url`` (e.g. ``http://127.0.0.1:8000``), as one phone."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the cloud URL must start with http:// or https://; got {base_url!r}")
        self.token = token
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self, resident_token: str, public_key: bytes) -> PhoneLogin:
        """Log this phone in for the resident; later calls use the phone token it returns."""
        body = await self._call(
            "POST",
            "/v1/phones/login",
            "log the phone in",
            token=resident_token,
            json={"public_key": public_key.hex()},
        )
        login = PhoneLogin(
            phone_id=body["phone_id"],
            token=body["token"],
            credential=bytes.fromhex(body["credential"]),
            valid_from=int(body["valid_from"]),
            valid_until=int(body["valid_until"]),
            doors=tuple(body["doors"]),
        )
        self.token = login.token
        return login

    async def bundles(self) -> dict[str, bytes]:
        """Door id → sealed BUNDLE frame, for every door of this person that is behind."""
        body = await self._call("GET", "/v1/phones/bundles", "fetch bundles")
        return {door: bytes.fromhex(frame) for door, frame in body["bundles"].items()}

    async def upload(self, item: Upload) -> UploadAnswer:
        """Upload one RECEIPT or AUDIT_BATCH frame a lock handed over."""
        path = f"/v1/doors/{item.door_id}/{_UPLOAD_PATHS[item.kind]}"
        body = await self._call(
            "POST", path, f"upload a {item.kind.value}", json={"frame": item.frame.hex()}
        )
        if item.kind is UploadKind.AUDIT:
            return UploadAnswer(door_id=body["door_id"], ack_frame=bytes.fromhex(body["ack"]))
        return UploadAnswer(door_id=body["door_id"], pending=bool(body["pending"]))

    async def rotations(self, *, after: int) -> Rotations:
        """The KEY_ROTATION frames introducing every epoch above ``after``, oldest first."""
        body = await self._call(
            "GET", "/v1/phones/rotations", "fetch key rotations", params={"after": after}
        )
        frames = tuple(bytes.fromhex(frame) for frame in body["rotations"])
        return Rotations(epoch=int(body["epoch"]), frames=frames)

    async def time_sync(self, door_id: str, *, challenge: bytes, lock_time: int) -> TimeSyncAnswer:
        """A TIME_SYNC for ``door_id`` bound to its HELLO ``challenge``, if its clock is off."""
        body = await self._call(
            "POST",
            f"/v1/phones/doors/{door_id}/time-sync",
            "ask for a time sync",
            json={"challenge": challenge.hex(), "lock_time": lock_time},
        )
        frame = body.get("frame")
        return TimeSyncAnswer(
            door_id=body["door_id"],
            cloud_time=int(body["cloud_time"]),
            lock_time=int(body["lock_time"]),
            frame=None if frame is None else bytes.fromhex(frame),
            sequence=body.get("sequence"),
            key_epoch=body.get("key_epoch"),
        )

    async def _call(
        self, method: str, path: str, call: str, *, token: str | None = None, **options: Any
    ) -> dict[str, Any]:
        bearer = token or self.token
        if bearer is None:
            raise CloudClientError(f"{call}: log the phone in first (no token)")
        headers = {"Authorization": f"Bearer {bearer}"}
        try:
            response = await self._http.request(method, path, headers=headers, **options)
        except httpx.HTTPError as exc:
            raise CloudUnreachableError(f"{call}: the cloud did not answer: {exc!r}") from exc
        if response.status_code >= 500:
            raise CloudUnreachableError(f"{call}: the cloud failed ({response.status_code})")
        if response.status_code >= 400:
            problem = _problem(response)
            raise CloudRefusedError(
                call,
                response.status_code,
                str(problem.get("title", response.reason_phrase)),
                str(problem.get("detail", response.text[:200])),
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise CloudUnreachableError(f"{call}: the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise CloudUnreachableError(f"{call}: the answer is not a JSON object")
        return body


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

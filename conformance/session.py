"""One check's world: a freshly provisioned lock under test, the suite's cloud, helpers.

Theory of operation: the runner builds a :class:`Session` per requirement: it makes a
:class:`~conformance.cloud.SuiteCloud`, provisions the lock through
:meth:`~conformance.lut.LockUnderTest.provision`, and hands both to the check. The
helpers turn what the lock sent into verified protocol messages (a frame the lock sends
that does not decode is itself a failure) and express the recurring judgements — "this
frame is refused with code X and changes nothing", "this bundle is applied and
receipted", "the audit log as the lock reports it" — with failure messages that say
what was expected, what happened, and which section of ``docs/protocol.md`` rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import (
    AuditEvent,
    Credential,
    ErrorCode,
    ErrorMessage,
    Hello,
    Message,
    MessageType,
    ProtocolError,
    Receipt,
    ReceiptStatus,
    UnlockResult,
)
from protocol._message import REGISTRY
from protocol.frame import decode_frame

from .cloud import SuiteCloud
from .lut import MQTT, Channel, LockUnderTest, Observed, Outputs, Registration
from .registry import CheckFailed, NotApplicable

__all__ = ["DAY", "T0", "Session"]

T0 = 1_700_000_000
"""Lock time at provisioning: Tuesday 2023-11-14 22:13:20 UTC."""
DAY = 86_400
SUITE_CAPACITY = 32
"""The credential capacity the suite asks for (a lock may report another)."""


@dataclass
class Session:
    """A provisioned lock and the cloud that provisioned it."""

    lock: LockUnderTest
    cloud: SuiteCloud
    _ble: int = field(default=0)

    @classmethod
    def start(cls, lock: LockUnderTest, *, lock_time: int = T0) -> Session:
        cloud = SuiteCloud(lock_time=lock_time, capacity=SUITE_CAPACITY)
        cloud.registration = lock.provision(cloud.provision_request())
        if cloud.registration.door_id != cloud.door_id:
            raise CheckFailed("provisioning: the registration names another door id")
        return cls(lock, cloud)

    @property
    def reg(self) -> Registration:
        return self.cloud.reg

    def need(self, capability: str) -> None:
        if capability not in self.reg.capabilities:
            raise NotApplicable(f"the adapter does not offer {capability!r}")

    # --- reading what the lock sent ------------------------------------------------------

    def messages(self, outputs: Outputs) -> list[Message]:
        """Every frame the lock sent, decoded (signed forms parsed, not yet verified)."""
        decoded = []
        for sent in outputs.frames:
            try:
                _, kind, payload = decode_frame(sent.frame)
                decoded.append(REGISTRY[MessageType(kind)].from_bytes(payload))
            except ProtocolError as exc:
                raise CheckFailed(
                    f"the lock sent a frame that does not decode ({exc}): {sent.frame.hex()}"
                ) from None
        return decoded

    def errors(self, outputs: Outputs) -> list[ErrorCode]:
        return [m.code for m in self.messages(outputs) if isinstance(m, ErrorMessage)]

    def receipts(self, outputs: Outputs) -> list[Receipt]:
        """The RECEIPTs sent, each verified with the lock's registered identity key."""
        self.messages(outputs)  # every frame must decode first
        found = []
        for sent in outputs.frames:
            _, kind, payload = decode_frame(sent.frame)
            if kind == MessageType.RECEIPT:
                try:
                    found.append(self.cloud.verify_receipt(payload))
                except ProtocolError as exc:
                    raise CheckFailed(f"a RECEIPT fails the lock's signature: {exc}") from None
        return found

    def receipt_frames(self, outputs: Outputs) -> list[bytes]:
        return [s.frame for s in outputs.frames if s.frame[3:4] == bytes([MessageType.RECEIPT])]

    def one_receipt(self, outputs: Outputs, what: str) -> Receipt:
        receipts = self.receipts(outputs)
        if len(receipts) != 1:
            raise CheckFailed(
                f"{what}: expected one RECEIPT, got {len(receipts)}"
                f" (lock sent {self.describe(outputs)})"
            )
        return receipts[0]

    def unlock_result(self, outputs: Outputs, what: str) -> UnlockResult:
        results = [m for m in self.messages(outputs) if isinstance(m, UnlockResult)]
        if len(results) != 1:
            raise CheckFailed(
                f"{what}: expected one UNLOCK_RESULT, got {self.describe(outputs)} (§4.3)"
            )
        return results[0]

    def describe(self, outputs: Outputs) -> str:
        """A short account of the frames sent, for failure messages."""
        parts = []
        for message in self.messages(outputs):
            if isinstance(message, ErrorMessage):
                parts.append(f"ERROR {message.code.name}")
            elif isinstance(message, Receipt):
                parts.append(f"RECEIPT {message.status.name} v{message.list_version}")
            elif isinstance(message, UnlockResult):
                parts.append(f"UNLOCK_RESULT {message.reason.name}")
            else:
                parts.append(type(message).__name__)
        return ", ".join(parts) or "nothing"

    # --- stimuli with judgement ----------------------------------------------------------

    def deliver(self, frame: bytes, channel: Channel = MQTT) -> Outputs:
        return self.lock.deliver(channel, frame)

    def observe(self) -> Observed:
        return self.lock.observe()

    def load(self, *credentials: Credential, what: str = "bundle") -> Receipt:
        """Commit ``credentials`` and deliver the bundle from the lock's version: must apply."""
        self.cloud.commit(*credentials)
        return self.expect_applied(self.cloud.bundle(self.observe().list_version), what)

    def expect_applied(self, frame: bytes, what: str, channel: Channel = MQTT) -> Receipt:
        outputs = self.deliver(frame, channel)
        receipt = self.one_receipt(outputs, what)
        current = self.cloud.current
        if receipt.status is not ReceiptStatus.OK or receipt.list_version != current.version:
            raise CheckFailed(
                f"{what}: expected RECEIPT OK at v{current.version}, got"
                f" {receipt.status.name} at v{receipt.list_version} (§6.2.2, §6.3)"
            )
        if receipt.list_digest != current.digest:
            raise CheckFailed(f"{what}: the receipted digest is not the list's digest (§5.2)")
        self.expect_state(current.version, current.digest, what)
        return receipt

    def expect_state(self, version: int, digest: bytes, what: str) -> None:
        seen = self.observe()
        if seen.list_version != version or seen.list_digest != digest:
            same = "same" if seen.list_digest == digest else "other"
            raise CheckFailed(
                f"{what}: the lock holds v{seen.list_version} ({same} digest);"
                f" expected v{version} with the cloud's digest"
            )

    def expect_refused(
        self,
        frame: bytes,
        code: ErrorCode | tuple[ErrorCode, ...],
        what: str,
        channel: Channel = MQTT,
    ) -> Outputs:
        """Deliver ``frame``: the lock must answer ERROR ``code`` and change nothing."""
        codes = code if isinstance(code, tuple) else (code,)
        before = self.observe()
        outputs = self.deliver(frame, channel)
        errors = self.errors(outputs)
        if not any(e in codes for e in errors):
            wanted = " or ".join(c.name for c in codes)
            raise CheckFailed(
                f"{what}: expected ERROR {wanted}; lock sent {self.describe(outputs)}"
            )
        self.expect_unchanged(before, what)
        return outputs

    def expect_unchanged(self, before: Observed, what: str) -> None:
        after = self.observe()
        for name in ("list_version", "list_digest", "key_epoch"):
            if getattr(after, name) != getattr(before, name):
                raise CheckFailed(
                    f"{what}: {name} changed from {getattr(before, name)!r}"
                    f" to {getattr(after, name)!r}; a refused message must change nothing"
                )

    # --- sessions and the audit log ------------------------------------------------------

    def ble(self) -> tuple[Channel, Hello]:
        """A phone connects over BLE: the lock's HELLO (§4.1)."""
        self._ble += 1
        channel = Channel("ble", self._ble)
        outputs = self.lock.connect(channel)
        hellos = [m for m in self.messages(outputs) if isinstance(m, Hello)]
        if len(hellos) != 1:
            raise CheckFailed(f"connect: expected one HELLO, got {self.describe(outputs)} (§4.1)")
        return channel, hellos[0]

    def audit(self) -> list[AuditEvent]:
        """The held events, as the lock reports them on a fresh MQTT session (§6.4)."""
        outputs = self.lock.connect(MQTT)
        self.lock.disconnect(MQTT)
        self.messages(outputs)
        events: list[AuditEvent] = []
        for sent in outputs.frames:
            _, kind, payload = decode_frame(sent.frame)
            if kind == MessageType.AUDIT_BATCH:
                try:
                    events.extend(self.cloud.verify_audit(payload).events)
                except ProtocolError as exc:
                    raise CheckFailed(f"an AUDIT_BATCH is refused by the cloud: {exc}") from None
        return events

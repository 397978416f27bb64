"""The message base classes and the type registry (``docs/protocol.md`` §3).

Theory of operation: every message is a frozen, keyword-only dataclass whose
fields are validated in ``__post_init__`` and whose payload layout is one compiled
``construct`` struct (``_FORMAT``) with the same field names. ``to_bytes`` /
``from_bytes`` convert the payload; ``to_frame`` / :func:`decode_message` add the
frame envelope and dispatch on the message type through :data:`REGISTRY`.
A hot message may override :meth:`SignedMessage.body_bytes` and
``_parse_body`` with hand-written ``struct`` code; ``_FORMAT`` then stays the
normative declaration, and a property test must prove the two agree byte for
byte and error for error (``AuditBatch``: ``tests/test_audit_codec_speed.py``).

A :class:`SignedMessage` payload is ``body || signature`` with a 64-byte Ed25519
signature over ``context || body``. :meth:`SignedMessage.verified_from_bytes`
checks the signature over the exact received bytes *before* parsing them; plain
``from_bytes`` only parses (for tools and tests) and proves nothing.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, ClassVar, Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._codec import SIGNATURE_SIZE, parse_exact
from .codes import MessageType
from .crypto import SignContext, sign, verify
from .errors import MalformedMessageError, TruncatedError, UsageError
from .frame import decode_frame, encode_frame
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["REGISTRY", "Message", "SignedMessage", "decode_message", "register"]

REGISTRY: dict[MessageType, type[Message]] = {}
M = TypeVar("M", bound="type[Message]")


def register(cls: M) -> M:
    """Class decorator: enter a message class in :data:`REGISTRY` under its ``TYPE``."""
    if cls.TYPE in REGISTRY:
        raise UsageError(f"message type {cls.TYPE!r} registered twice")
    REGISTRY[cls.TYPE] = cls
    return cls


class Message:
    """Base of all messages. Subclasses are frozen keyword-only dataclasses."""

    TYPE: ClassVar[MessageType]
    _FORMAT: ClassVar[Any]

    def check_limits(self, limits: Limits) -> None:
        """Raise :class:`TooLargeError` if a count exceeds ``limits`` (override)."""

    def _to_container(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def _from_container(cls, c: Any) -> Self:
        return cls(**{f.name: c[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        """The message payload (without the frame envelope)."""
        return bytes(self._FORMAT.build(self._to_container()))

    @classmethod
    def from_bytes(cls, payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Parse a payload; raise a :class:`DecodeError` subclass on any fault."""
        return cls._parse(cls._FORMAT, payload, limits)

    @classmethod
    def _from_fields(cls, limits: Limits, **fields: Any) -> Self:
        """The message from decoded fields, as :meth:`_parse` makes it: a field the
        constructor refuses is a :class:`MalformedMessageError`; then ``limits``."""
        try:
            message = cls(**fields)
        except UsageError as exc:
            raise MalformedMessageError(f"{cls.TYPE.name}: {exc}") from None
        message.check_limits(limits)
        return message

    @classmethod
    def _parse(cls, fmt: Any, data: bytes, limits: Limits) -> Self:
        container = parse_exact(fmt, data, cls.TYPE.name)
        try:
            message = cls._from_container(container)
        except UsageError as exc:
            raise MalformedMessageError(f"{cls.TYPE.name}: {exc}") from None
        message.check_limits(limits)
        return message

    def to_frame(self) -> bytes:
        """The complete frame carrying this message."""
        return encode_frame(self.TYPE, self.to_bytes())


class SignedMessage(Message):
    """A message whose payload is ``body || signature``; ``signature`` is a field."""

    CONTEXT: ClassVar[SignContext]
    signature: bytes

    def body_bytes(self) -> bytes:
        """The signed body: the payload without the trailing signature."""
        container = self._to_container()
        del container["signature"]
        return bytes(self._FORMAT.build(container))

    def to_bytes(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise UsageError(f"{self.TYPE.name} is not signed; call .signed(key) first")
        return self.body_bytes() + self.signature

    def signed(self, key: Ed25519PrivateKey) -> Self:
        """A copy carrying a signature by ``key`` over the body."""
        signature = sign(key, self.CONTEXT, self.body_bytes())
        return replace(self, signature=signature)  # type: ignore[type-var]

    def signed_frame(self, key: Ed25519PrivateKey) -> bytes:
        """``self.signed(key).to_frame()``, building the body once and no second message."""
        body = self.body_bytes()
        return encode_frame(self.TYPE, body + sign(key, self.CONTEXT, body))

    def verify(self, key: Ed25519PublicKey) -> None:
        """Check the signature over the canonical body; raise AuthenticationError."""
        verify(key, self.CONTEXT, self.body_bytes(), self.signature)

    @classmethod
    def from_bytes(cls, payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Self:
        body, signature = _split_signature(payload, cls.TYPE)
        return cls._parse_body(body, signature, limits)

    @classmethod
    def verified_from_bytes(
        cls, payload: bytes, key: Ed25519PublicKey, *, limits: Limits = DEFAULT_LIMITS
    ) -> Self:
        """Verify the signature over the exact received body, then parse it."""
        body, signature = _split_signature(payload, cls.TYPE)
        verify(key, cls.CONTEXT, body, signature)
        return cls._parse_body(body, signature, limits)

    @classmethod
    def _parse_body(cls, body: bytes, signature: bytes, limits: Limits) -> Self:
        container = parse_exact(cls._FORMAT, body, cls.TYPE.name)
        container["signature"] = signature
        try:
            message = cls._from_container(container)
        except UsageError as exc:
            raise MalformedMessageError(f"{cls.TYPE.name}: {exc}") from None
        message.check_limits(limits)
        return message


def _split_signature(payload: bytes, message_type: MessageType) -> tuple[bytes, bytes]:
    if len(payload) < SIGNATURE_SIZE:
        raise TruncatedError(
            f"{message_type.name}: shorter than its {SIGNATURE_SIZE}-byte signature"
        )
    return bytes(payload[:-SIGNATURE_SIZE]), bytes(payload[-SIGNATURE_SIZE:])


def decode_message(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one frame and its payload into the registered message class.

    This parses only; signed messages must still be verified by the receiver
    (or decoded with their class's ``verified_from_bytes``).
    """
    _, message_type, payload = decode_frame(data, limits=limits)
    return REGISTRY[MessageType(message_type)].from_bytes(payload, limits=limits)

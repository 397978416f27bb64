"""The phone-unlock fast path keeps every check: the lock's verified-credential cache.

A lock remembers the exact mobile-credential bytes whose cloud signature it verified
under its current cloud key (``controller/core.py``), and ``Auth.from_bytes_known``
takes such a credential instead of parsing it again. These tests show that a cache
hit skips only that work: other keys' signatures are still refused, a key rotation
forgets the cache, the window, scope, lockout and the phone's fresh challenge
signature are checked on every AUTH, the cache is bounded, and the lock persists and
decides exactly as without the cache. ``Auth.from_bytes_known`` agrees with
``Auth.from_bytes`` result for result and error for error, and the credential's
``struct`` decoder with the construct declaration (and its bytes with what the
declaration builds back), and HELLO's ``struct`` codec with its declaration.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import ControllerConfig
from protocol import Auth, Hello, Intent, MobileCredential, Reason, ScopeKind, UnlockResult
from protocol._message import Message, SignedMessage, _split_signature
from protocol.errors import AuthenticationError, MalformedMessageError, ProtocolError
from protocol.limits import DEFAULT_LIMITS, Limits
from simulators.fixture import fixed_bytes
from tests.controller_harness import (
    DAY,
    WORLD,
    LockRig,
    person_entry,
    phone_key,
)
from tests.strategies import hellos, mobile_credentials

PERSON = 1


def _rig(*people: int, config: ControllerConfig | None = None) -> LockRig:
    return LockRig.provision(*(person_entry(n) for n in people or (PERSON,)), config=config)


def _credential(rig: LockRig, person: int = PERSON, **kw: Any) -> MobileCredential:
    t = rig.lock_time
    fields: dict[str, Any] = {"valid_from": t - DAY, "valid_until": t + 7 * DAY, **kw}
    return rig.cloud.mobile_credential(person, **fields)


def _reason(rig: LockRig, credential: MobileCredential, **kw: Any) -> str:
    return rig.phone_unlock(PERSON, credential=credential, **kw).reason.name


@pytest.fixture
def cloud_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records every cloud-signature check of a mobile credential the lock makes."""
    seen: list[bytes] = []
    original = MobileCredential.verify

    def counting(credential: MobileCredential, key: Any) -> None:
        seen.append(credential.to_bytes())
        original(credential, key)

    monkeypatch.setattr(MobileCredential, "verify", counting)
    return seen


def test_a_credential_is_verified_against_the_cloud_key_once(cloud_checks: list[bytes]) -> None:
    rig = _rig()
    credential = _credential(rig)
    for _ in range(3):
        assert _reason(rig, credential) == "GRANTED"
    assert cloud_checks == [credential.to_bytes()]


def test_credential_signed_by_another_key_is_refused_after_a_genuine_one_was_cached(
    cloud_checks: list[bytes],
) -> None:
    rig = _rig()
    genuine = _credential(rig)
    assert _reason(rig, genuine) == "GRANTED"
    forged = _credential(rig, key=WORLD.cloud_key_at(99))  # same fields, another signer
    assert forged.to_bytes()[:-64] == genuine.to_bytes()[:-64]
    for _ in range(2):
        assert _reason(rig, forged) == "BAD_SIGNATURE"
    assert forged.to_bytes() not in rig.controller._verified
    assert _reason(rig, genuine) == "GRANTED"
    assert cloud_checks.count(forged.to_bytes()) == 2  # never remembered, checked each time


def test_credential_with_a_swapped_signature_is_refused_after_the_genuine_one() -> None:
    rig = _rig()
    genuine = _credential(rig)
    other = _credential(rig, valid_until=rig.lock_time + 6 * DAY)
    assert _reason(rig, genuine) == "GRANTED"
    spliced = dataclasses.replace(genuine, signature=other.signature)
    assert _reason(rig, spliced) == "BAD_SIGNATURE"


def test_key_rotation_forgets_credentials_verified_under_the_old_key() -> None:
    rig = _rig()
    old = _credential(rig)
    assert _reason(rig, old) == "GRANTED"
    assert rig.deliver(rig.cloud.rotate()).errors == []
    assert _reason(rig, old) == "BAD_SIGNATURE"
    forged = _credential(rig, key=WORLD.cloud_key_at(99))
    assert _reason(rig, forged) == "BAD_SIGNATURE"
    new = _credential(rig)
    assert _reason(rig, new) == "GRANTED"
    assert list(rig.controller._verified) == [new.to_bytes()]


def test_a_reboot_after_rotation_starts_with_no_remembered_credential() -> None:
    rig = _rig()
    old = _credential(rig)
    assert _reason(rig, old) == "GRANTED"
    rig.deliver(rig.cloud.rotate())
    rig.reboot()
    assert rig.controller._verified == {}
    assert _reason(rig, old) == "BAD_SIGNATURE"
    assert _reason(rig, _credential(rig)) == "GRANTED"


def test_a_cached_credential_still_expires() -> None:
    rig = _rig()
    credential = _credential(rig, valid_until=rig.lock_time + 60)
    assert _reason(rig, credential) == "GRANTED"
    rig.advance(61)
    assert _reason(rig, credential) == "CREDENTIAL_EXPIRED"


def test_a_cached_credential_is_still_checked_for_scope_and_list_entry() -> None:
    rig = _rig()
    elsewhere = _credential(rig, scope_ids=(fixed_bytes("another door", 16),))
    assert _reason(rig, elsewhere) == "WRONG_DOOR"
    assert _reason(rig, elsewhere) == "WRONG_DOOR"
    stranger = rig.cloud.mobile_credential(
        7, valid_from=rig.lock_time - DAY, valid_until=rig.lock_time + DAY
    )
    for _ in range(2):
        outcome = rig.phone_unlock(7, credential=stranger)
        assert outcome.reason.name == "UNKNOWN_CREDENTIAL"


def test_a_cached_credential_still_needs_the_phone_key_and_a_fresh_challenge() -> None:
    rig = _rig()
    credential = _credential(rig)
    assert _reason(rig, credential) == "GRANTED"
    assert _reason(rig, credential, phone=phone_key(2)) == "BAD_SIGNATURE"
    channel, hello = rig.connect()
    frame = rig.auth_frame(credential, phone_key(PERSON), challenge=hello.challenge)
    assert rig.deliver(frame, channel).reason.name == "GRANTED"
    rig.disconnect(channel)
    channel, _ = rig.connect()
    assert rig.deliver(frame, channel).reason.name == "BAD_SIGNATURE"  # replayed AUTH


def test_a_cached_credential_is_still_locked_out() -> None:
    rig = _rig()
    credential = _credential(rig)
    assert _reason(rig, credential) == "GRANTED"
    for _ in range(rig.config.lockout_failures):
        assert _reason(rig, credential, phone=phone_key(2)) == "BAD_SIGNATURE"
    assert _reason(rig, credential) == "LOCKED_OUT"


def test_the_cache_is_bounded_and_keeps_the_most_recently_used() -> None:
    rig = _rig(1, 2, 3, config=ControllerConfig(verified_credentials=2))
    creds = {
        n: rig.cloud.mobile_credential(n, valid_from=1, valid_until=2**32 - 1) for n in (1, 2, 3)
    }
    for n in (1, 2, 1, 3):
        assert rig.phone_unlock(n, credential=creds[n]).reason.name == "GRANTED"
    assert list(rig.controller._verified) == [creds[1].to_bytes(), creds[3].to_bytes()]
    assert rig.phone_unlock(2, credential=creds[2]).reason.name == "GRANTED"
    assert len(rig.controller._verified) == 2


def _session(rig: LockRig, use_cache: bool) -> None:
    """A fixed mix of phone unlocks, refusals and a rotation."""
    a, b = _credential(rig), _credential(rig, scope=ScopeKind.PROPERTY)
    forged = _credential(rig, key=WORLD.cloud_key_at(99))
    steps: list[Callable[[], Any]] = [
        lambda: rig.phone_unlock(PERSON, credential=a),
        lambda: rig.phone_unlock(PERSON, credential=forged),
        lambda: rig.phone_unlock(PERSON, credential=b, intent=Intent.SYNC_ONLY),
        lambda: rig.phone_unlock(PERSON, credential=a, phone=phone_key(3)),
        lambda: rig.phone_unlock(PERSON, credential=a),
        lambda: rig.deliver(rig.cloud.rotate()),
        lambda: rig.phone_unlock(PERSON, credential=a),
        lambda: rig.phone_unlock(PERSON, credential=b),
    ]
    for step in steps * 2:
        if not use_cache:
            rig.controller._verified.clear()
        step()
        rig.advance(1)


def test_the_lock_decides_and_persists_exactly_as_without_the_cache() -> None:
    with_cache, without = _rig(), _rig()
    _session(with_cache, use_cache=True)
    _session(without, use_cache=False)
    assert with_cache.log == without.log  # every action: frames, decisions, journal bytes
    assert with_cache.flash == without.flash
    assert with_cache.view == without.view


# --- Auth.from_bytes_known agrees with Auth.from_bytes ------------------------------------


def _outcome(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except ProtocolError as error:
        return (type(error), str(error))


def _payloads() -> list[bytes]:
    rig = _rig()
    credential = _credential(rig)
    good = Auth.create(
        credential=credential, phone_key=phone_key(PERSON), door_id=rig.door_id, challenge=bytes(16)
    ).to_bytes()
    cut = 3 + len(credential.to_bytes())
    rng = random.Random(4242)
    cases = [
        good,
        b"\x07" + good[1:],  # not an intent
        b"\x01" + good[1:],
        good + b"\x00",
        good[:-1],
        good[:3],
        b"",
        good[:1] + (len(credential.to_bytes()) + 1).to_bytes(2, "big") + good[3:],
        good[:1] + (len(credential.to_bytes()) - 1).to_bytes(2, "big") + good[3:],
        good[:cut] + bytes(64),
    ]
    for _ in range(300):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(bytes(mutated))
    return cases


@pytest.mark.parametrize("remembered", [True, False])
@pytest.mark.parametrize("scope_doors", [DEFAULT_LIMITS.max_scope_doors, 0])
def test_from_bytes_known_agrees_with_from_bytes(scope_doors: int, remembered: bool) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, max_scope_doors=scope_doors)
    payloads = _payloads()
    known: dict[bytes, MobileCredential] = {}
    for payload in payloads:  # what a lock verified earlier, under the default limits
        parsed = _outcome(partial(Auth.from_bytes, payload))
        if isinstance(parsed, Auth) and remembered:
            known[parsed.credential.to_bytes()] = parsed.credential
    assert bool(known) == remembered
    for payload in payloads:
        expected = _outcome(partial(Auth.from_bytes, payload, limits=limits))
        got = _outcome(partial(Auth.from_bytes_known, payload, known.get, limits=limits))
        assert got == expected
        if isinstance(got, Auth) and remembered:
            assert got.credential is known[got.credential.to_bytes()]
        if isinstance(got, Auth):
            assert got.credential.to_bytes() == _declared(got.credential)


# --- the credential's struct decoder agrees with the construct declaration ----------------

_REFERENCE_BODY = super(MobileCredential, MobileCredential)._parse_body  # construct


def _reference_credential(payload: bytes, limits: Limits) -> MobileCredential:
    """The declared decoding: construct over ``_FORMAT``, then re-encode and compare."""
    body, signature = _split_signature(payload, MobileCredential.TYPE)
    message = _REFERENCE_BODY(body, signature, limits)
    if _declared(message) != payload:
        raise MalformedMessageError("mobile credential is not canonically encoded")
    return message


def _credential_outcome(parse: Callable[[], MobileCredential]) -> object:
    try:
        credential = parse()
    except ProtocolError as error:
        return (type(error), str(error), vars(error))
    return (credential, credential.to_bytes(), _declared(credential))


def _credential_cases(credential: MobileCredential, rnd: random.Random) -> list[bytes]:
    good = credential.to_bytes()
    body, signature = good[:-64], good[-64:]
    count_at = 77
    cases = [good, good[:-1], good + b"\x00", good[:64], good[:140], b"", good[:78]]
    for count in (0, body[count_at] + 1, max(0, body[count_at] - 1), 255):
        cases.append(body[:count_at] + bytes([count]) + body[count_at + 1 :] + signature)
    for kind in (0, 3, 255):  # scope kinds out of range
        cases.append(body[: count_at - 1] + bytes([kind]) + body[count_at:] + signature)
    window = body[:72] + body[76:80] + body[72:76] + body[80:]  # valid_until before valid_from
    cases.append(window + signature)
    scope = body[78:]
    if len(scope) >= 32:  # a repeated scope id
        cases.append(body[:78] + scope[:16] + scope[:16] + scope[32:] + signature)
    for _ in range(20):
        mutated = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        cases.append(bytes(mutated))
    return cases


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(credential=mobile_credentials(), seed=st.integers(0, 2**32), limited=st.booleans())
def test_the_credential_decoder_agrees_with_the_declared_format(
    credential: MobileCredential, seed: int, limited: bool
) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, max_scope_doors=1) if limited else DEFAULT_LIMITS
    for payload in _credential_cases(credential, random.Random(seed)):
        expected = _credential_outcome(partial(_reference_credential, payload, limits))
        got = _credential_outcome(partial(MobileCredential.from_bytes, payload, limits=limits))
        assert got == expected


@given(payload=st.binary(max_size=400))
def test_the_credential_decoder_agrees_on_arbitrary_bytes(payload: bytes) -> None:
    expected = _credential_outcome(partial(_reference_credential, payload, DEFAULT_LIMITS))
    assert _credential_outcome(partial(MobileCredential.from_bytes, payload)) == expected


def _declared(credential: MobileCredential) -> bytes:
    """The §4.2 encoding built by the declared format: body, then signature."""
    body = bytes(MobileCredential._FORMAT.build(credential._to_container()))
    return body + credential.signature


def test_the_credential_encoding_is_cached_and_never_stale() -> None:
    rig = _rig()
    credential = _credential(rig)
    built = _declared(credential)
    assert credential.to_bytes() == built
    assert MobileCredential.from_bytes(built).to_bytes() == built
    moved = dataclasses.replace(credential, valid_until=credential.valid_until + 1)
    assert moved.to_bytes() != built
    assert moved.to_bytes() == _declared(moved)
    assert moved != credential and repr(moved) != repr(credential)


def test_a_credential_verifies_its_exact_bytes_as_the_declared_form_does() -> None:
    rig = _rig()
    genuine, forged = _credential(rig), _credential(rig, key=WORLD.cloud_key_at(99))
    cloud = rig.state.cloud.key()
    for credential in (genuine, forged):
        parsed = MobileCredential.from_bytes(credential.to_bytes())
        outcomes = []
        for check in (
            partial(parsed.verify, cloud),
            partial(SignedMessage.verify, parsed, cloud),
            partial(MobileCredential.verified_from_bytes, credential.to_bytes(), cloud),
        ):
            outcomes.append(_outcome(check))
        assert (outcomes[0] is None) == (credential is genuine)
        assert outcomes[0] == outcomes[1] and (outcomes[2] == parsed) == (outcomes[0] is None)
    unsigned = dataclasses.replace(genuine, signature=b"")
    refused = _outcome(partial(unsigned.verify, cloud))
    assert refused == _outcome(partial(SignedMessage.verify, unsigned, cloud))
    assert isinstance(refused, tuple) and refused[0] is AuthenticationError


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize(("open_seconds", "audit_seq"), [(0, 0), (5, 43), (255, 2**32 - 1)])
def test_unlock_result_packs_as_the_declared_format(
    reason: Reason, open_seconds: int, audit_seq: int
) -> None:
    seconds = open_seconds if reason is Reason.GRANTED else 0
    result = UnlockResult(
        door_id=fixed_bytes("door", 16), reason=reason, open_seconds=seconds, audit_seq=audit_seq
    )
    declared = bytes(UnlockResult._FORMAT.build(result._to_container()))
    assert result.to_bytes() == declared
    assert UnlockResult.from_bytes(declared) == result


# --- HELLO: the struct codec agrees with the construct declaration --------------------------

_REFERENCE_HELLO = partial(Message._parse.__func__, Hello, Hello._FORMAT)  # construct


def _hello_outcome(parse: Callable[[], Hello]) -> object:
    try:
        hello = parse()
    except ProtocolError as error:
        return (type(error), str(error), vars(error))
    return (hello, hello.to_bytes())


@given(hello=hellos(), cut=st.integers(0, 70), extra=st.binary(max_size=3), data=st.data())
def test_hello_encodes_and_decodes_as_the_declared_format(
    hello: Hello, cut: int, extra: bytes, data: st.DataObject
) -> None:
    declared = bytes(Hello._FORMAT.build(hello._to_container()))
    assert hello.to_bytes() == declared
    count_at = 53
    cases = [declared, declared[:cut], declared + extra]
    for count in (0, 9, 255, data.draw(st.integers(0, 255))):  # versions: none, too many
        cases.append(declared[:count_at] + bytes([count]) + declared[count_at + 1 :])
    cases.append(declared[:24] + bytes([data.draw(st.integers(101, 255))]) + declared[25:])
    for payload in cases:
        expected = _hello_outcome(partial(_REFERENCE_HELLO, payload, DEFAULT_LIMITS))
        assert _hello_outcome(partial(Hello.from_bytes, payload)) == expected


@given(payload=st.binary(max_size=80))
def test_hello_decoder_agrees_on_arbitrary_bytes(payload: bytes) -> None:
    expected = _hello_outcome(partial(_REFERENCE_HELLO, payload, DEFAULT_LIMITS))
    assert _hello_outcome(partial(Hello.from_bytes, payload)) == expected

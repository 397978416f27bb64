"""Credential list storage: the fast entry, change-list and bundle encoders agree with the
construct declarations, and the compact in-memory form behaves as a mapping."""

from __future__ import annotations

from hypothesis import given, settings

from protocol import Credential, CredentialKind, CredentialList
from protocol.bundle import (
    OP_REMOVE,
    OP_UPSERT,
    Change,
    ChangesFormat,
    SealedBundle,
    Upsert,
    encode_changes,
)
from protocol.credential_list import EntryFormat
from tests.strategies import change_lists, credentials, sealed_bundles

DOOR = bytes(range(16))


@settings(max_examples=300, deadline=None)
@given(credentials())
def test_fast_decoder_agrees_with_declaration(entry: Credential) -> None:
    blob = entry.encoded
    assert Credential.from_encoded(blob) == entry
    assert Credential.from_container(EntryFormat.parse(blob)) == entry
    assert blob == EntryFormat.build(entry.to_container())


@settings(max_examples=200, deadline=None)
@given(change_lists())
def test_fast_change_encoder_agrees_with_declaration(changes: list[Change]) -> None:
    ordered = sorted(changes, key=lambda c: c.key)
    declared = ChangesFormat.build({"changes": [_declared(c) for c in ordered]})
    assert encode_changes(changes) == declared


@settings(max_examples=200, deadline=None)
@given(sealed_bundles())
def test_fast_bundle_body_agrees_with_declaration(bundle: SealedBundle) -> None:
    container = {f: getattr(bundle, f) for f in SealedBundle.__dataclass_fields__}
    del container["signature"]
    assert bundle.body_bytes() == SealedBundle._FORMAT.build(container)


def _declared(change: Change) -> dict[str, object]:
    if isinstance(change, Upsert):
        return {"op": OP_UPSERT, "body": change.credential.to_container()}
    return {"op": OP_REMOVE, "body": {"kind": change.kind, "credential_id": change.credential_id}}


def test_mapping_view_of_compact_list() -> None:
    card = Credential(kind=CredentialKind.KEYCARD, credential_id=b"\x04abc", card_key=bytes(16))
    person = Credential(kind=CredentialKind.PERSON, credential_id=b"p" * 16)
    held = CredentialList.build(door_id=DOOR, version=3, entries=[person, card])
    assert list(held) == [card.key, person.key]
    assert card.key in held and (1, b"\x04abd") not in held and "junk" not in held
    assert held[card.key] == card and held.lookup(CredentialKind.PERSON, b"p" * 16) == person
    assert held.lookup(CredentialKind.KEYCARD, b"nope") is None
    smaller = held.with_changes(version=4, upserts=[], removals=[card.key])
    assert len(smaller) == 1 and len(held) == 2 and smaller != held

"""Credential list storage: the fast entry decoder agrees with the construct declaration,
and the compact in-memory form behaves as a mapping."""

from __future__ import annotations

from hypothesis import given, settings

from protocol import Credential, CredentialKind, CredentialList
from protocol.credential_list import EntryFormat
from tests.strategies import credentials

DOOR = bytes(range(16))


@settings(max_examples=300, deadline=None)
@given(credentials())
def test_fast_decoder_agrees_with_declaration(entry: Credential) -> None:
    blob = entry.encoded
    assert Credential.from_encoded(blob) == entry
    assert Credential.from_container(EntryFormat.parse(blob)) == entry


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

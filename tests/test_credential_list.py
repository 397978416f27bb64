"""Credential list storage: the fast entry, change-list and bundle encoders agree with the
construct declarations, and the compact in-memory form behaves as a mapping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Credential, CredentialKind, CredentialList
from protocol.bundle import (
    OP_REMOVE,
    OP_UPSERT,
    Change,
    ChangesFormat,
    Remove,
    SealedBundle,
    Upsert,
    encode_changes,
    encode_entry_changes,
)
from protocol.credential_list import EntryFormat, key_bytes
from protocol.errors import UsageError
from tests.strategies import (
    change_lists,
    credential_ids,
    credential_lists,
    credentials,
    sealed_bundles,
)

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


@settings(max_examples=300, deadline=None)
@given(
    credential_lists(max_entries=40),
    st.lists(credentials(max_windows=2), max_size=60),
    st.lists(st.integers(0, 60), max_size=20),
    st.lists(st.tuples(st.sampled_from(list(CredentialKind)), credential_ids), max_size=5),
)
def test_with_changes_is_removals_then_upserts_one_by_one(
    held: CredentialList,
    upserts: list[Credential],
    dropped: list[int],
    strangers: list[tuple[CredentialKind, bytes]],
) -> None:
    """Both ways of placing changes (one by one, or sorting once) give the list built
    from scratch: removals first (of held keys, upserted keys and absent ones), then the
    upserts in order, the last of a key winning; the input list is unchanged."""
    before = held.to_bytes()
    keys = list(held) + [c.key for c in upserts]
    removals = [keys[n % len(keys)] for n in dropped if keys] + [
        (int(kind), cid) for kind, cid in strangers
    ]
    want = {key: held[key] for key in held}
    for key in removals:
        want.pop(key, None)
    want |= {c.key: c for c in upserts}
    expected = CredentialList.build(door_id=held.door_id, version=7, entries=want.values())
    encoded = [c.encoded for c in upserts]
    removed = [key_bytes(key) for key in removals]
    for result in (
        held.with_changes(version=7, upserts=upserts, removals=removals),
        held._with_few(7, encoded, removed),  # the two ways with_changes may take
        held._with_many(7, encoded, removed),
    ):
        assert result == expected and list(result) == list(expected)
        assert result.to_bytes() == expected.to_bytes() and result.digest == expected.digest
    assert held.to_bytes() == before


@settings(max_examples=300, deadline=None)
@given(change_lists(max_size=30), st.randoms())
def test_stored_change_encoder_agrees_with_encode_changes(
    changes: list[Change], shuffle: random.Random
) -> None:
    """Changes given as entry encodings and key bytes, in any order, encode as the
    decoded changes do; a key changed twice is refused by both."""
    upserts = [c.credential.encoded for c in changes if isinstance(c, Upsert)]
    removals = [key_bytes(c.key) for c in changes if isinstance(c, Remove)]
    shuffle.shuffle(upserts)
    assert encode_entry_changes(upserts, removals) == encode_changes(changes)
    if changes:
        twice = changes[0]
        again = twice.credential.encoded if isinstance(twice, Upsert) else None
        with pytest.raises(UsageError, match="at most once"):
            encode_changes([*changes, twice])
        with pytest.raises(UsageError, match="at most once"):
            if again is None:
                encode_entry_changes(upserts, [*removals, key_bytes(twice.key)])
            else:
                encode_entry_changes([*upserts, again], removals)

"""Envelope encryption and the master keyring: no database needed."""

from __future__ import annotations

import base64
import dataclasses
import os
import uuid
from pathlib import Path

import pytest
from tierwall_notes.envelope import Context, DecryptionError, Sealed, open_sealed, seal
from tierwall_notes.keyring import Keyring, UnknownKeyError, load_keyring, parse_keyring
from tierwall_notes.settings import ConfigError

TEXT = "Session 3: client reports sleeping better; discussed grief about their father. ✓"


def keyring(*ids: str) -> Keyring:
    keys = {key_id: os.urandom(32) for key_id in ids}
    return Keyring(keys=keys, active_id=ids[-1])


def ctx(kind: str = "note") -> Context:
    return Context(kind, uuid.uuid4(), uuid.uuid4())  # type: ignore[arg-type]


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.control("APP-01")
def test_round_trip_and_ciphertext_holds_no_plaintext() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    assert open_sealed(ring, sealed, context) == TEXT
    assert sealed.key_id == "k1"
    assert TEXT.encode() not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert len(sealed.wrapped_key) == 40  # AES-KW of a 256-bit data key
    assert len(sealed.ciphertext) == len(TEXT.encode()) + 16  # GCM tag


@pytest.mark.control("APP-01")
def test_every_record_gets_a_fresh_data_key_and_nonce() -> None:
    ring, context = keyring("k1"), ctx()
    a, b = seal(ring, TEXT, context), seal(ring, TEXT, context)
    assert a.wrapped_key != b.wrapped_key
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext


@pytest.mark.control("APP-01")
@pytest.mark.parametrize("part", ["ciphertext", "nonce", "wrapped_key"])
def test_tampered_record_is_rejected(part: str) -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    tampered = dataclasses.replace(sealed, **{part: flip(getattr(sealed, part), 5)})
    with pytest.raises(DecryptionError):
        open_sealed(ring, tampered, context)


@pytest.mark.control("APP-01")
def test_truncated_ciphertext_is_rejected() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    with pytest.raises(DecryptionError):
        open_sealed(ring, dataclasses.replace(sealed, ciphertext=sealed.ciphertext[:-1]), context)


@pytest.mark.control("APP-01")
def test_wrong_master_key_under_the_same_id_is_rejected() -> None:
    context = ctx()
    sealed = seal(keyring("k1"), TEXT, context)
    with pytest.raises(DecryptionError):
        open_sealed(keyring("k1"), sealed, context)  # same id, other key material


def test_unknown_key_id_is_rejected() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    with pytest.raises(UnknownKeyError):
        open_sealed(ring, dataclasses.replace(sealed, key_id="k9"), context)


def test_key_id_pointing_at_another_existing_key_is_rejected() -> None:
    ring, context = keyring("k1", "k2"), ctx()
    sealed = seal(ring, TEXT, context)
    assert sealed.key_id == "k2"
    with pytest.raises(DecryptionError):
        open_sealed(ring, dataclasses.replace(sealed, key_id="k1"), context)


@pytest.mark.control("APP-01")
def test_ciphertext_moved_to_another_file_is_rejected() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    moved = Context("note", uuid.uuid4(), context.record_id)
    with pytest.raises(DecryptionError):
        open_sealed(ring, sealed, moved)


@pytest.mark.control("APP-01")
def test_ciphertext_moved_to_another_record_or_table_is_rejected() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    with pytest.raises(DecryptionError):
        open_sealed(ring, sealed, Context("note", context.file_id, uuid.uuid4()))
    with pytest.raises(DecryptionError):
        open_sealed(ring, sealed, Context("chat", context.file_id, context.record_id))


def test_unknown_format_version_is_rejected() -> None:
    ring, context = keyring("k1"), ctx()
    sealed = seal(ring, TEXT, context)
    with pytest.raises(DecryptionError):
        open_sealed(ring, dataclasses.replace(sealed, version=2), context)


def test_rotation_keeps_old_records_readable_and_uses_the_new_key() -> None:
    old = keyring("2025-01")
    context = ctx()
    before = seal(old, TEXT, context)
    rotated = Keyring(keys={**old.keys, "2025-07": os.urandom(32)}, active_id="2025-07")
    after = seal(rotated, "after rotation", context)
    assert open_sealed(rotated, before, context) == TEXT
    assert before.key_id == "2025-01"
    assert after.key_id == "2025-07"
    assert open_sealed(rotated, after, context) == "after rotation"
    with pytest.raises(UnknownKeyError):
        open_sealed(old, after, context)  # a server without the new key cannot read new notes


# -- the key file ---------------------------------------------------------------------------------
def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_key_file_parses_all_keys_and_the_last_is_active() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    ring = parse_keyring(f"# master keys\n\n2025-01: {b64(k1)}\n2025-07:{b64(k2)}\n")
    assert ring.active_id == "2025-07"
    assert ring.key("2025-01") == k1
    assert ring.active_key == k2
    assert b64(k1) not in repr(ring)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("k1 " + "A" * 44, "expected"),
        ("k1: not-base64!!", "base64"),
        (f"k1: {b64(bytes(16))}", "16 bytes"),
        (f"bad id: {b64(bytes(32))}", "invalid master key id"),
        (f"k1: {b64(bytes(32))}\nk1: {b64(bytes(range(32)))}", "duplicate"),
    ],
    ids=["empty", "comment-only", "no-colon", "not-base64", "short-key", "bad-id", "duplicate-id"],
)
def test_bad_key_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_keyring(text)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes-master-key"
    path.write_text(f"k1: {b64(os.urandom(32))}\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible to other users"):
        load_keyring(path)
    path.chmod(0o400)
    assert load_keyring(path).active_id == "k1"


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_keyring(tmp_path / "absent")


@pytest.mark.control("APP-01")
def test_sealed_record_carries_no_master_key_material() -> None:
    ring, context = keyring("k1"), ctx()
    sealed: Sealed = seal(ring, TEXT, context)
    blob = sealed.wrapped_key + sealed.nonce + sealed.ciphertext
    assert ring.active_key not in blob

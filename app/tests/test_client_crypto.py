"""The client-side (end-to-end) encryption library: tierwall_notes_client, without its CLI."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
from nacl.public import PublicKey, SealedBox
from nacl.pwhash import argon2id
from tierwall_notes_client.envelope import (
    NoteContext,
    NoteEnvelope,
    Recipient,
    _signed_message,
    decrypt_note,
    encrypt_note,
    remove_recipients,
    rewrap_note,
)
from tierwall_notes_client.errors import (
    DecryptionError,
    FormatError,
    KeyFileError,
    NotARecipientError,
    PinMismatchError,
    SignatureError,
    UntrustedAuthorError,
)
from tierwall_notes_client.keys import (
    PrivateIdentity,
    PublicIdentity,
    generate_identity,
    load_private_identity,
    normalise_fingerprint,
    save_private_identity,
    sign_challenge,
    verify_challenge,
)
from tierwall_notes_client.pins import PinStore

# The cheapest argon2id the library accepts: these tests check the construction, not its cost.
FAST = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}
TEXT = "Séance 3 : la cliente parle de son père. Prochaine séance le 12."


@pytest.fixture
def alice() -> PrivateIdentity:
    return generate_identity("psy-alice")


@pytest.fixture
def bob() -> PrivateIdentity:
    return generate_identity("psy-bob")


@pytest.fixture
def carol() -> PrivateIdentity:
    return generate_identity("psy-carol")


@pytest.fixture
def context() -> NoteContext:
    return NoteContext(file_id=uuid.uuid4(), note_id=uuid.uuid4())


# --- identities and fingerprints -------------------------------------------------------------


def test_public_identity_round_trips_through_json(alice: PrivateIdentity) -> None:
    public = alice.public
    again = PublicIdentity.loads(public.dumps())
    assert again == public
    assert again.fingerprint == public.fingerprint
    assert "secret" not in public.dumps()


def test_fingerprint_is_eight_groups_of_four_base32_characters(alice: PrivateIdentity) -> None:
    groups = alice.public.fingerprint.split(" ")
    assert len(groups) == 8
    assert all(len(g) == 4 and set(g) <= set("abcdefghijklmnopqrstuvwxyz234567") for g in groups)
    assert (
        normalise_fingerprint(alice.public.fingerprint.upper().replace(" ", "")) == alice.public.fingerprint
    )


def test_fingerprint_covers_both_public_keys(alice: PrivateIdentity, bob: PrivateIdentity) -> None:
    a, b = alice.public, bob.public
    assert a.fingerprint != b.fingerprint
    assert dataclasses.replace(a, encryption_key=b.encryption_key).fingerprint != a.fingerprint
    assert dataclasses.replace(a, signing_key=b.signing_key).fingerprint != a.fingerprint


def test_public_key_whose_stated_fingerprint_does_not_match_is_refused(
    alice: PrivateIdentity, bob: PrivateIdentity
) -> None:
    document = alice.public.to_json()
    document["fingerprint"] = bob.public.fingerprint
    with pytest.raises(FormatError, match="fingerprint does not match"):
        PublicIdentity.from_json(document)


def test_psychologist_id_must_be_opaque() -> None:
    with pytest.raises(FormatError, match="invalid psychologist id"):
        generate_identity("anna.muster@example.org")


# --- private key file ------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_private_key_file_is_mode_0600_whatever_the_umask(
    alice: PrivateIdentity, tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "alice.key"
    old = os.umask(umask)
    try:
        save_private_identity(alice, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_identity(path) == alice


def test_private_key_file_is_never_overwritten(
    alice: PrivateIdentity, bob: PrivateIdentity, tmp_path: Path
) -> None:
    path = tmp_path / "alice.key"
    save_private_identity(alice, path)
    with pytest.raises(KeyFileError, match="already exists"):
        save_private_identity(bob, path)
    assert load_private_identity(path) == alice


def test_private_key_file_readable_by_others_is_refused(alice: PrivateIdentity, tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    save_private_identity(alice, path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_identity(path)


def test_passphrase_protected_key_needs_its_passphrase(alice: PrivateIdentity, tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    save_private_identity(alice, path, b"correct horse battery staple", **FAST)
    stored = path.read_text()
    assert base64.b64encode(alice.encryption_secret + alice.signing_seed).decode() not in stored
    assert base64.b64encode(alice.encryption_secret).decode()[:20] not in stored
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        load_private_identity(path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_identity(path, b"correct horse battery stapler")
    assert load_private_identity(path, b"correct horse battery staple") == alice


def test_unprotected_key_file_says_it_is_unprotected(alice: PrivateIdentity, tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    save_private_identity(alice, path)
    assert json.loads(path.read_text())["protection"] == "none"


def test_key_file_with_someone_elses_public_part_is_refused(
    alice: PrivateIdentity, bob: PrivateIdentity, tmp_path: Path
) -> None:
    path = tmp_path / "alice.key"
    save_private_identity(alice, path, b"pass phrase", **FAST)
    document = json.loads(path.read_text())
    document["public"] = bob.public.to_json()
    document["psychologist_id"] = "psy-bob"
    path.write_text(json.dumps(document))
    with pytest.raises(FormatError, match="public part does not match"):
        load_private_identity(path, b"pass phrase")


# --- notes -----------------------------------------------------------------------------------


def test_round_trip_for_author_and_recipient(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    assert decrypt_note(envelope, context, alice, []) == TEXT
    assert decrypt_note(envelope, context, bob, [alice.public]) == TEXT


def test_envelope_round_trips_through_json_and_hides_the_text(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    text = envelope.dumps()
    assert "père" not in text
    assert "cliente" not in text
    assert str(context.file_id) not in text
    assert str(context.note_id) not in text
    again = NoteEnvelope.loads(text)
    assert again == envelope
    assert decrypt_note(again, context, bob, [alice.public]) == TEXT


def test_each_note_has_its_own_data_key_and_nonce(alice: PrivateIdentity, context: NoteContext) -> None:
    first, second = (encrypt_note(TEXT, context, alice, []) for _ in range(2))
    assert first.nonce != second.nonce
    assert first.key_commitment != second.key_commitment
    assert first.ciphertext != second.ciphertext


def test_wrong_recipient_cannot_decrypt(
    alice: PrivateIdentity, bob: PrivateIdentity, carol: PrivateIdentity, context: NoteContext
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    with pytest.raises(NotARecipientError, match="not encrypted to key"):
        decrypt_note(envelope, context, carol, [alice.public])
    # Relabelling bob's wrapped key with carol's fingerprint does not help her: it is sealed to bob.
    relabelled = dataclasses.replace(
        envelope,
        recipients=(
            *envelope.recipients,
            Recipient(carol.public.fingerprint, envelope.recipients[1].wrapped_key),
        ),
    )
    with pytest.raises(DecryptionError, match="does not open"):
        decrypt_note(relabelled, context, carol, [alice.public])


@pytest.mark.parametrize("moved", ["file_id", "note_id", "both"])
def test_ciphertext_moved_to_another_file_or_note_fails(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext, moved: str
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    elsewhere = NoteContext(
        file_id=context.file_id if moved == "note_id" else uuid.uuid4(),
        note_id=context.note_id if moved == "file_id" else uuid.uuid4(),
    )
    for reader, trusted in ((alice, []), (bob, [alice.public])):
        with pytest.raises(DecryptionError):
            decrypt_note(envelope, elsewhere, reader, trusted)


def test_associated_data_binds_the_ciphertext_even_under_a_fresh_signature(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    """A trusted author re-signing someone's ciphertext for another row still cannot move it."""
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    elsewhere = NoteContext(file_id=context.file_id, note_id=uuid.uuid4())
    message = _signed_message(
        elsewhere, 1, bob.public.fingerprint_raw, envelope.nonce, envelope.key_commitment, envelope.ciphertext
    )
    resigned = dataclasses.replace(
        envelope, author=bob.public.fingerprint, signature=bob.signing_private_key.sign(message).signature
    )
    with pytest.raises(DecryptionError, match="does not authenticate for this file id and note id"):
        decrypt_note(resigned, elsewhere, bob, [])


def _flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "part", ["ciphertext", "ciphertext_tag", "nonce", "key_commitment", "signature", "wrapped_key"]
)
def test_tampered_note_fails(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext, part: str
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    if part == "ciphertext":
        tampered = dataclasses.replace(envelope, ciphertext=_flip(envelope.ciphertext, 3))
    elif part == "ciphertext_tag":
        tampered = dataclasses.replace(
            envelope, ciphertext=_flip(envelope.ciphertext, len(envelope.ciphertext) - 1)
        )
    elif part == "wrapped_key":
        own = envelope.recipients[1]
        tampered = dataclasses.replace(
            envelope,
            recipients=(envelope.recipients[0], Recipient(own.fingerprint, _flip(own.wrapped_key, 40))),
        )
    elif part == "nonce":
        tampered = dataclasses.replace(envelope, nonce=_flip(envelope.nonce))
    elif part == "key_commitment":
        tampered = dataclasses.replace(envelope, key_commitment=_flip(envelope.key_commitment))
    else:
        tampered = dataclasses.replace(envelope, signature=_flip(envelope.signature))
    with pytest.raises(DecryptionError):
        decrypt_note(tampered, context, bob, [alice.public])


def test_data_key_swapped_by_whoever_holds_the_public_keys_is_detected(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    """The platform can seal a key of its choosing to bob; the author's commitment exposes it."""
    envelope = encrypt_note(TEXT, context, alice, [bob.public])
    foreign = SealedBox(PublicKey(bob.public.encryption_key)).encrypt(os.urandom(32))
    swapped = dataclasses.replace(
        envelope, recipients=(envelope.recipients[0], Recipient(bob.public.fingerprint, bytes(foreign)))
    )
    with pytest.raises(DecryptionError, match="not the one the author committed to"):
        decrypt_note(swapped, context, bob, [alice.public])


def test_note_from_an_untrusted_key_is_refused(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    """A note forged with a key claiming bob's id (the platform's, say) is not bob's pinned key."""
    impostor = generate_identity("psy-bob")
    forged = encrypt_note("invented note", context, impostor, [alice.public])
    with pytest.raises(UntrustedAuthorError, match="not trusted"):
        decrypt_note(forged, context, alice, [bob.public])
    genuine = encrypt_note(TEXT, context, bob, [alice.public])
    assert decrypt_note(genuine, context, alice, [bob.public]) == TEXT


def test_rewrap_lets_the_new_psychologist_read_notes_written_before(
    alice: PrivateIdentity, carol: PrivateIdentity
) -> None:
    file_id = uuid.uuid4()
    notes = {uuid.uuid4(): f"note {n}: {TEXT}" for n in range(3)}
    sealed = {nid: encrypt_note(text, NoteContext(file_id, nid), alice, []) for nid, text in notes.items()}
    for nid, envelope in sealed.items():
        with pytest.raises(NotARecipientError):
            decrypt_note(envelope, NoteContext(file_id, nid), carol, [alice.public])

    handed = {
        nid: rewrap_note(envelope, NoteContext(file_id, nid), alice, [], [carol.public])
        for nid, envelope in sealed.items()
    }
    for nid, envelope in handed.items():
        assert envelope.ciphertext == sealed[nid].ciphertext  # re-wrapped, not re-encrypted
        assert decrypt_note(envelope, NoteContext(file_id, nid), carol, [alice.public]) == notes[nid]
        # The previous psychologist's wrapped key can then be dropped from the stored envelope.
        without_alice = remove_recipients(envelope, [alice.public.fingerprint])
        assert decrypt_note(without_alice, NoteContext(file_id, nid), carol, [alice.public]) == notes[nid]
        with pytest.raises(NotARecipientError):
            decrypt_note(without_alice, NoteContext(file_id, nid), alice, [])


def test_rewrap_needs_a_reader_and_the_right_context(
    alice: PrivateIdentity, bob: PrivateIdentity, carol: PrivateIdentity, context: NoteContext
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [])
    with pytest.raises(NotARecipientError):
        rewrap_note(envelope, context, bob, [alice.public], [carol.public])
    with pytest.raises(DecryptionError):
        rewrap_note(envelope, NoteContext(context.file_id, uuid.uuid4()), alice, [], [carol.public])


def test_rewrap_to_an_existing_recipient_adds_nothing(
    alice: PrivateIdentity, bob: PrivateIdentity, context: NoteContext
) -> None:
    envelope = encrypt_note(TEXT, context, alice, [bob.public, bob.public])
    assert len(envelope.recipients) == 2
    assert rewrap_note(envelope, context, alice, [], [bob.public]) == envelope


# --- pinning ---------------------------------------------------------------------------------


def test_pin_store_keeps_pins_across_instances(alice: PrivateIdentity, tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    result = PinStore(path).pin(alice.public)
    assert result.previous_fingerprint is None
    assert not result.changed
    assert PinStore(path).require("psy-alice") == alice.public
    again = PinStore(path).pin(alice.public)
    assert again.previous_fingerprint == alice.public.fingerprint
    assert not again.changed


def test_changed_pinned_key_is_refused_unless_confirmed(alice: PrivateIdentity, tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    PinStore(path).pin(alice.public)
    before = path.read_text()
    replacement = generate_identity("psy-alice").public
    with pytest.raises(PinMismatchError, match="--confirm-change") as raised:
        PinStore(path).pin(replacement)
    assert alice.public.fingerprint in str(raised.value)
    assert replacement.fingerprint in str(raised.value)
    assert path.read_text() == before
    assert PinStore(path).require("psy-alice") == alice.public

    result = PinStore(path).pin(replacement, confirm_change=True)
    assert result.changed
    assert result.previous_fingerprint == alice.public.fingerprint
    assert PinStore(path).require("psy-alice") == replacement


def test_pin_store_refuses_a_pin_filed_under_another_id(
    alice: PrivateIdentity, bob: PrivateIdentity, tmp_path: Path
) -> None:
    path = tmp_path / "pins.json"
    PinStore(path).pin(alice.public)
    document = json.loads(path.read_text())
    document["pins"]["psy-alice"] = bob.public.to_json()
    path.write_text(json.dumps(document))
    with pytest.raises(FormatError, match="names 'psy-bob'"):
        PinStore(path)


def test_missing_pin_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"no key pinned for psychologist 'psy-dora'.*pin"):
        PinStore(tmp_path / "pins.json").require("psy-dora")


# --- challenge signatures --------------------------------------------------------------------


def test_challenge_signature_verifies_only_for_its_key_id_and_challenge(
    alice: PrivateIdentity, bob: PrivateIdentity
) -> None:
    challenge = os.urandom(32)
    signature = sign_challenge(alice, challenge)
    assert len(signature) == 64
    verify_challenge(alice.public, challenge, signature)
    with pytest.raises(SignatureError):
        verify_challenge(bob.public, challenge, signature)
    with pytest.raises(SignatureError):
        verify_challenge(alice.public, os.urandom(32), signature)
    with pytest.raises(SignatureError):
        verify_challenge(alice.public, challenge, _flip(signature, 10))
    # Same keys announced under another psychologist id: the id is signed too.
    renamed = dataclasses.replace(alice.public, psychologist_id="psy-mallory")
    with pytest.raises(SignatureError):
        verify_challenge(renamed, challenge, signature)


def test_short_challenge_is_refused(alice: PrivateIdentity) -> None:
    with pytest.raises(SignatureError, match="random bytes"):
        sign_challenge(alice, b"1234")

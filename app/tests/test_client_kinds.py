"""The record kind in a note's context (note or chat), and verifying an author without a private key."""

from __future__ import annotations

import uuid

import pytest
from tierwall_notes_client import NoteContext, decrypt_note, encrypt_note, generate_identity, verify_signature
from tierwall_notes_client.errors import DecryptionError, FormatError, UntrustedAuthorError

FILE, RECORD = uuid.uuid4(), uuid.uuid4()


def test_a_note_context_keeps_the_v1_associated_data() -> None:
    expected = b"tierwall-notes-client|v1|note|" + FILE.bytes + RECORD.bytes
    assert NoteContext(FILE, RECORD).aad(1) == expected
    assert (
        NoteContext(FILE, RECORD, "chat").aad(1)
        == b"tierwall-notes-client|v1|chat|" + FILE.bytes + RECORD.bytes
    )


def test_a_chat_message_does_not_open_as_a_note_and_back() -> None:
    psy, client = generate_identity("psy-1"), generate_identity("c-1")
    chat = encrypt_note("hello", NoteContext(FILE, RECORD, "chat"), client, [psy.public])
    assert decrypt_note(chat, NoteContext(FILE, RECORD, "chat"), psy, [client.public]) == "hello"
    with pytest.raises(DecryptionError):
        decrypt_note(chat, NoteContext(FILE, RECORD, "note"), psy, [client.public])
    note = encrypt_note("note", NoteContext(FILE, RECORD), psy, [])
    with pytest.raises(DecryptionError):
        decrypt_note(note, NoteContext(FILE, RECORD, "chat"), psy, [])


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(FormatError):
        NoteContext(FILE, RECORD, "invoice")


def test_verify_signature_needs_only_the_public_key() -> None:
    author, other = generate_identity("psy-1"), generate_identity("psy-2")
    envelope = encrypt_note("text", NoteContext(FILE, RECORD), author, [])
    verify_signature(envelope, NoteContext(FILE, RECORD), author.public)
    with pytest.raises(UntrustedAuthorError):
        verify_signature(envelope, NoteContext(FILE, RECORD), other.public)
    with pytest.raises(DecryptionError):
        verify_signature(envelope, NoteContext(FILE, uuid.uuid4()), author.public)

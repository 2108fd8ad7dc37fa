"""Notes and chat rows as the database stores them, read and written with the platform's keyring.

The keyring is the application's master key file, which the controller creates (the lab keeps it
in .lab/secrets; for a stack, point TIERWALL_NOTES_KEYRING at the operator's copy). Tests use it
to check that every stored row is a ciphertext that authenticates in its own context, and to
plant rows of their own that the same check accepts: a test row is a real ciphertext too.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from tierwall_notes.envelope import Context, DecryptionError, RecordKind, Sealed, open_sealed, seal
from tierwall_notes.keyring import Keyring, UnknownKeyError, load_keyring

from tierwall.paths import LAB_DIR

# table, its id column, the record kind its ciphertexts are bound to
TABLES: dict[str, tuple[str, RecordKind]] = {
    "notes": ("note_id", "note"),
    "chat_messages": ("message_id", "chat"),
}
# One row per line, fields separated by '|' (ids and hex only: nothing in them can contain it).
SELECT_SEALED = (
    "SELECT {id}, file_id, key_id, encode(wrapped_key, 'hex'), encode(nonce, 'hex'), "
    "encode(ciphertext, 'hex'), enc_version FROM {table} ORDER BY {id}"
)


def keyring_path() -> Path:
    return Path(os.environ.get("TIERWALL_NOTES_KEYRING") or LAB_DIR / "secrets" / "notes-master-key")


def platform_keyring() -> Keyring:
    """The keyring, or a skip that names where it was looked for (the control is then not proved)."""
    path = keyring_path()
    if not path.is_file():
        pytest.skip(f"the notes keyring is not on this machine ({path}): set TIERWALL_NOTES_KEYRING")
    return load_keyring(path)


def sealed_sql(
    keyring: Keyring, kind: RecordKind, file_id: uuid.UUID, record_id: uuid.UUID, text: str
) -> str:
    """key_id, wrapped_key, nonce, ciphertext as SQL literals, sealed exactly as the app seals."""
    sealed = seal(keyring, text, Context(kind, file_id, record_id))
    return (
        f"'{sealed.key_id}', '\\x{sealed.wrapped_key.hex()}', '\\x{sealed.nonce.hex()}', "
        f"'\\x{sealed.ciphertext.hex()}'"
    )


def unreadable(keyring: Keyring, kind: RecordKind, listing: str) -> list[str]:
    """The ids of the rows of ``listing`` (SELECT_SEALED's output) that do not authenticate under
    the keyring in their own context: plaintext, foreign bytes, a row moved from elsewhere. Only
    ids are returned: a test report must never carry a decrypted note."""
    bad = []
    for line in listing.splitlines():
        record_id, file_id, key_id, wrapped, nonce, ciphertext, version = line.split("|")
        raw = [bytes.fromhex(field) for field in (wrapped, nonce, ciphertext)]
        sealed = Sealed(key_id, *raw, version=int(version))
        try:
            open_sealed(keyring, sealed, Context(kind, uuid.UUID(file_id), uuid.UUID(record_id)))
        except (DecryptionError, UnknownKeyError, UnicodeDecodeError, ValueError):
            bad.append(record_id)
    return bad

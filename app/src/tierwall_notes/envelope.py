"""Envelope encryption of one record (a note or a chat message).

* a fresh 256-bit data key per record encrypts the text with AES-256-GCM (96-bit random nonce);
* the data key is wrapped with the active master key by AES key wrap (RFC 3394, AES-KW), which
  detects a wrong master key or a tampered wrapped key;
* the GCM associated data binds the ciphertext to its kind, file id and record id, so a ciphertext
  copied to another file, to another record or from the chat table to the notes table fails.

The master keys never leave the app server; the database sees the key id, the wrapped key, the
nonce and the ciphertext only.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from tierwall_notes.keyring import Keyring

FORMAT_VERSION = 1
NONCE_BYTES = 12
RecordKind = Literal["note", "chat", "identity", "contract"]  # the last two: v2 identity data


class DecryptionError(Exception):
    """The record cannot be decrypted: wrong key, tampered data or data moved to another context."""


@dataclass(frozen=True)
class Context:
    """Where a record belongs; fed to GCM as associated data."""

    kind: RecordKind
    file_id: uuid.UUID
    record_id: uuid.UUID

    def aad(self, version: int) -> bytes:
        return (
            b"tierwall-notes|v%d|%s|" % (version, self.kind.encode())
            + self.file_id.bytes
            + self.record_id.bytes
        )


@dataclass(frozen=True)
class Sealed:
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    version: int = FORMAT_VERSION


def seal(keyring: Keyring, plaintext: str, context: Context) -> Sealed:
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), context.aad(FORMAT_VERSION))
    return Sealed(
        key_id=keyring.active_id,
        wrapped_key=aes_key_wrap(keyring.active_key, data_key),
        nonce=nonce,
        ciphertext=ciphertext,
    )


def open_sealed(keyring: Keyring, sealed: Sealed, context: Context) -> str:
    """The plaintext; raises UnknownKeyError for a key id this server lacks, else DecryptionError."""
    if sealed.version != FORMAT_VERSION:
        raise DecryptionError(f"unsupported encryption format version {sealed.version}")
    master = keyring.key(sealed.key_id)
    try:
        data_key = aes_key_unwrap(master, sealed.wrapped_key)
    except InvalidUnwrap:
        raise DecryptionError("data key does not unwrap under the named master key") from None
    try:
        plaintext = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, context.aad(sealed.version))
    except (InvalidTag, ValueError):
        raise DecryptionError("ciphertext does not authenticate in this context") from None
    return plaintext.decode("utf-8")

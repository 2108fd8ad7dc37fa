"""Attacking a pg_dump of the notes database: the v2 records it holds, and what a set of keys opens.

Shared by the operator attack (every key the platform holds) and the other-psychologist test (one
psychologist's own key on another's records).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from e2e_testkit import dumped_bytea
from nacl.public import PrivateKey, SealedBox
from tierwall_notes_client import NoteContext

VALUE = re.compile(r"'((?:[^']|'')*)'|([^,\s]+)")


@dataclass
class Target:
    kind: str
    record_id: uuid.UUID
    file_id: uuid.UUID
    nonce: bytes
    ciphertext: bytes
    wrapped_keys: list[bytes] = field(default_factory=list)


def rows(dump: str, table: str) -> list[list[str]]:
    prefix = f"INSERT INTO e2e.{table} VALUES ("
    return [
        [quoted if quoted else bare for quoted, bare in VALUE.findall(line[len(prefix) : -2])]
        for line in dump.splitlines()
        if line.startswith(prefix)
    ]


def bytea(value: str) -> bytes:
    assert value.startswith("\\x"), value
    return bytes.fromhex(value[2:])


def parse_targets(notes_dump: str) -> dict[uuid.UUID, Target]:
    """Every v2 note and chat message in a pg_dump of the notes database, with its wrapped keys."""
    targets: dict[uuid.UUID, Target] = {}
    for kind, table, offset in (("note", "notes", 3), ("chat", "chat_messages", 4)):
        for row in rows(notes_dump, table):
            nonce, ciphertext = bytea(row[offset]), bytea(row[offset + 1])
            record_id = uuid.UUID(row[0])
            targets[record_id] = Target(kind, record_id, uuid.UUID(row[1]), nonce, ciphertext)
    for table in ("note_keys", "chat_keys"):
        for row in rows(notes_dump, table):
            targets[uuid.UUID(row[0])].wrapped_keys.append(bytea(row[3]))
    return targets


def _derived(secret: bytes) -> set[bytes]:
    found = {hashlib.sha256(secret).digest(), hashlib.blake2b(secret, digest_size=32).digest()}
    if len(secret) == 32:
        found.add(secret)
    for decode in (lambda s: base64.b64decode(s, validate=True), bytes.fromhex):
        try:
            decoded = decode(secret.strip().decode("ascii"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
        if len(decoded) == 32:
            found.add(decoded)
    return found


def candidate_keys(secret_files: Iterable[Path], dumps: Iterable[str]) -> set[bytes]:
    """Every 32-byte value the platform holds or can derive plainly from what it holds."""
    keys: set[bytes] = set()
    for path in secret_files:
        data = path.read_bytes()
        keys |= _derived(data)
        for line in data.splitlines():
            keys |= _derived(line)
            keys |= _derived(line.partition(b":")[2])  # "<key-id>: <base64>"
    for dump in dumps:
        keys |= {value for value in dumped_bytea(dump) if len(value) == 32}
    return keys


def _content(target: Target, key: bytes) -> str | None:
    aad = NoteContext(target.file_id, target.record_id, target.kind).aad(1)
    for associated in (aad, b""):
        try:
            plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                target.ciphertext, associated, target.nonce, key
            )
        except nacl.exceptions.CryptoError:
            continue
        return plain.decode("utf-8", "replace")
    return None


def content_keys(keys: set[bytes], wrapped_values: set[bytes]) -> set[bytes]:
    """Every candidate, and everything a candidate unwraps (sealed box or AES key wrap) among
    `wrapped_values` (every bytea value in the dumps, wherever the platform might keep a copy)."""
    found = set(keys)
    for key in keys:
        box = SealedBox(PrivateKey(key))
        for wrapped in wrapped_values:
            with contextlib.suppress(nacl.exceptions.CryptoError, nacl.exceptions.TypeError):
                found.add(box.decrypt(wrapped))
            with contextlib.suppress(InvalidUnwrap, ValueError):
                found.add(aes_key_unwrap(key, wrapped))
    return {k for k in found if len(k) == 32}


def attack(targets: Iterable[Target], keys: set[bytes], wrapped_values: set[bytes]) -> dict[uuid.UUID, str]:
    """Every plaintext recovered, by record id."""
    candidates = content_keys(keys, wrapped_values)
    recovered = {}
    for target in targets:
        for key in candidates:
            text = _content(target, key)
            if text is not None:
                recovered[target.record_id] = text
    return recovered

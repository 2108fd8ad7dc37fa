"""The master keys: parsed from the ``notes-master-key`` credential, looked up by key id.

File format, one key per line, ``#`` comments and blank lines ignored::

    # key-id: base64 of 32 random bytes
    2025-01: q0v3...=
    2025-07: Zm9v...=

All keys unwrap; the **last** line is the active key that wraps new data keys. Rotation is adding a
line at the end (old notes stay readable); retiring a key is removing its line after every row that
names it was re-encrypted (not implemented in the reference app).
Make a key with: ``printf '%s: %s\\n' "$(date +%Y-%m)" "$(openssl rand -base64 32)"``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tierwall_notes.settings import ConfigError, read_secret_file

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MASTER_KEY_BYTES = 32  # AES-256


class UnknownKeyError(LookupError):
    """A ciphertext names a key id that this server does not hold."""


@dataclass(frozen=True)
class Keyring:
    keys: Mapping[str, bytes] = field(repr=False)
    active_id: str

    def __post_init__(self) -> None:
        if self.active_id not in self.keys:
            raise ConfigError(f"active key id {self.active_id!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise ConfigError(f"invalid master key id {key_id!r}")
            if len(key) != MASTER_KEY_BYTES:
                raise ConfigError(f"master key {key_id!r} is {len(key)} bytes, need {MASTER_KEY_BYTES}")

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownKeyError(f"no master key with id {key_id!r}") from None

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]


def parse_keyring(text: str) -> Keyring:
    keys: dict[str, bytes] = {}
    last = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, encoded = line.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded:
            raise ConfigError(f"master key file line {number}: expected '<key-id>: <base64 key>'")
        if key_id in keys:
            raise ConfigError(f"master key file line {number}: duplicate key id {key_id!r}")
        try:
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"master key file line {number}: key is not valid base64") from None
        last = key_id
    if not keys:
        raise ConfigError("master key file holds no key")
    return Keyring(keys=keys, active_id=last)


def load_keyring(path: Path) -> Keyring:
    return parse_keyring(read_secret_file(path))

"""A psychologist's identity: an X25519 key pair (encryption) and an Ed25519 key pair (signing).

The identity is generated on the psychologist's device; only `PublicIdentity` is meant to leave it.
The private key file is JSON, written with mode 0600 and refused when group or others can read it,
optionally protected by a passphrase (argon2id -> XSalsa20-Poly1305 secretbox).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey
from nacl.pwhash import argon2id
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from tierwall_notes_client._encoding import b64, expect_format, get_field, load_json, unb64
from tierwall_notes_client.errors import FormatError, KeyFileError, SignatureError

PUBLIC_FORMAT = "tierwall-notes-public-key"
PRIVATE_FORMAT = "tierwall-notes-private-key"
FORMAT_VERSION = 1
KEY_BYTES = 32
FINGERPRINT_BYTES = 20  # 160 bits: 32 base32 characters, compared by a human in groups of four
# Same shape as the server's opaque client refs: never a name or an e-mail address.
PSYCHOLOGIST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FINGERPRINT_DOMAIN = b"tierwall-notes-client|v1|fingerprint|"
CHALLENGE_DOMAIN = b"tierwall-notes-client|v1|auth-challenge|"
CHALLENGE_MIN_BYTES, CHALLENGE_MAX_BYTES = 16, 1024
# argon2id "moderate" (3 passes, 256 MiB): the key file is an offline target once copied.
DEFAULT_OPSLIMIT = argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = argon2id.MEMLIMIT_MODERATE


def check_psychologist_id(psychologist_id: str) -> str:
    if not PSYCHOLOGIST_ID_PATTERN.match(psychologist_id):
        raise FormatError(
            f"invalid psychologist id {psychologist_id!r}: use 1-64 characters [A-Za-z0-9._-], "
            "starting with a letter or digit (an opaque id, never a name or e-mail address)"
        )
    return psychologist_id


def fingerprint_bytes(encryption_key: bytes, signing_key: bytes) -> bytes:
    return nacl.hash.blake2b(
        FINGERPRINT_DOMAIN + encryption_key + signing_key, digest_size=FINGERPRINT_BYTES, encoder=RawEncoder
    )


def format_fingerprint(raw: bytes) -> str:
    """Lower-case base32 in groups of four: no padding, no ambiguous case, easy to read aloud."""
    text = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalise_fingerprint(text: str) -> str:
    """Accept a fingerprint typed with any spacing or case; return the canonical grouped form."""
    compact = re.sub(r"[\s:-]", "", text).lower()
    if not re.fullmatch(r"[a-z2-7]{32}", compact):
        raise FormatError(f"{text!r} is not a fingerprint (32 base32 characters, e.g. 'abcd efgh ...')")
    return " ".join(compact[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class PublicIdentity:
    psychologist_id: str
    encryption_key: bytes  # X25519
    signing_key: bytes  # Ed25519

    def __post_init__(self) -> None:
        check_psychologist_id(self.psychologist_id)
        if len(self.encryption_key) != KEY_BYTES or len(self.signing_key) != KEY_BYTES:
            raise FormatError("a public key is not 32 bytes")

    @property
    def fingerprint_raw(self) -> bytes:
        return fingerprint_bytes(self.encryption_key, self.signing_key)

    @property
    def fingerprint(self) -> str:
        return format_fingerprint(self.fingerprint_raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PUBLIC_FORMAT,
            "version": FORMAT_VERSION,
            "psychologist_id": self.psychologist_id,
            "encryption_key": b64(self.encryption_key),
            "signing_key": b64(self.signing_key),
            "fingerprint": self.fingerprint,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, document: object, what: str = "public key") -> PublicIdentity:
        doc = expect_format(document, PUBLIC_FORMAT, FORMAT_VERSION, what)
        public = cls(
            psychologist_id=check_psychologist_id(get_field(doc, "psychologist_id", str, what)),
            encryption_key=unb64(doc.get("encryption_key"), f"{what}: encryption_key", KEY_BYTES),
            signing_key=unb64(doc.get("signing_key"), f"{what}: signing_key", KEY_BYTES),
        )
        # The stated fingerprint is informational; a document whose keys do not match it was
        # edited or corrupted, and accepting it would let a reader compare the wrong string.
        stated = doc.get("fingerprint")
        if stated is not None and (
            not isinstance(stated, str) or normalise_fingerprint(stated) != public.fingerprint
        ):
            raise FormatError(f"{what}: the stated fingerprint does not match its keys")
        return public

    @classmethod
    def loads(cls, text: str, what: str = "public key") -> PublicIdentity:
        return cls.from_json(load_json(text, what), what)


@dataclass(frozen=True)
class PrivateIdentity:
    psychologist_id: str
    encryption_secret: bytes = field(repr=False)  # X25519 private key
    signing_seed: bytes = field(repr=False)  # Ed25519 seed

    def __post_init__(self) -> None:
        check_psychologist_id(self.psychologist_id)
        if len(self.encryption_secret) != KEY_BYTES or len(self.signing_seed) != KEY_BYTES:
            raise FormatError("a private key is not 32 bytes")

    @property
    def encryption_private_key(self) -> PrivateKey:
        return PrivateKey(self.encryption_secret)

    @property
    def signing_private_key(self) -> SigningKey:
        return SigningKey(self.signing_seed)

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(
            psychologist_id=self.psychologist_id,
            encryption_key=bytes(self.encryption_private_key.public_key),
            signing_key=bytes(self.signing_private_key.verify_key),
        )


def generate_identity(psychologist_id: str) -> PrivateIdentity:
    """A new identity from the OS CSPRNG (libsodium's randombytes)."""
    return PrivateIdentity(
        psychologist_id=check_psychologist_id(psychologist_id),
        encryption_secret=bytes(PrivateKey.generate()),
        signing_seed=nacl.utils.random(KEY_BYTES),
    )


def _passphrase_key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def private_identity_json(
    identity: PrivateIdentity,
    passphrase: bytes | None = None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> dict[str, Any]:
    secret = identity.encryption_secret + identity.signing_seed
    document: dict[str, Any] = {
        "format": PRIVATE_FORMAT,
        "version": FORMAT_VERSION,
        "psychologist_id": identity.psychologist_id,
        "public": identity.public.to_json(),
    }
    if passphrase is None:
        document["protection"] = "none"
        document["secret"] = b64(secret)
    else:
        if not passphrase:
            raise KeyFileError(
                "empty passphrase: give a non-empty one, or none to leave the file unprotected"
            )
        salt = nacl.utils.random(argon2id.SALTBYTES)
        box = SecretBox(_passphrase_key(passphrase, salt, opslimit, memlimit))
        document["protection"] = "argon2id-secretbox"
        document["kdf"] = {"salt": b64(salt), "opslimit": opslimit, "memlimit": memlimit}
        document["secret"] = b64(bytes(box.encrypt(secret)))
    return document


def save_private_identity(
    identity: PrivateIdentity,
    path: Path,
    passphrase: bytes | None = None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> None:
    """Write the key file with mode 0600; never overwrites an existing file (that would lose a key)."""
    text = json.dumps(
        private_identity_json(identity, passphrase, opslimit=opslimit, memlimit=memlimit), indent=2
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists: choose another path or move the old key away first"
        ) from None
    except OSError as error:
        raise KeyFileError(f"cannot create {path}: {error.strerror}") from None
    try:
        # open()'s mode is masked by the umask, which could leave the owner unable to rewrite or
        # even read their key; the file must be exactly 0600.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text + "\n")
    finally:
        if fd != -1:
            os.close(fd)


def check_private_file_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist: create a key with 'tierwall-notes-client keygen'"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )


def load_private_identity(path: Path, passphrase: bytes | None = None) -> PrivateIdentity:
    check_private_file_mode(path)
    what = f"key file {path}"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError(f"{what} is not readable JSON: is it a tierwall-notes private key?") from None
    doc = expect_format(document, PRIVATE_FORMAT, FORMAT_VERSION, what)
    psychologist_id = check_psychologist_id(get_field(doc, "psychologist_id", str, what))
    protection = doc.get("protection")
    if protection == "none":
        secret = unb64(doc.get("secret"), f"{what}: secret", 2 * KEY_BYTES)
    elif protection == "argon2id-secretbox":
        if passphrase is None:
            raise KeyFileError(f"{what} is passphrase-protected: give its passphrase")
        kdf = get_field(doc, "kdf", dict, what)
        salt = unb64(kdf.get("salt"), f"{what}: kdf salt", argon2id.SALTBYTES)
        opslimit = get_field(kdf, "opslimit", int, what)
        memlimit = get_field(kdf, "memlimit", int, what)
        if not (argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_MAX) or not (
            argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_MAX
        ):
            raise FormatError(f"{what}: argon2id limits out of range")
        box = SecretBox(_passphrase_key(passphrase, salt, opslimit, memlimit))
        try:
            secret = box.decrypt(unb64(doc.get("secret"), f"{what}: secret"))
        except nacl.exceptions.CryptoError:
            raise KeyFileError(f"{what}: wrong passphrase (or the file was altered)") from None
        if len(secret) != 2 * KEY_BYTES:
            raise FormatError(f"{what}: secret has the wrong length")
    else:
        raise FormatError(f"{what}: unknown protection {protection!r}")
    identity = PrivateIdentity(psychologist_id, secret[:KEY_BYTES], secret[KEY_BYTES:])
    # The public part and the id sit outside the secretbox: check they belong to the secret, so an
    # edited file cannot make the client announce someone else's public key as its own.
    stated = PublicIdentity.from_json(doc.get("public"), f"{what}: public part")
    if stated != identity.public:
        raise FormatError(f"{what}: the public part does not match the private key")
    return identity


def _challenge_message(psychologist_id: str, challenge: bytes) -> bytes:
    if not CHALLENGE_MIN_BYTES <= len(challenge) <= CHALLENGE_MAX_BYTES:
        raise SignatureError(
            f"challenge is {len(challenge)} bytes: "
            f"expected {CHALLENGE_MIN_BYTES}-{CHALLENGE_MAX_BYTES} random bytes"
        )
    # A length-prefixed id and a domain distinct from the note signatures: a signed challenge can
    # be neither replayed for another psychologist id nor passed off as a signed note.
    ident = check_psychologist_id(psychologist_id).encode("ascii")
    return CHALLENGE_DOMAIN + bytes([len(ident)]) + ident + challenge


def sign_challenge(identity: PrivateIdentity, challenge: bytes) -> bytes:
    """The 64-byte Ed25519 signature of a server challenge, bound to the psychologist id."""
    message = _challenge_message(identity.psychologist_id, challenge)
    return bytes(identity.signing_private_key.sign(message).signature)


def verify_challenge(public: PublicIdentity, challenge: bytes, signature: bytes) -> None:
    """Raises SignatureError unless `signature` is `public`'s signature of `challenge`."""
    message = _challenge_message(public.psychologist_id, challenge)
    try:
        VerifyKey(public.signing_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise SignatureError("challenge signature does not verify with this psychologist's key") from None


def same_key(a: PublicIdentity, b: PublicIdentity) -> bool:
    return hmac.compare_digest(a.fingerprint_raw, b.fingerprint_raw)

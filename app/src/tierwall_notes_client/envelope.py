"""A note encrypted end to end for a set of psychologists.

* a fresh 256-bit data key per note encrypts the UTF-8 text with XChaCha20-Poly1305-IETF (random
  192-bit nonce); the associated data binds the ciphertext to the client file id and the note id;
* the data key is wrapped to each recipient's X25519 public key with a libsodium sealed box;
* the author signs (Ed25519) the context, nonce, ciphertext and a commitment to the data key. A
  sealed box is anonymous, so without the signature anyone holding the public keys (the platform)
  could write a note in a psychologist's name; the commitment stops a wrapped key to another data
  key being slipped in for one recipient, since Poly1305 alone does not commit to its key.

Re-wrapping (handover) adds a recipient without touching the signed part, so it needs no author key.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder
from nacl.public import PublicKey, SealedBox
from nacl.signing import VerifyKey

from tierwall_notes_client._encoding import b64, expect_format, get_field, load_json, unb64
from tierwall_notes_client.errors import (
    DecryptionError,
    FormatError,
    NotARecipientError,
    UntrustedAuthorError,
)
from tierwall_notes_client.keys import (
    PrivateIdentity,
    PublicIdentity,
    normalise_fingerprint,
)

NOTE_FORMAT = "tierwall-notes-note"
FORMAT_VERSION = 1
DATA_KEY_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
COMMITMENT_BYTES = 32
SIGNATURE_BYTES = 64
WRAPPED_KEY_BYTES = DATA_KEY_BYTES + 48  # sealed box: ephemeral public key + Poly1305 tag
COMMITMENT_DOMAIN = b"tierwall-notes-client|v1|key-commitment"
SIGNATURE_DOMAIN = b"tierwall-notes-client|v1|note-signature|"


RECORD_KINDS = ("note", "chat")


@dataclass(frozen=True)
class NoteContext:
    """Where a record belongs. Taken from the row it is read from, never from the envelope.

    `kind` keeps a chat message from being passed off as a note of the same id, and back: the
    associated data and the signature name it.
    """

    file_id: uuid.UUID
    note_id: uuid.UUID
    kind: str = "note"

    def __post_init__(self) -> None:
        if self.kind not in RECORD_KINDS:
            raise FormatError(f"unknown record kind {self.kind!r}: expected one of {', '.join(RECORD_KINDS)}")

    def aad(self, version: int) -> bytes:
        prefix = b"tierwall-notes-client|v%d|%s|" % (version, self.kind.encode("ascii"))
        return prefix + self.file_id.bytes + self.note_id.bytes


@dataclass(frozen=True)
class Recipient:
    fingerprint: str
    wrapped_key: bytes


@dataclass(frozen=True)
class NoteEnvelope:
    author: str  # fingerprint of the signing author
    nonce: bytes
    ciphertext: bytes  # with the 16-byte Poly1305 tag
    key_commitment: bytes
    signature: bytes
    recipients: tuple[Recipient, ...]
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": NOTE_FORMAT,
            "version": self.version,
            "author": self.author,
            "nonce": b64(self.nonce),
            "ciphertext": b64(self.ciphertext),
            "key_commitment": b64(self.key_commitment),
            "signature": b64(self.signature),
            "recipients": [
                {"fingerprint": r.fingerprint, "wrapped_key": b64(r.wrapped_key)} for r in self.recipients
            ],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, document: object, what: str = "note") -> NoteEnvelope:
        doc = expect_format(document, NOTE_FORMAT, FORMAT_VERSION, what)
        recipients = []
        for entry in get_field(doc, "recipients", list, what):
            if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
                raise FormatError(f"{what}: a recipient entry lacks its fingerprint")
            recipients.append(
                Recipient(
                    fingerprint=normalise_fingerprint(entry["fingerprint"]),
                    wrapped_key=unb64(entry.get("wrapped_key"), f"{what}: wrapped_key", WRAPPED_KEY_BYTES),
                )
            )
        return cls(
            author=normalise_fingerprint(get_field(doc, "author", str, what)),
            nonce=unb64(doc.get("nonce"), f"{what}: nonce", NONCE_BYTES),
            ciphertext=unb64(doc.get("ciphertext"), f"{what}: ciphertext"),
            key_commitment=unb64(doc.get("key_commitment"), f"{what}: key_commitment", COMMITMENT_BYTES),
            signature=unb64(doc.get("signature"), f"{what}: signature", SIGNATURE_BYTES),
            recipients=tuple(recipients),
        )

    @classmethod
    def loads(cls, text: str, what: str = "note") -> NoteEnvelope:
        return cls.from_json(load_json(text, what), what)


def _commitment(data_key: bytes) -> bytes:
    return nacl.hash.blake2b(
        COMMITMENT_DOMAIN, digest_size=COMMITMENT_BYTES, key=data_key, encoder=RawEncoder
    )


def _signed_message(
    context: NoteContext, version: int, author_raw: bytes, nonce: bytes, commitment: bytes, ciphertext: bytes
) -> bytes:
    # Every field before the ciphertext has a fixed length, so the concatenation is unambiguous.
    return SIGNATURE_DOMAIN + context.aad(version) + author_raw + nonce + commitment + ciphertext


def _dedupe(recipients: Iterable[PublicIdentity]) -> list[PublicIdentity]:
    seen: dict[bytes, PublicIdentity] = {}
    for public in recipients:
        seen.setdefault(public.fingerprint_raw, public)
    return list(seen.values())


def _wrap(data_key: bytes, public: PublicIdentity) -> Recipient:
    wrapped = SealedBox(PublicKey(public.encryption_key)).encrypt(data_key)
    return Recipient(fingerprint=public.fingerprint, wrapped_key=bytes(wrapped))


def encrypt_note(
    text: str, context: NoteContext, author: PrivateIdentity, recipients: Iterable[PublicIdentity]
) -> NoteEnvelope:
    """Encrypt `text` for `recipients`; the author is always one of them (they must read their notes)."""
    data_key = nacl.utils.random(DATA_KEY_BYTES)
    nonce = nacl.utils.random(NONCE_BYTES)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        text.encode("utf-8"), context.aad(FORMAT_VERSION), nonce, data_key
    )
    author_public = author.public
    commitment = _commitment(data_key)
    message = _signed_message(
        context, FORMAT_VERSION, author_public.fingerprint_raw, nonce, commitment, ciphertext
    )
    signature = bytes(author.signing_private_key.sign(message).signature)
    everyone = _dedupe([author_public, *recipients])
    return NoteEnvelope(
        author=author_public.fingerprint,
        nonce=nonce,
        ciphertext=ciphertext,
        key_commitment=commitment,
        signature=signature,
        recipients=tuple(_wrap(data_key, public) for public in everyone),
    )


def _verify_author(envelope: NoteEnvelope, context: NoteContext, trusted: Iterable[PublicIdentity]) -> None:
    author = next((p for p in trusted if p.fingerprint == envelope.author), None)
    if author is None:
        raise UntrustedAuthorError(
            f"the note is signed by key {envelope.author}, which is not trusted: "
            "pin its owner's public key first"
        )
    verify_signature(envelope, context, author)


def verify_signature(envelope: NoteEnvelope, context: NoteContext, author: PublicIdentity) -> None:
    """Raises DecryptionError unless `author` signed this envelope for `context`.

    Needs no private key: a server holding the public keys can refuse a record not signed by the
    account that uploads it, without being able to read it.
    """
    if envelope.author != author.fingerprint:
        raise UntrustedAuthorError(f"the note names author {envelope.author}, not {author.fingerprint}")
    message = _signed_message(
        context,
        envelope.version,
        author.fingerprint_raw,
        envelope.nonce,
        envelope.key_commitment,
        envelope.ciphertext,
    )
    try:
        VerifyKey(author.signing_key).verify(message, envelope.signature)
    except nacl.exceptions.BadSignatureError:
        raise DecryptionError(
            "the note's signature does not verify: it was altered or belongs to another file or note id"
        ) from None


def _unwrap(envelope: NoteEnvelope, reader: PrivateIdentity) -> bytes:
    own = reader.public.fingerprint
    entry = next((r for r in envelope.recipients if r.fingerprint == own), None)
    if entry is None:
        raise NotARecipientError(
            f"the note is not encrypted to key {own}: ask a psychologist who can read it to re-wrap it"
        )
    try:
        data_key = SealedBox(reader.encryption_private_key).decrypt(entry.wrapped_key)
    except nacl.exceptions.CryptoError:
        raise DecryptionError("the wrapped data key does not open with this private key (altered?)") from None
    if not hmac.compare_digest(_commitment(data_key), envelope.key_commitment):
        raise DecryptionError("the wrapped data key is not the one the author committed to")
    return data_key


def _data_key(
    envelope: NoteEnvelope, context: NoteContext, reader: PrivateIdentity, trusted: Iterable[PublicIdentity]
) -> bytes:
    if envelope.version != FORMAT_VERSION:
        raise DecryptionError(f"unsupported note format version {envelope.version}")
    _verify_author(envelope, context, [reader.public, *trusted])
    return _unwrap(envelope, reader)


def decrypt_note(
    envelope: NoteEnvelope,
    context: NoteContext,
    reader: PrivateIdentity,
    trusted_authors: Iterable[PublicIdentity],
) -> str:
    """The text; `context` comes from where the note is stored, `trusted_authors` from the pin store.

    The reader's own key is always trusted as an author.
    """
    return _open(envelope, context, reader, trusted_authors)[1]


def _open(
    envelope: NoteEnvelope,
    context: NoteContext,
    reader: PrivateIdentity,
    trusted_authors: Iterable[PublicIdentity],
) -> tuple[bytes, str]:
    data_key = _data_key(envelope, context, reader, trusted_authors)
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            envelope.ciphertext, context.aad(envelope.version), envelope.nonce, data_key
        )
    except nacl.exceptions.CryptoError:
        raise DecryptionError("the ciphertext does not authenticate for this file id and note id") from None
    try:
        return data_key, plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("the note's plaintext is not UTF-8 text") from None


def rewrap_note(
    envelope: NoteEnvelope,
    context: NoteContext,
    reader: PrivateIdentity,
    trusted_authors: Iterable[PublicIdentity],
    new_recipients: Iterable[PublicIdentity],
) -> NoteEnvelope:
    """The same note, its data key also wrapped to `new_recipients` (handover to another psychologist).

    Only a reader can do it, and only after checking the note decrypts: a broken note is not passed on.
    """
    data_key, _ = _open(envelope, context, reader, trusted_authors)
    present = {r.fingerprint for r in envelope.recipients}
    added = tuple(_wrap(data_key, p) for p in _dedupe(new_recipients) if p.fingerprint not in present)
    return replace(envelope, recipients=envelope.recipients + added)


def remove_recipients(envelope: NoteEnvelope, fingerprints: Iterable[str]) -> NoteEnvelope:
    """The envelope without the given recipients' wrapped keys (the previous psychologist's, after a
    handover). It cannot revoke a copy of the data key already taken: that needs re-encryption."""
    drop = {normalise_fingerprint(f) for f in fingerprints}
    return replace(envelope, recipients=tuple(r for r in envelope.recipients if r.fingerprint not in drop))


__all__ = [
    "NoteContext",
    "NoteEnvelope",
    "Recipient",
    "decrypt_note",
    "encrypt_note",
    "remove_recipients",
    "rewrap_note",
    "verify_signature",
]

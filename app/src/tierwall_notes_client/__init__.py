"""Client-side (end-to-end) encryption of session notes: a library the server does not use yet.

Each psychologist holds an X25519 + Ed25519 key pair made on their own device; the platform would
store the public part only. See app/README.md, "Client-side encryption".
"""

from tierwall_notes_client.envelope import NoteContext, decrypt_note, encrypt_note, rewrap_note
from tierwall_notes_client.errors import ClientCryptoError
from tierwall_notes_client.keys import (
    PrivateIdentity,
    PublicIdentity,
    generate_identity,
    load_private_identity,
    save_private_identity,
    sign_challenge,
    verify_challenge,
)
from tierwall_notes_client.pins import PinStore

__all__ = [
    "ClientCryptoError",
    "NoteContext",
    "PinStore",
    "PrivateIdentity",
    "PublicIdentity",
    "decrypt_note",
    "encrypt_note",
    "generate_identity",
    "load_private_identity",
    "rewrap_note",
    "save_private_identity",
    "sign_challenge",
    "verify_challenge",
]

"""Client-side (end-to-end) encryption of session notes and chat messages.

Each psychologist (and each client who chats) holds an X25519 + Ed25519 key pair made on their own
device; the platform stores the public part only. The server's v2 API (tierwall_notes.e2e) stores
the envelopes built here without being able to open them. See app/README.md.
"""

from tierwall_notes_client.envelope import (
    NoteContext,
    NoteEnvelope,
    decrypt_note,
    encrypt_note,
    rewrap_note,
    verify_signature,
)
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
    "NoteEnvelope",
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
    "verify_signature",
]

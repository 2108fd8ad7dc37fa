"""The library's errors: each message names the problem and, where there is one, the fix."""

from __future__ import annotations


class ClientCryptoError(Exception):
    """Base of every error the client library raises on purpose."""


class FormatError(ClientCryptoError):
    """A key file, public key, pin store or note envelope is not in the expected format."""


class KeyFileError(ClientCryptoError):
    """A private key file cannot be written or read (permissions, passphrase, existing file)."""


class DecryptionError(ClientCryptoError):
    """The note cannot be decrypted: wrong key, tampered data or data moved to another file/row."""


class NotARecipientError(DecryptionError):
    """The note's data key is not wrapped to this key pair."""


class UntrustedAuthorError(DecryptionError):
    """The note is signed by a key that is not among the trusted (pinned) ones."""


class PinMismatchError(ClientCryptoError):
    """A psychologist's key differs from the pinned one and the change was not confirmed."""


class SignatureError(ClientCryptoError):
    """A challenge signature does not verify."""

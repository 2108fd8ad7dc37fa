"""tierwall-notes-client: keys, fingerprints, pinning and note encryption on the psychologist's device."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from tierwall_notes_client.envelope import NoteContext, NoteEnvelope, decrypt_note, encrypt_note, rewrap_note
from tierwall_notes_client.errors import ClientCryptoError, FormatError, KeyFileError
from tierwall_notes_client.keys import (
    PRIVATE_FORMAT,
    PrivateIdentity,
    PublicIdentity,
    generate_identity,
    load_private_identity,
    normalise_fingerprint,
    save_private_identity,
)
from tierwall_notes_client.pins import PinStore

PROG = "tierwall-notes-client"


class UsageError(Exception):
    """A problem with the command line or an input file, reported in one line."""


def default_pins_path() -> Path:
    if "TIERWALL_NOTES_PINS" in os.environ:
        return Path(os.environ["TIERWALL_NOTES_PINS"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "tierwall-notes-client" / "pins.json"


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _read_text(path: str, what: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist: check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {what} {path}: {getattr(error, 'strerror', None) or error}") from None


def _write_text(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        # A decrypted note is health data: a new output file is readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def _passphrase(args: argparse.Namespace, *, new: bool) -> bytes | None:
    if args.passphrase_file:
        text = _read_text(args.passphrase_file, "passphrase file")
        passphrase = text.splitlines()[0] if text else ""
        if not passphrase:
            raise UsageError(
                f"passphrase file {args.passphrase_file} is empty: put the passphrase on its first line"
            )
        return passphrase.encode("utf-8")
    if args.ask_passphrase:
        first = getpass.getpass("Passphrase: ")
        if new and getpass.getpass("Passphrase again: ") != first:
            raise UsageError("the two passphrases differ: run the command again")
        if not first:
            raise UsageError("empty passphrase: type one, or leave out --ask-passphrase")
        return first.encode("utf-8")
    return None


def _load_key(args: argparse.Namespace) -> PrivateIdentity:
    path = Path(args.key)
    try:
        return load_private_identity(path, _passphrase(args, new=False))
    except KeyFileError as error:
        if "passphrase-protected" in str(error):
            raise UsageError(f"{error}: add --passphrase-file PATH or --ask-passphrase") from None
        raise


def _load_public(path: str) -> PublicIdentity:
    """A public key file, or the public part of a private key file (it needs no passphrase)."""
    text = _read_text(path, "public key file")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"{path} is not JSON: give a public key file written by '{PROG} keygen'") from None
    if isinstance(document, dict) and document.get("format") == PRIVATE_FORMAT:
        return PublicIdentity.from_json(document.get("public"), f"{path}: public part")
    return PublicIdentity.from_json(document, f"public key file {path}")


def _context(args: argparse.Namespace) -> NoteContext:
    return NoteContext(file_id=args.file_id, note_id=args.note_id)


def cmd_keygen(args: argparse.Namespace) -> int:
    identity = generate_identity(args.id)
    save_private_identity(identity, Path(args.key), _passphrase(args, new=True))
    public = identity.public
    if args.public:
        _write_text(args.public, public.dumps())
    else:
        sys.stdout.write(public.dumps())
    print(
        f"{PROG}: private key written to {args.key} (mode 0600); fingerprint {public.fingerprint}",
        file=sys.stderr,
    )
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    public = _load_public(args.public_key)
    print(f"{public.psychologist_id}  {public.fingerprint}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    public = _load_public(args.public_key)
    if args.fingerprint is not None and normalise_fingerprint(args.fingerprint) != public.fingerprint:
        raise UsageError(
            f"{args.public_key} has fingerprint {public.fingerprint}, not the "
            f"{normalise_fingerprint(args.fingerprint)} you were given: do not pin it; ask its owner again"
        )
    result = PinStore(Path(args.pins)).pin(public, confirm_change=args.confirm_change)
    if result.previous_fingerprint is None:
        state = "pinned"
    elif result.changed:
        state = f"re-pinned (was {result.previous_fingerprint})"
    else:
        state = "already pinned"
    print(f"{result.psychologist_id}  {result.fingerprint}  {state}")
    return 0


def _recipients(store: PinStore, ids: Sequence[str]) -> list[PublicIdentity]:
    return [store.require(pid) for pid in ids]


def cmd_encrypt(args: argparse.Namespace) -> int:
    author = _load_key(args)
    store = PinStore(Path(args.pins))
    text = _read_text(args.input, "note")
    envelope = encrypt_note(text, _context(args), author, _recipients(store, args.to))
    _write_text(args.output, envelope.dumps())
    return 0


def _read_envelope(path: str) -> NoteEnvelope:
    return NoteEnvelope.loads(_read_text(path, "encrypted note"), f"encrypted note {path}")


def cmd_decrypt(args: argparse.Namespace) -> int:
    reader = _load_key(args)
    store = PinStore(Path(args.pins))
    envelope = _read_envelope(args.input)
    _write_text(args.output, decrypt_note(envelope, _context(args), reader, store.all()))
    return 0


def cmd_rewrap(args: argparse.Namespace) -> int:
    reader = _load_key(args)
    store = PinStore(Path(args.pins))
    envelope = _read_envelope(args.input)
    rewrapped = rewrap_note(envelope, _context(args), reader, store.all(), _recipients(store, args.to))
    _write_text(args.output, rewrapped.dumps())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="End-to-end encryption of session notes on the psychologist's device "
        "(not used by the server yet).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def passphrase_options(sub: argparse.ArgumentParser) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument(
            "--passphrase-file", metavar="PATH", help="read the key's passphrase from the first line"
        )
        group.add_argument("--ask-passphrase", action="store_true", help="prompt for the key's passphrase")

    def pins_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--pins",
            default=str(default_pins_path()),
            metavar="PATH",
            help="pin store (default: $TIERWALL_NOTES_PINS, else ~/.config/tierwall-notes-client/pins.json)",
        )

    def note_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--key", required=True, metavar="PATH", help="your private key file")
        passphrase_options(sub)
        pins_option(sub)
        sub.add_argument("--file-id", required=True, type=_uuid, help="the client file's id (UUID)")
        sub.add_argument("--note-id", required=True, type=_uuid, help="the note's id (UUID)")
        sub.add_argument(
            "--in", dest="input", default="-", metavar="PATH", help="input file (default: stdin)"
        )
        sub.add_argument(
            "--out", dest="output", default="-", metavar="PATH", help="output file (default: stdout)"
        )

    keygen = commands.add_parser("keygen", help="generate your key pair")
    keygen.add_argument("--id", required=True, help="your psychologist id (opaque, never a name)")
    keygen.add_argument("--key", required=True, metavar="PATH", help="private key file to create (mode 0600)")
    keygen.add_argument("--public", metavar="PATH", help="write the public key here (default: stdout)")
    passphrase_options(keygen)
    keygen.set_defaults(handler=cmd_keygen)

    fingerprint = commands.add_parser("fingerprint", help="show a public key's fingerprint")
    fingerprint.add_argument(
        "public_key", metavar="PUBLIC_KEY", help="public key file (or your private key file)"
    )
    fingerprint.set_defaults(handler=cmd_fingerprint)

    for name in ("pin", "trust"):
        pin = commands.add_parser(name, help="trust a psychologist's public key (refuses a changed key)")
        pin.add_argument("public_key", metavar="PUBLIC_KEY", help="their public key file")
        pin.add_argument("--fingerprint", help="the fingerprint they told you; refused if the file differs")
        pin.add_argument(
            "--confirm-change",
            action="store_true",
            help="replace a different pinned key (after confirming its fingerprint)",
        )
        pins_option(pin)
        pin.set_defaults(handler=cmd_pin)

    encrypt = commands.add_parser("encrypt", help="encrypt a note for yourself and pinned psychologists")
    note_options(encrypt)
    encrypt.add_argument("--to", action="append", default=[], metavar="ID", help="another pinned recipient")
    encrypt.set_defaults(handler=cmd_encrypt)

    decrypt = commands.add_parser("decrypt", help="decrypt a note encrypted to you")
    note_options(decrypt)
    decrypt.set_defaults(handler=cmd_decrypt)

    rewrap = commands.add_parser("rewrap", help="give pinned psychologists access to a note you can read")
    note_options(rewrap)
    rewrap.add_argument(
        "--to", action="append", required=True, metavar="ID", help="pinned psychologist to add"
    )
    rewrap.set_defaults(handler=cmd_rewrap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ClientCryptoError, UsageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1


__all__ = ["FormatError", "build_parser", "main"]

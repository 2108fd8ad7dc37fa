"""``tierwall-notes-admin``: the operator's v2 actions on the `identity` database.

    tierwall-notes-admin add-psychologist psy-1234.pub --fingerprint "abcd efgh ..."
    tierwall-notes-admin assign --client-ref c-8f2e --psychologist psy-5678

Registering a psychologist is an operator action, never an open endpoint: the operator takes the
public key file from the psychologist and types the fingerprint the psychologist reads out to them
(by phone or in person); a file whose keys do not match it is refused. Assigning a further
psychologist to a client starts a change of psychologist (the current one then rewraps the file's
keys for them, client side). Connects with --dsn (a libpq conninfo; dbname is set to
`identity`) or, without it, with the app's own settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from tierwall_notes_client import PublicIdentity
from tierwall_notes_client.errors import ClientCryptoError
from tierwall_notes_client.keys import normalise_fingerprint

from tierwall_notes.settings import ConfigError, load_settings


class AdminError(RuntimeError):
    pass


def load_public_key(path: Path, fingerprint: str) -> PublicIdentity:
    try:
        public = PublicIdentity.loads(path.read_text(encoding="utf-8"), f"public key {path}")
        expected = normalise_fingerprint(fingerprint)
    except (OSError, ClientCryptoError) as exc:
        raise AdminError(str(exc)) from None
    if public.fingerprint != expected:
        raise AdminError(
            f"{path} has fingerprint {public.fingerprint}, not the {expected} given: do not register it;"
            " check with the psychologist which key they sent"
        )
    return public


def add_psychologist(conn: psycopg.Connection, public: PublicIdentity) -> None:
    cur = conn.execute(
        "INSERT INTO e2e.accounts (account_id, role, encryption_key, signing_key, fingerprint)"
        " VALUES (%s, 'psychologist', %s, %s, %s) ON CONFLICT DO NOTHING",
        (public.psychologist_id, public.encryption_key, public.signing_key, public.fingerprint),
    )
    if cur.rowcount != 1:
        raise AdminError(f"{public.psychologist_id!r} or this key is already registered: nothing changed")


def assign(conn: psycopg.Connection, client_ref: str, psychologist_id: str) -> bool:
    row = conn.execute("SELECT role FROM e2e.accounts WHERE account_id = %s", (psychologist_id,)).fetchone()
    if row is None or row[0] != "psychologist":
        raise AdminError(f"no psychologist {psychologist_id!r}: register them first")
    if conn.execute("SELECT 1 FROM e2e.clients WHERE client_ref = %s", (client_ref,)).fetchone() is None:
        raise AdminError(f"no client {client_ref!r} in the v2 tables")
    cur = conn.execute(
        "INSERT INTO e2e.assignments (client_ref, psychologist_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (client_ref, psychologist_id),
    )
    return cur.rowcount == 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierwall-notes-admin", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dsn", help="libpq conninfo (dbname is set to identity); default: the app's settings"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-psychologist", help="register a psychologist's public key")
    add.add_argument("public_key", type=Path)
    add.add_argument("--fingerprint", required=True, help="as read out by the psychologist")
    assign_cmd = commands.add_parser("assign", help="assign a psychologist to a client")
    assign_cmd.add_argument("--client-ref", required=True)
    assign_cmd.add_argument("--psychologist", required=True)
    return parser


def _conninfo(dsn: str | None) -> str:
    return make_conninfo(dsn, dbname="identity") if dsn else load_settings().identity_conninfo


def _run(args: argparse.Namespace) -> str:
    if args.command == "add-psychologist":
        public = load_public_key(args.public_key, args.fingerprint)
        with psycopg.connect(_conninfo(args.dsn)) as conn:
            add_psychologist(conn, public)
        return f"registered psychologist {public.psychologist_id} ({public.fingerprint})"
    with psycopg.connect(_conninfo(args.dsn)) as conn:
        new = assign(conn, args.client_ref, args.psychologist)
    return f"{args.psychologist} {'assigned to' if new else 'was already assigned to'} {args.client_ref}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except AdminError as exc:
        print(f"tierwall-notes-admin: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"tierwall-notes-admin: configuration error: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"tierwall-notes-admin: database error: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

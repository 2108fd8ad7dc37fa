"""Helpers for the v2 (end-to-end) tests: accounts, login, files and envelopes through the real API.

Everything a psychologist or a client does here goes through tierwall_notes_client (keys, envelopes,
challenge signatures) and HTTPS to the app; the operator's actions go through tierwall-notes-admin.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notes_testkit import Api, PgCluster
from tierwall_notes.e2e.admin import main as admin_main
from tierwall_notes_client import (
    NoteContext,
    NoteEnvelope,
    PrivateIdentity,
    PublicIdentity,
    decrypt_note,
    encrypt_note,
    generate_identity,
    sign_challenge,
)


def new_ref(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Person:
    identity: PrivateIdentity
    token: str = ""

    @property
    def id(self) -> str:
        return self.identity.psychologist_id

    @property
    def public(self) -> PublicIdentity:
        return self.identity.public


def challenge(api: Api, account_id: str) -> dict[str, Any]:
    status, _, body = api.call("POST", "/v2/auth/challenge", {"account_id": account_id}, token="")
    assert status == 201, body
    return body


def answer(api: Api, identity: PrivateIdentity, issued: dict[str, Any]) -> tuple[int, Any]:
    signature = sign_challenge(identity, base64.b64decode(issued["challenge"]))
    body = {
        "challenge_id": issued["challenge_id"],
        "account_id": identity.psychologist_id,
        "signature": base64.b64encode(signature).decode(),
    }
    status, _, payload = api.call("POST", "/v2/auth/token", body, token="")
    return status, payload


def login(api: Api, person: Person) -> Person:
    status, payload = answer(api, person.identity, challenge(api, person.id))
    assert status == 200, payload
    person.token = payload["token"]
    return person


def register_psychologist(pg: PgCluster, directory: Path, identity: PrivateIdentity) -> None:
    path = directory / f"{identity.psychologist_id}.pub"
    path.write_text(identity.public.dumps())
    fingerprint = identity.public.fingerprint
    code = admin_main(
        ["--dsn", pg.superuser_conninfo(), "add-psychologist", str(path), "--fingerprint", fingerprint]
    )
    assert code == 0


def psychologist(api: Api, pg: PgCluster, directory: Path) -> Person:
    person = Person(generate_identity(new_ref("psy")))
    register_psychologist(pg, directory, person.identity)
    return login(api, person)


def assign(pg: PgCluster, client_ref: str, psychologist_id: str) -> None:
    code = admin_main(
        [
            "--dsn",
            pg.superuser_conninfo(),
            "assign",
            "--client-ref",
            client_ref,
            "--psychologist",
            psychologist_id,
        ]
    )
    assert code == 0


@dataclass
class File:
    ref: str
    file_id: uuid.UUID
    client: Person | None  # the client's own account (chat), logged in


def open_file(api: Api, psy: Person, name: str = "Zoë Beispiel", *, client_key: bool = True) -> File:
    ref = new_ref("c")
    client = Person(generate_identity(ref)) if client_key else None
    body = {"name": name, "client_key": client.public.to_json() if client else None}
    status, _, payload = api.call("PUT", "/v2/client", body, client=ref, token=psy.token)
    assert status == 201, payload
    if client is not None:
        login(api, client)
    return File(ref, uuid.UUID(payload["file_id"]), client)


def post(
    api: Api, author: Person, file: File, text: str, recipients: Iterable[PublicIdentity], kind: str = "note"
) -> tuple[uuid.UUID, NoteEnvelope]:
    record_id = uuid.uuid4()
    envelope = encrypt_note(text, NoteContext(file.file_id, record_id, kind), author.identity, recipients)
    field = "note_id" if kind == "note" else "message_id"
    path = "/v2/client/notes" if kind == "note" else "/v2/client/chat"
    body = {field: str(record_id), "envelope": envelope.to_json()}
    status, _, payload = api.call("POST", path, body, client=file.ref, token=author.token)
    assert status == 201, payload
    return record_id, envelope


def read(api: Api, person: Person, file: File, kind: str = "note") -> list[dict[str, Any]]:
    path = "/v2/client/notes" if kind == "note" else "/v2/client/chat"
    status, _, payload = api.call("GET", path, client=file.ref, token=person.token)
    assert status == 200, payload
    return payload


def open_record(
    reader: Person,
    file_id: uuid.UUID,
    record: dict[str, Any],
    trusted: Iterable[PublicIdentity],
    kind: str = "note",
) -> str:
    """Decrypt a record as returned by the API, bound to the file id the reader expects."""
    record_id = uuid.UUID(record["note_id" if kind == "note" else "message_id"])
    envelope = NoteEnvelope.from_json(record["envelope"])
    return decrypt_note(envelope, NoteContext(file_id, record_id, kind), reader.identity, trusted)


def assert_no_identity_rows(pg: PgCluster, file: File) -> None:
    """No client, assignment or account row of the file's client is left in the identity database."""
    for table, column in (
        ("clients", "client_ref"),
        ("assignments", "client_ref"),
        ("accounts", "account_id"),
    ):
        rows = pg.execute("identity", f"SELECT count(*) FROM e2e.{table} WHERE {column} = %s", (file.ref,))
        assert rows == [(0,)], table


def hex_of(data: bytes) -> str:
    """How pg_dump writes a bytea value."""
    return "\\x" + data.hex()


BYTEA = re.compile(r"'\\x([0-9a-f]*)'")


def dumped_bytea(dump: str) -> set[bytes]:
    return {bytes.fromhex(h) for h in BYTEA.findall(dump)}

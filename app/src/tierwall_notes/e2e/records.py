"""Queries on the `notes` database's e2e schema: the clients' envelopes, stored as sent.

A record is one row (author, nonce, ciphertext, key commitment, signature, format version) plus
one row per recipient (fingerprint, sealed-box wrapped data key) in the order of the envelope,
so what is read back is the envelope that was sent, with any recipients added by a rewrap.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from psycopg import AsyncConnection, sql
from tierwall_notes_client.envelope import NoteEnvelope, Recipient

Kind = Literal["note", "chat"]


@dataclass(frozen=True)
class Tables:
    records: sql.Composable
    keys: sql.Composable
    id_column: sql.Composable


TABLES: dict[str, Tables] = {
    "note": Tables(
        sql.Identifier("e2e", "notes"), sql.Identifier("e2e", "note_keys"), sql.Identifier("note_id")
    ),
    "chat": Tables(
        sql.Identifier("e2e", "chat_messages"),
        sql.Identifier("e2e", "chat_keys"),
        sql.Identifier("message_id"),
    ),
}


@dataclass(frozen=True)
class StoredRecord:
    record_id: uuid.UUID
    file_id: uuid.UUID
    created_at: dt.datetime
    envelope: NoteEnvelope
    sender: str | None  # chat only


def _q(template: str, kind: Kind) -> sql.Composed:
    t = TABLES[kind]
    return sql.SQL(template).format(records=t.records, keys=t.keys, id=t.id_column)


async def insert(
    conn: AsyncConnection,
    kind: Kind,
    record_id: uuid.UUID,
    file_id: uuid.UUID,
    env: NoteEnvelope,
    sender: str,
) -> dt.datetime:
    extra, values = (", sender", (sender,)) if kind == "chat" else ("", ())
    cur = await conn.execute(
        _q(
            "INSERT INTO {records} ({id}, file_id, author, nonce, ciphertext, key_commitment, signature,"
            f" enc_version{extra}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s{', %s' if extra else ''})"
            " RETURNING created_at",
            kind,
        ),
        (record_id, file_id, env.author, env.nonce, env.ciphertext, env.key_commitment, env.signature,
         env.version, *values),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    await add_keys(conn, kind, record_id, env.recipients, 0)
    return row[0]


async def add_keys(
    conn: AsyncConnection, kind: Kind, record_id: uuid.UUID, recipients: tuple[Recipient, ...], first: int
) -> None:
    query = _q("INSERT INTO {keys} ({id}, position, fingerprint, wrapped_key) VALUES (%s, %s, %s, %s)", kind)
    for position, recipient in enumerate(recipients, start=first):
        await conn.execute(query, (record_id, position, recipient.fingerprint, recipient.wrapped_key))


async def _keys(conn: AsyncConnection, kind: Kind, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Recipient]]:
    cur = await conn.execute(
        _q(
            "SELECT {id}, fingerprint, wrapped_key FROM {keys} WHERE {id} = ANY(%s) ORDER BY {id}, position",
            kind,
        ),
        (ids,),
    )
    keys: dict[uuid.UUID, list[Recipient]] = {i: [] for i in ids}
    for record_id, fingerprint, wrapped in await cur.fetchall():
        keys[record_id].append(Recipient(fingerprint, bytes(wrapped)))
    return keys


async def list_records(
    conn: AsyncConnection, kind: Kind, file_id: uuid.UUID, record_id: uuid.UUID | None = None
) -> list[StoredRecord]:
    sender = "sender" if kind == "chat" else "NULL"
    only = " AND {id} = %s" if record_id else ""
    cur = await conn.execute(
        _q(
            "SELECT {id}, file_id, created_at, author, nonce, ciphertext, key_commitment, signature,"
            f" enc_version, {sender} FROM {{records}} WHERE file_id = %s{only} ORDER BY created_at, {{id}}",
            kind,
        ),
        (file_id, record_id) if record_id else (file_id,),
    )
    rows = await cur.fetchall()
    keys = await _keys(conn, kind, [row[0] for row in rows])
    return [_record(row, keys[row[0]]) for row in rows]


def _record(row: tuple, recipients: list[Recipient]) -> StoredRecord:
    record_id, file_id, created_at, author, nonce, ciphertext, commitment, signature, version, sender = row
    envelope = NoteEnvelope(
        author,
        bytes(nonce),
        bytes(ciphertext),
        bytes(commitment),
        bytes(signature),
        tuple(recipients),
        version,
    )
    return StoredRecord(record_id, file_id, created_at, envelope, sender)


async def unreadable_by(
    conn: AsyncConnection, kind: Kind, file_id: uuid.UUID, fingerprints: list[str]
) -> int:
    """How many of the file's records have no wrapped key for any of `fingerprints`."""
    cur = await conn.execute(
        _q(
            "SELECT count(*) FROM {records} r WHERE r.file_id = %s AND NOT EXISTS"
            " (SELECT 1 FROM {keys} k WHERE k.{id} = r.{id} AND k.fingerprint = ANY(%s))",
            kind,
        ),
        (file_id, fingerprints),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def delete_keys_of(conn: AsyncConnection, kind: Kind, file_id: uuid.UUID, fingerprint: str) -> int:
    cur = await conn.execute(
        _q(
            "DELETE FROM {keys} k USING {records} r WHERE k.{id} = r.{id} AND r.file_id = %s"
            " AND k.fingerprint = %s",
            kind,
        ),
        (file_id, fingerprint),
    )
    return cur.rowcount


async def delete_file(conn: AsyncConnection, kind: Kind, file_id: uuid.UUID) -> set[uuid.UUID]:
    """Every record of the file (their wrapped keys go with them: ON DELETE CASCADE)."""
    await conn.execute(
        _q("DELETE FROM {keys} k USING {records} r WHERE k.{id} = r.{id} AND r.file_id = %s", kind),
        (file_id,),
    )
    cur = await conn.execute(_q("DELETE FROM {records} WHERE file_id = %s RETURNING {id}", kind), (file_id,))
    return {row[0] for row in await cur.fetchall()}

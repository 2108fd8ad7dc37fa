"""Queries on the `notes` database: encrypted notes and chat messages, keyed by file id only."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection

from tierwall_notes.envelope import Sealed


@dataclass(frozen=True)
class StoredRecord:
    record_id: uuid.UUID
    created_at: dt.datetime
    sealed: Sealed
    sender: str | None = None  # chat messages only


_SEALED = "key_id, wrapped_key, nonce, ciphertext, enc_version"


def _sealed_values(sealed: Sealed) -> tuple:
    """The values of the _SEALED columns, in their order."""
    return (sealed.key_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext, sealed.version)


def _record(row: tuple, sender: str | None = None) -> StoredRecord:
    record_id, created_at, key_id, wrapped_key, nonce, ciphertext, version = row
    sealed = Sealed(key_id, bytes(wrapped_key), bytes(nonce), bytes(ciphertext), version)
    return StoredRecord(record_id, created_at, sealed, sender)


async def insert_note(
    conn: AsyncConnection, note_id: uuid.UUID, file_id: uuid.UUID, sealed: Sealed
) -> dt.datetime:
    cur = await conn.execute(
        f"INSERT INTO notes (note_id, file_id, {_SEALED})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING created_at",
        (note_id, file_id, *_sealed_values(sealed)),
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def list_notes(conn: AsyncConnection, file_id: uuid.UUID) -> list[StoredRecord]:
    cur = await conn.execute(
        f"SELECT note_id, created_at, {_SEALED} FROM notes WHERE file_id = %s ORDER BY created_at, note_id",
        (file_id,),
    )
    return [_record(row) for row in await cur.fetchall()]


async def get_note(conn: AsyncConnection, file_id: uuid.UUID, note_id: uuid.UUID) -> StoredRecord | None:
    cur = await conn.execute(
        f"SELECT note_id, created_at, {_SEALED} FROM notes WHERE file_id = %s AND note_id = %s",
        (file_id, note_id),
    )
    row = await cur.fetchone()
    return _record(row) if row else None


async def insert_chat(
    conn: AsyncConnection, message_id: uuid.UUID, file_id: uuid.UUID, sender: str, sealed: Sealed
) -> dt.datetime:
    cur = await conn.execute(
        f"INSERT INTO chat_messages (message_id, file_id, sender, {_SEALED})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING created_at",
        (message_id, file_id, sender, *_sealed_values(sealed)),
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def list_chat(conn: AsyncConnection, file_id: uuid.UUID) -> list[StoredRecord]:
    cur = await conn.execute(
        f"SELECT message_id, created_at, {_SEALED}, sender FROM chat_messages WHERE file_id = %s"
        " ORDER BY created_at, message_id",
        (file_id,),
    )
    return [_record(row[:-1], sender=row[-1]) for row in await cur.fetchall()]


async def delete_notes(conn: AsyncConnection, file_id: uuid.UUID) -> set[uuid.UUID]:
    cur = await conn.execute("DELETE FROM notes WHERE file_id = %s RETURNING note_id", (file_id,))
    return {row[0] for row in await cur.fetchall()}


async def delete_chat(conn: AsyncConnection, file_id: uuid.UUID) -> int:
    cur = await conn.execute("DELETE FROM chat_messages WHERE file_id = %s", (file_id,))
    return cur.rowcount

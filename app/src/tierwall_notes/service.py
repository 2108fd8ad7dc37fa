"""The use cases, across the two databases: notes, chat, contracts and the end-of-relationship handover.

Write protocol (keeps the two databases consistent without a distributed transaction): a writer
share-locks the client's row in `identity` (refusing a client whose handover has started), commits
its row in `notes`, then ends the identity transaction. A handover first marks the client closing,
which waits for running writers and stops new ones; then exports and deletes the notes and chat in
one `notes` transaction; then deletes the client row in `identity`. A handover interrupted between
these steps is completed by calling it again (idempotent).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from tierwall_notes import identity_store, notes_store
from tierwall_notes.db import Databases
from tierwall_notes.envelope import Context, RecordKind, open_sealed, seal
from tierwall_notes.identity_store import Client, Contract
from tierwall_notes.keyring import Keyring


class ClientNotFound(LookupError):
    pass


class ClientClosing(RuntimeError):
    """The client's handover has started: no more writes."""


class HandoverConflict(RuntimeError):
    """The notes changed while being exported; nothing was deleted."""


@dataclass(frozen=True)
class Note:
    note_id: uuid.UUID
    created_at: dt.datetime
    text: str


@dataclass(frozen=True)
class ChatMessage:
    message_id: uuid.UUID
    created_at: dt.datetime
    sender: str
    text: str


@dataclass(frozen=True)
class Handover:
    client_ref: str
    client_name: str
    exported_at: dt.datetime
    notes: list[Note]
    deleted_notes: int
    deleted_chat_messages: int
    deleted_clients: int
    contracts_ended: int


class NotesService:
    def __init__(self, dbs: Databases, keyring: Keyring) -> None:
        self._dbs = dbs
        self._keyring = keyring

    # -- clients ---------------------------------------------------------------------------------
    async def register_client(self, client_ref: str, display_name: str) -> bool:
        async with self._dbs.identity.connection() as conn:
            return await identity_store.create_client(conn, client_ref, display_name)

    async def _client(self, client_ref: str) -> Client:
        async with self._dbs.identity.connection() as conn:
            client = await identity_store.get_client(conn, client_ref)
        if client is None:
            raise ClientNotFound(client_ref)
        return client

    # -- notes and chat --------------------------------------------------------------------------
    async def _write(
        self, client_ref: str, kind: RecordKind, text: str, sender: str | None
    ) -> tuple[uuid.UUID, dt.datetime]:
        record_id = uuid.uuid4()
        async with self._dbs.identity.connection() as iconn, iconn.transaction():
            client = await identity_store.lock_client_for_write(iconn, client_ref)
            if client is None:
                raise ClientNotFound(client_ref)
            if client.closing:
                raise ClientClosing(client_ref)
            sealed = seal(self._keyring, text, Context(kind, client.file_id, record_id))
            async with self._dbs.notes.connection() as nconn:  # commits on leaving the block
                if kind == "note":
                    created_at = await notes_store.insert_note(nconn, record_id, client.file_id, sealed)
                else:
                    assert sender is not None
                    created_at = await notes_store.insert_chat(
                        nconn, record_id, client.file_id, sender, sealed
                    )
        return record_id, created_at

    async def add_note(self, client_ref: str, text: str) -> tuple[uuid.UUID, dt.datetime]:
        return await self._write(client_ref, "note", text, None)

    async def add_chat_message(
        self, client_ref: str, sender: str, text: str
    ) -> tuple[uuid.UUID, dt.datetime]:
        return await self._write(client_ref, "chat", text, sender)

    def _open_note(self, file_id: uuid.UUID, record: notes_store.StoredRecord) -> Note:
        text = open_sealed(self._keyring, record.sealed, Context("note", file_id, record.record_id))
        return Note(record.record_id, record.created_at, text)

    async def export(self, client_ref: str) -> tuple[Client, list[Note]]:
        client = await self._client(client_ref)
        async with self._dbs.notes.connection() as conn:
            records = await notes_store.list_notes(conn, client.file_id)
        return client, [self._open_note(client.file_id, r) for r in records]

    async def list_notes(self, client_ref: str) -> list[Note]:
        return (await self.export(client_ref))[1]

    async def get_note(self, client_ref: str, note_id: uuid.UUID) -> Note | None:
        client = await self._client(client_ref)
        async with self._dbs.notes.connection() as conn:
            record = await notes_store.get_note(conn, client.file_id, note_id)
        return self._open_note(client.file_id, record) if record else None

    async def list_chat(self, client_ref: str) -> list[ChatMessage]:
        client = await self._client(client_ref)
        async with self._dbs.notes.connection() as conn:
            records = await notes_store.list_chat(conn, client.file_id)
        return [
            ChatMessage(
                r.record_id,
                r.created_at,
                r.sender or "",
                open_sealed(self._keyring, r.sealed, Context("chat", client.file_id, r.record_id)),
            )
            for r in records
        ]

    # -- contracts -------------------------------------------------------------------------------
    async def add_contract(
        self, client_ref: str, package: str, price_cents: int, currency: str, started_on: dt.date
    ) -> Contract:
        async with self._dbs.identity.connection() as conn:
            client = await identity_store.get_client(conn, client_ref)
            if client is None:
                raise ClientNotFound(client_ref)
            return await identity_store.add_contract(conn, client, package, price_cents, currency, started_on)

    async def list_contracts(self, client_ref: str) -> list[Contract]:
        async with self._dbs.identity.connection() as conn:
            return await identity_store.list_contracts(conn, client_ref)

    async def end_contract(
        self, client_ref: str, contract_id: uuid.UUID, ended_at: dt.date
    ) -> Contract | None:
        async with self._dbs.identity.connection() as conn:
            return await identity_store.end_contract(conn, client_ref, contract_id, ended_at)

    # -- end of relationship ---------------------------------------------------------------------
    async def handover(self, client_ref: str) -> Handover:
        """Export the client's notes decrypted, then delete notes, chat and the client mapping.

        Contract records stay (ended today if still open): they are kept up to 10 years by law.
        """
        async with self._dbs.identity.connection() as conn:
            client = await identity_store.mark_closing(conn, client_ref)
        if client is None:
            raise ClientNotFound(client_ref)

        async with self._dbs.notes.connection() as conn, conn.transaction():
            # No SELECT ... FOR UPDATE: it needs UPDATE privilege, which the notes role does not have.
            # Writers are already stopped (closing_at); the comparison below catches any straggler.
            records = await notes_store.list_notes(conn, client.file_id)
            # Decrypt everything before deleting anything: a note that cannot be exported stays.
            notes = [self._open_note(client.file_id, r) for r in records]
            deleted = await notes_store.delete_notes(conn, client.file_id)
            if deleted != {n.note_id for n in notes}:
                raise HandoverConflict(client_ref)  # rolls the notes transaction back
            deleted_chat = await notes_store.delete_chat(conn, client.file_id)
            exported_at = dt.datetime.now(dt.UTC)

        async with self._dbs.identity.connection() as conn, conn.transaction():
            ended = await identity_store.end_open_contracts(conn, client_ref, exported_at.date())
            deleted_clients = await identity_store.delete_client(conn, client_ref)

        return Handover(
            client_ref=client.client_ref,
            client_name=client.display_name,
            exported_at=exported_at,
            notes=notes,
            deleted_notes=len(deleted),
            deleted_chat_messages=deleted_chat,
            deleted_clients=deleted_clients,
            contracts_ended=ended,
        )

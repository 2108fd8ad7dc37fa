"""The v2 use cases: who may do what on a client's file, across the two databases.

Authorisation: notes are read and written by the psychologists assigned to the client only; chat
by them and by the client's own account. Anyone else gets Forbidden, also for a client ref that
does not exist (no oracle for which refs exist).

Write protocol as in v1: share-lock the client row in `identity` (refusing a file being deleted),
commit the record in `notes`, end the identity transaction. The file's deletion marks the client
row closing first, which waits for running writers and stops new ones.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import AsyncConnection
from tierwall_notes_client import NoteContext, NoteEnvelope, PublicIdentity, verify_signature
from tierwall_notes_client.errors import ClientCryptoError

from tierwall_notes.db import Databases
from tierwall_notes.e2e import accounts, files, records
from tierwall_notes.e2e.accounts import Account
from tierwall_notes.e2e.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tierwall_notes.e2e.files import ClientFile, Contract
from tierwall_notes.e2e.records import Kind, StoredRecord
from tierwall_notes.keyring import Keyring


@dataclass(frozen=True)
class Access:
    client: ClientFile
    psychologists: list[Account]
    client_account: Account | None

    def recipients(self, kind: Kind) -> set[str]:
        """The fingerprints a record of `kind` must be wrapped to: exactly these."""
        wanted = {p.fingerprint for p in self.psychologists}
        if kind == "chat" and self.client_account is not None:
            wanted.add(self.client_account.fingerprint)
        return wanted


@dataclass(frozen=True)
class Deleted:
    """What the end of a file removed, and the contracts kept under their legal hold."""

    counts: dict[str, int]
    contracts: list[Contract]
    contracts_ended: int
    exported: list[StoredRecord] = field(default_factory=list)
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class E2EService:
    def __init__(self, dbs: Databases, keyring: Keyring) -> None:
        self._dbs = dbs
        self._keyring = keyring

    # -- login -----------------------------------------------------------------------------------
    async def challenge(self, account_id: str) -> accounts.Challenge:
        async with self._dbs.identity.connection() as conn:
            return await accounts.issue_challenge(conn, account_id)

    async def login(self, challenge_id: uuid.UUID, account_id: str, signature: bytes) -> accounts.Token:
        async with self._dbs.identity.connection() as conn:
            return await accounts.answer_challenge(conn, challenge_id, account_id, signature)

    async def authenticate(self, token: str) -> Account:
        async with self._dbs.identity.connection() as conn:
            return await accounts.authenticate(conn, token)

    async def logout(self, token: str) -> None:
        async with self._dbs.identity.connection() as conn:
            await accounts.logout(conn, token)

    async def public_key(self, caller: Account, account_id: str) -> PublicIdentity:
        async with self._dbs.identity.connection() as conn:
            account = await accounts.get_account(conn, account_id)
        if account is None or account.role != "psychologist":
            raise NotFound("no such psychologist")
        return account.public

    # -- access ----------------------------------------------------------------------------------
    async def _access(
        self, conn: AsyncConnection, caller: Account, client_ref: str, *, client_too: bool, lock: bool = False
    ) -> Access:
        client = await files.get_client(conn, self._keyring, client_ref, lock=lock)
        if client is None:
            raise Forbidden("not assigned to this client")
        psychologists = await files.psychologists(conn, client_ref)
        own = client_too and caller.role == "client" and caller.account_id == client.account_id
        if not own and caller.account_id not in {p.account_id for p in psychologists}:
            raise Forbidden("not assigned to this client")
        client_account = await accounts.get_account(conn, client.account_id) if client.account_id else None
        return Access(client, psychologists, client_account)

    async def file(self, caller: Account, client_ref: str) -> Access:
        async with self._dbs.identity.connection() as conn:
            return await self._access(conn, caller, client_ref, client_too=True)

    # -- intake ----------------------------------------------------------------------------------
    async def open_file(
        self, caller: Account, client_ref: str, name: str, client_key: PublicIdentity | None
    ) -> tuple[bool, Access]:
        """A new client with the calling psychologist assigned; an existing one only for its own."""
        if caller.role != "psychologist":
            raise Forbidden("only a psychologist opens a client's file")
        if client_key is not None and client_key.psychologist_id != client_ref:
            raise InvalidRequest("the client's public key must be made for the client ref as its id")
        async with self._dbs.identity.connection() as conn:
            async with conn.transaction():
                created = await self._create(conn, caller, client_ref, name, client_key)
            return created, await self._access(conn, caller, client_ref, client_too=False)

    async def _create(
        self, conn: AsyncConnection, caller: Account, client_ref: str, name: str, key: PublicIdentity | None
    ) -> bool:
        if await files.get_client(conn, self._keyring, client_ref) is not None:
            return False
        if key is not None:
            await accounts.insert_account(conn, key, "client")
        account_id = key.psychologist_id if key else None
        created = await files.create_client(conn, self._keyring, client_ref, name, account_id)
        if not created:
            raise Conflict("the client was registered at the same time: retry")
        await files.assign(conn, client_ref, caller.account_id)
        return True

    # -- notes and chat --------------------------------------------------------------------------
    async def post(
        self, caller: Account, client_ref: str, kind: Kind, record_id: uuid.UUID, envelope: NoteEnvelope
    ) -> dt.datetime:
        async with self._dbs.identity.connection() as iconn, iconn.transaction():
            access = await self._access(iconn, caller, client_ref, client_too=kind == "chat", lock=True)
            if access.client.closing:
                raise Conflict("the client's file is being deleted: no more writes")
            _check_envelope(access, kind, caller, record_id, envelope)
            try:
                async with self._dbs.notes.connection() as nconn:
                    return await records.insert(
                        nconn, kind, record_id, access.client.file_id, envelope, caller.role
                    )
            except psycopg.errors.UniqueViolation:
                raise Conflict(f"the {kind} id is already taken: encrypt again under a new id") from None

    async def read(
        self, caller: Account, client_ref: str, kind: Kind, record_id: uuid.UUID | None = None
    ) -> list[StoredRecord]:
        access = await self.file(caller, client_ref)
        if kind == "note" and caller.role != "psychologist":
            raise Forbidden("notes are the psychologists' records")
        async with self._dbs.notes.connection() as conn:
            return await records.list_records(conn, kind, access.client.file_id, record_id)

    # -- change of psychologist ------------------------------------------------------------------
    async def rewrap(
        self, caller: Account, client_ref: str, to: str, batch: dict[Kind, dict[uuid.UUID, NoteEnvelope]]
    ) -> dict[str, int]:
        """Store the wrapped keys that `batch` (rewrapped client side) adds for psychologist `to`."""
        async with self._dbs.identity.connection() as iconn, iconn.transaction():
            access = await self._psychologist_access(iconn, caller, client_ref)
            target = next((p for p in access.psychologists if p.account_id == to), None)
            if target is None:
                raise Conflict(f"{to!r} is not assigned to this client: the operator assigns them first")
            async with self._dbs.notes.connection() as nconn, nconn.transaction():
                added = {k: await _add_keys(nconn, k, access.client.file_id, target, batch[k]) for k in batch}
                missing = {
                    k: await records.unreadable_by(nconn, k, access.client.file_id, [target.fingerprint])
                    for k in ("note", "chat")
                }
        return {
            "notes_added": added.get("note", 0),
            "chat_added": added.get("chat", 0),
            "notes_missing": missing["note"],
            "chat_missing": missing["chat"],
        }

    async def _psychologist_access(self, conn: AsyncConnection, caller: Account, client_ref: str) -> Access:
        access = await self._access(conn, caller, client_ref, client_too=False, lock=True)
        if access.client.closing:
            raise Conflict("the client's file is being deleted")
        return access

    async def release(self, caller: Account, client_ref: str) -> dict[str, int]:
        """The caller leaves the file: their wrapped keys and assignment go, once others can read it all."""
        async with self._dbs.identity.connection() as iconn, iconn.transaction():
            access = await self._psychologist_access(iconn, caller, client_ref)
            others = [p.fingerprint for p in access.psychologists if p.account_id != caller.account_id]
            if not others:
                raise Conflict("you are the last psychologist: end the file with the handover instead")
            async with self._dbs.notes.connection() as nconn, nconn.transaction():
                file_id = access.client.file_id
                if any([await records.unreadable_by(nconn, k, file_id, others) for k in ("note", "chat")]):
                    raise Conflict(
                        "some records are wrapped to nobody else: rewrap them for your successor first"
                    )
                removed = {
                    k: await records.delete_keys_of(nconn, k, file_id, caller.fingerprint)
                    for k in ("note", "chat")
                }
            await files.unassign(iconn, client_ref, caller.account_id)
        return {"note_keys_removed": removed["note"], "chat_keys_removed": removed["chat"]}

    # -- end of the file -------------------------------------------------------------------------
    async def handover(self, caller: Account, client_ref: str) -> Deleted:
        """The encrypted notes to the caller (the last psychologist), then everything of the file goes."""
        access = await self.file(caller, client_ref)
        if caller.role != "psychologist":
            raise Forbidden("the notes go to a psychologist")
        if len(access.psychologists) > 1:
            raise Conflict("other psychologists are still assigned: the notes go to the last one")
        async with self._dbs.notes.connection() as conn:
            if await records.unreadable_by(conn, "note", access.client.file_id, [caller.fingerprint]):
                raise Conflict("some notes are not wrapped to your key: have them rewrapped for you first")
        return await self._end(access, caller, keep_notes_for=caller.fingerprint)

    async def erase(self, caller: Account, client_ref: str) -> Deleted:
        """The data subject's erasure: refused while notes (the psychologist's records) remain."""
        access = await self.file(caller, client_ref)
        async with self._dbs.notes.connection() as conn:
            if await records.list_records(conn, "note", access.client.file_id):
                raise Conflict(
                    "notes of this client are still on the platform: the psychologist takes them"
                    " over with the handover, which erases the file"
                )
        return await self._end(access, caller, keep_notes_for=None)

    async def _end(self, access: Access, caller: Account, keep_notes_for: str | None) -> Deleted:
        client = access.client
        async with self._dbs.identity.connection() as conn:
            await files.mark_closing(conn, client.client_ref)
        async with self._dbs.notes.connection() as conn, conn.transaction():
            exported = await records.list_records(conn, "note", client.file_id)
            if exported and keep_notes_for is None:
                raise Conflict("a note was written meanwhile: nothing was deleted")
            if {r.record_id for r in exported} != await records.delete_file(conn, "note", client.file_id):
                raise Conflict("notes changed during the handover: nothing was deleted, retry")
            chat = await records.delete_file(conn, "chat", client.file_id)
        async with self._dbs.identity.connection() as conn, conn.transaction():
            ended = await files.end_open_contracts(conn, client.client_ref, dt.datetime.now(dt.UTC).date())
            counts = await files.delete_client(conn, client)
            contracts = await files.list_contracts(conn, self._keyring, client.client_ref)
        counts |= {"notes": len(exported), "chat_messages": len(chat)}
        return Deleted(counts, contracts, ended, exported)

    # -- identity and contract data ----------------------------------------------------------------
    async def contracts(self, caller: Account, client_ref: str) -> tuple[Access, list[Contract]]:
        async with self._dbs.identity.connection() as conn:
            access = await self._access(conn, caller, client_ref, client_too=True)
            return access, await files.list_contracts(conn, self._keyring, client_ref)

    async def add_contract(
        self, caller: Account, client_ref: str, terms: dict[str, object], started_on: dt.date
    ) -> Contract:
        async with self._dbs.identity.connection() as conn:
            access = await self._access(conn, caller, client_ref, client_too=False)
            full = {"client_name": access.client.name, **terms}
            return await files.add_contract(conn, self._keyring, client_ref, full, started_on)

    async def rectify(self, caller: Account, client_ref: str, name: str) -> int:
        """The client's name corrected, in the client row and in every contract that copies it."""
        async with self._dbs.identity.connection() as conn, conn.transaction():
            access = await self._access(conn, caller, client_ref, client_too=True, lock=True)
            await files.rename(conn, self._keyring, access.client, name)
            return await files.rename_in_contracts(conn, self._keyring, client_ref, name)


def _check_envelope(
    access: Access, kind: Kind, caller: Account, record_id: uuid.UUID, env: NoteEnvelope
) -> None:
    if kind == "chat" and access.client_account is None:
        raise Conflict("the client has no key: chat needs one (register it with the client's file)")
    wanted, got = access.recipients(kind), [r.fingerprint for r in env.recipients]
    if set(got) != wanted or len(got) != len(wanted):
        raise InvalidRequest(
            f"the {kind} must be wrapped to exactly the file's participants: {sorted(wanted)}"
        )
    try:
        verify_signature(env, NoteContext(access.client.file_id, record_id, kind), caller.public)
    except ClientCryptoError:
        raise InvalidRequest(f"the {kind} is not signed by your key for this file and id") from None


async def _add_keys(
    conn: AsyncConnection,
    kind: Kind,
    file_id: uuid.UUID,
    target: Account,
    batch: dict[uuid.UUID, NoteEnvelope],
) -> int:
    added = 0
    for record_id, envelope in batch.items():
        stored = await records.list_records(conn, kind, file_id, record_id)
        if not stored:
            raise InvalidRequest(f"no {kind} {record_id} in this file")
        old = stored[0].envelope
        if _signed_part(envelope) != _signed_part(old):
            raise InvalidRequest(f"the rewrapped {kind} {record_id} differs from the stored one")
        present = {r.fingerprint for r in old.recipients}
        new = tuple(
            r
            for r in envelope.recipients
            if r.fingerprint == target.fingerprint and r.fingerprint not in present
        )
        await records.add_keys(conn, kind, record_id, new, len(old.recipients))
        added += len(new)
    return added


def _signed_part(env: NoteEnvelope) -> tuple[object, ...]:
    return (env.version, env.author, env.nonce, env.ciphertext, env.key_commitment, env.signature)

"""Clients, their assignments and contracts in the `identity` database (schema e2e).

The client's name and the contract terms are identity data the platform may read: sealed by the
app under its master keyring (bound to the file id, or the contract id), so a dump of this
database alone does not show them. The file id is the only link to the `notes` database.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from tierwall_notes.e2e.accounts import ACCOUNT_COLUMNS, Account, account_from_row
from tierwall_notes.envelope import Context, Sealed, open_sealed, seal
from tierwall_notes.keyring import Keyring

HOLD_YEARS = 10


@dataclass(frozen=True)
class ClientFile:
    client_ref: str
    file_id: uuid.UUID
    account_id: str | None  # the client's own account (their chat key), if any
    name: str
    closing: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class Contract:
    contract_id: uuid.UUID
    terms: dict[str, Any]  # client_name, package, price_cents, currency
    started_on: dt.date
    ended_at: dt.date | None

    @property
    def hold_until(self) -> dt.date | None:
        return add_years(self.ended_at, HOLD_YEARS) if self.ended_at else None


def add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _name_context(file_id: uuid.UUID) -> Context:
    return Context("identity", file_id, file_id)


def _sealed_row(sealed: Sealed) -> tuple[str, bytes, bytes, bytes]:
    return sealed.key_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext


_CLIENT = (
    "client_ref, file_id, account_id, name_key_id, name_wrapped, name_nonce, name_sealed,"
    " closing_at IS NOT NULL, created_at"
)


def _client(keyring: Keyring, row: tuple) -> ClientFile:
    ref, file_id, account_id, key_id, wrapped, nonce, ciphertext, closing, created_at = row
    sealed = Sealed(key_id, bytes(wrapped), bytes(nonce), bytes(ciphertext))
    name = open_sealed(keyring, sealed, _name_context(file_id))
    return ClientFile(ref, file_id, account_id, name, closing, created_at)


async def create_client(
    conn: AsyncConnection, keyring: Keyring, client_ref: str, name: str, account_id: str | None
) -> bool:
    file_id = uuid.uuid4()
    cur = await conn.execute(
        "INSERT INTO e2e.clients (client_ref, file_id, account_id, name_key_id, name_wrapped,"
        " name_nonce, name_sealed) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (client_ref, file_id, account_id, *_sealed_row(seal(keyring, name, _name_context(file_id)))),
    )
    return cur.rowcount == 1


async def get_client(
    conn: AsyncConnection, keyring: Keyring, client_ref: str, *, lock: bool = False
) -> ClientFile | None:
    """With `lock`, share-locked until the transaction ends: the file's deletion waits for it."""
    suffix = " FOR SHARE" if lock else ""
    cur = await conn.execute(
        f"SELECT {_CLIENT} FROM e2e.clients WHERE client_ref = %s{suffix}", (client_ref,)
    )
    row = await cur.fetchone()
    return _client(keyring, row) if row else None


async def rename(conn: AsyncConnection, keyring: Keyring, client: ClientFile, name: str) -> None:
    await conn.execute(
        "UPDATE e2e.clients SET name_key_id = %s, name_wrapped = %s, name_nonce = %s, name_sealed = %s"
        " WHERE client_ref = %s",
        (*_sealed_row(seal(keyring, name, _name_context(client.file_id))), client.client_ref),
    )


async def mark_closing(conn: AsyncConnection, client_ref: str) -> None:
    """No write is accepted for the file afterwards; waits for running writes (their share lock)."""
    await conn.execute(
        "UPDATE e2e.clients SET closing_at = coalesce(closing_at, now()) WHERE client_ref = %s", (client_ref,)
    )


async def assign(conn: AsyncConnection, client_ref: str, psychologist_id: str) -> bool:
    cur = await conn.execute(
        "INSERT INTO e2e.assignments (client_ref, psychologist_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (client_ref, psychologist_id),
    )
    return cur.rowcount == 1


async def unassign(conn: AsyncConnection, client_ref: str, psychologist_id: str) -> int:
    cur = await conn.execute(
        "DELETE FROM e2e.assignments WHERE client_ref = %s AND psychologist_id = %s",
        (client_ref, psychologist_id),
    )
    return cur.rowcount


async def psychologists(conn: AsyncConnection, client_ref: str) -> list[Account]:
    cur = await conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM e2e.assignments s"
        " JOIN e2e.accounts a ON a.account_id = s.psychologist_id"
        " WHERE s.client_ref = %s AND a.role = 'psychologist' ORDER BY s.assigned_at, a.account_id",
        (client_ref,),
    )
    return [account_from_row(row) for row in await cur.fetchall()]


async def delete_client(conn: AsyncConnection, client: ClientFile) -> dict[str, int]:
    """The client row (name, file id mapping), its assignments, and the client's account and tokens."""
    counts = {"assignments": 0, "clients": 0, "accounts": 0}
    cur = await conn.execute("DELETE FROM e2e.assignments WHERE client_ref = %s", (client.client_ref,))
    counts["assignments"] = cur.rowcount
    cur = await conn.execute("DELETE FROM e2e.clients WHERE client_ref = %s", (client.client_ref,))
    counts["clients"] = cur.rowcount
    if client.account_id:
        await conn.execute("DELETE FROM e2e.sessions WHERE account_id = %s", (client.account_id,))
        await conn.execute("DELETE FROM e2e.login_challenges WHERE account_id = %s", (client.account_id,))
        cur = await conn.execute(
            "DELETE FROM e2e.accounts WHERE account_id = %s AND role = 'client'", (client.account_id,)
        )
        counts["accounts"] = cur.rowcount
    return counts


# -- contracts -------------------------------------------------------------------------------------
def _contract_context(contract_id: uuid.UUID) -> Context:
    return Context("contract", contract_id, contract_id)


def _seal_terms(keyring: Keyring, contract_id: uuid.UUID, terms: dict[str, Any]) -> Sealed:
    return seal(keyring, json.dumps(terms, sort_keys=True), _contract_context(contract_id))


_CONTRACT = "contract_id, key_id, wrapped_key, nonce, sealed_terms, started_on, ended_at"


def _contract(keyring: Keyring, row: tuple) -> Contract:
    contract_id, key_id, wrapped, nonce, ciphertext, started_on, ended_at = row
    sealed = Sealed(key_id, bytes(wrapped), bytes(nonce), bytes(ciphertext))
    terms = json.loads(open_sealed(keyring, sealed, _contract_context(contract_id)))
    return Contract(contract_id, terms, started_on, ended_at)


async def add_contract(
    conn: AsyncConnection, keyring: Keyring, client_ref: str, terms: dict[str, Any], started_on: dt.date
) -> Contract:
    contract_id = uuid.uuid4()
    cur = await conn.execute(
        f"INSERT INTO e2e.contracts (contract_id, client_ref, key_id, wrapped_key, nonce, sealed_terms,"
        f" started_on) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_CONTRACT}",
        (contract_id, client_ref, *_sealed_row(_seal_terms(keyring, contract_id, terms)), started_on),
    )
    row = await cur.fetchone()
    assert row is not None
    return _contract(keyring, row)


async def list_contracts(conn: AsyncConnection, keyring: Keyring, client_ref: str) -> list[Contract]:
    cur = await conn.execute(
        f"SELECT {_CONTRACT} FROM e2e.contracts WHERE client_ref = %s ORDER BY started_on, contract_id",
        (client_ref,),
    )
    return [_contract(keyring, row) for row in await cur.fetchall()]


async def rename_in_contracts(conn: AsyncConnection, keyring: Keyring, client_ref: str, name: str) -> int:
    contracts = await list_contracts(conn, keyring, client_ref)
    for contract in contracts:
        sealed = _seal_terms(keyring, contract.contract_id, {**contract.terms, "client_name": name})
        await conn.execute(
            "UPDATE e2e.contracts SET key_id = %s, wrapped_key = %s, nonce = %s, sealed_terms = %s"
            " WHERE contract_id = %s",
            (*_sealed_row(sealed), contract.contract_id),
        )
    return len(contracts)


async def end_open_contracts(conn: AsyncConnection, client_ref: str, ended_at: dt.date) -> int:
    cur = await conn.execute(
        "UPDATE e2e.contracts SET ended_at = greatest(%s, started_on)"
        " WHERE client_ref = %s AND ended_at IS NULL",
        (ended_at, client_ref),
    )
    return cur.rowcount

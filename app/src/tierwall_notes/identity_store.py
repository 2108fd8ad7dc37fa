"""Queries on the `identity` database: clients, their pseudonymous file id, contracts."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection


@dataclass(frozen=True)
class Client:
    client_ref: str
    display_name: str
    file_id: uuid.UUID
    closing: bool


@dataclass(frozen=True)
class Contract:
    contract_id: uuid.UUID
    client_ref: str
    client_name: str
    package: str
    price_cents: int
    currency: str
    started_on: dt.date
    ended_at: dt.date | None


def new_file_id() -> uuid.UUID:
    """A random, unguessable file id (122 random bits from the OS CSPRNG)."""
    return uuid.uuid4()


async def create_client(conn: AsyncConnection, client_ref: str, display_name: str) -> bool:
    """True if the client was created, False if it already existed (its name is left unchanged)."""
    cur = await conn.execute(
        "INSERT INTO clients (client_ref, display_name, file_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (client_ref) DO NOTHING",
        (client_ref, display_name, new_file_id()),
    )
    return cur.rowcount == 1


async def get_client(conn: AsyncConnection, client_ref: str) -> Client | None:
    cur = await conn.execute(
        "SELECT client_ref, display_name, file_id, closing_at IS NOT NULL FROM clients WHERE client_ref = %s",
        (client_ref,),
    )
    row = await cur.fetchone()
    return Client(*row) if row else None


async def lock_client_for_write(conn: AsyncConnection, client_ref: str) -> Client | None:
    """The client, share-locked until the caller's transaction ends, so a handover waits for it."""
    cur = await conn.execute(
        "SELECT client_ref, display_name, file_id, closing_at IS NOT NULL FROM clients"
        " WHERE client_ref = %s FOR SHARE",
        (client_ref,),
    )
    row = await cur.fetchone()
    return Client(*row) if row else None


async def mark_closing(conn: AsyncConnection, client_ref: str) -> Client | None:
    """Start a handover: no write is accepted for the client afterwards. Waits for running writes."""
    cur = await conn.execute(
        "UPDATE clients SET closing_at = coalesce(closing_at, now()) WHERE client_ref = %s"
        " RETURNING client_ref, display_name, file_id, true",
        (client_ref,),
    )
    row = await cur.fetchone()
    return Client(*row) if row else None


async def end_open_contracts(conn: AsyncConnection, client_ref: str, ended_at: dt.date) -> int:
    cur = await conn.execute(
        "UPDATE contracts SET ended_at = greatest(%s, started_on) WHERE client_ref = %s AND ended_at IS NULL",
        (ended_at, client_ref),
    )
    return cur.rowcount


async def delete_client(conn: AsyncConnection, client_ref: str) -> int:
    cur = await conn.execute("DELETE FROM clients WHERE client_ref = %s", (client_ref,))
    return cur.rowcount


_CONTRACT_COLUMNS = (
    "contract_id, client_ref, client_name, package, price_cents, currency, started_on, ended_at"
)


async def add_contract(
    conn: AsyncConnection, client: Client, package: str, price_cents: int, currency: str, started_on: dt.date
) -> Contract:
    cur = await conn.execute(
        "INSERT INTO contracts"
        " (contract_id, client_ref, client_name, package, price_cents, currency, started_on)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_CONTRACT_COLUMNS}",
        (uuid.uuid4(), client.client_ref, client.display_name, package, price_cents, currency, started_on),
    )
    row = await cur.fetchone()
    assert row is not None
    return Contract(*row)


async def list_contracts(conn: AsyncConnection, client_ref: str) -> list[Contract]:
    cur = await conn.execute(
        f"SELECT {_CONTRACT_COLUMNS} FROM contracts WHERE client_ref = %s ORDER BY started_on, contract_id",
        (client_ref,),
    )
    return [Contract(*row) for row in await cur.fetchall()]


async def end_contract(
    conn: AsyncConnection, client_ref: str, contract_id: uuid.UUID, ended_at: dt.date
) -> Contract | None:
    cur = await conn.execute(
        "UPDATE contracts SET ended_at = %s WHERE client_ref = %s AND contract_id = %s"
        f" RETURNING {_CONTRACT_COLUMNS}",
        (ended_at, client_ref, contract_id),
    )
    row = await cur.fetchone()
    return Contract(*row) if row else None

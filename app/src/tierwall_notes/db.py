"""Connection pools to the two databases.

Each pooled connection is checked (an empty query) when it is handed out, so connections
broken by a PostgreSQL restart are discarded and replaced instead of failing the next request.
Writes are never retried blindly: a commit whose outcome is unknown must not run twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0


def make_pool(conninfo: str, name: str, min_size: int, max_size: int) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        timeout=10.0,
        reconnect_timeout=60.0,
        max_idle=300.0,
    )


@dataclass(frozen=True)
class Databases:
    notes: AsyncConnectionPool
    identity: AsyncConnectionPool

    async def open(self) -> None:
        # wait=False: the app starts (and /healthz says 503) while PostgreSQL is still down.
        await self.notes.open(wait=False)
        await self.identity.open(wait=False)

    async def close(self) -> None:
        await self.notes.close()
        await self.identity.close()

    async def health(self) -> dict[str, bool]:
        notes, identity = await asyncio.gather(_ping(self.notes), _ping(self.identity))
        return {"notes": notes, "identity": identity}


async def _ping(pool: AsyncConnectionPool) -> bool:
    try:
        async with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("database %s unreachable: %s", pool.name, type(exc).__name__)
        return False
    return True

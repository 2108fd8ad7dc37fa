"""Accounts (public keys only), login challenges and bearer tokens, in the `identity` database.

Login: the server issues a random 32-byte challenge, valid CHALLENGE_TTL and usable once (it is
deleted when answered, whatever the answer); the account signs it with its Ed25519 key
(tierwall_notes_client.sign_challenge); a valid signature earns a random token valid TOKEN_TTL.
Only the token's SHA-256 is stored: a dump of the table logs nobody in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection
from tierwall_notes_client import PublicIdentity, verify_challenge
from tierwall_notes_client.errors import ClientCryptoError

from tierwall_notes.e2e.errors import Conflict, Unauthenticated

CHALLENGE_BYTES = 32
CHALLENGE_TTL = dt.timedelta(seconds=60)
TOKEN_TTL = dt.timedelta(minutes=15)
ROLES = ("psychologist", "client")


@dataclass(frozen=True)
class Account:
    account_id: str
    role: str
    public: PublicIdentity

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint


@dataclass(frozen=True)
class Challenge:
    challenge_id: uuid.UUID
    challenge: bytes
    expires_at: dt.datetime


@dataclass(frozen=True)
class Token:
    token: str
    account_id: str
    expires_at: dt.datetime


ACCOUNT_COLUMNS = "a.account_id, a.role, a.encryption_key, a.signing_key"


def account_from_row(row: tuple) -> Account:
    account_id, role, encryption_key, signing_key = row[:4]
    return Account(account_id, role, PublicIdentity(account_id, bytes(encryption_key), bytes(signing_key)))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def insert_account(conn: AsyncConnection, public: PublicIdentity, role: str) -> None:
    """A new account; refuses an id or a key already registered (no silent key replacement)."""
    assert role in ROLES
    cur = await conn.execute(
        "INSERT INTO e2e.accounts (account_id, role, encryption_key, signing_key, fingerprint)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (public.psychologist_id, role, public.encryption_key, public.signing_key, public.fingerprint),
    )
    if cur.rowcount != 1:
        raise Conflict(f"account {public.psychologist_id!r} or its key is already registered")


async def get_account(conn: AsyncConnection, account_id: str) -> Account | None:
    cur = await conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM e2e.accounts a WHERE a.account_id = %s", (account_id,)
    )
    row = await cur.fetchone()
    return account_from_row(row) if row else None


async def issue_challenge(conn: AsyncConnection, account_id: str) -> Challenge:
    """Issued for any id, registered or not, so the answer does not tell which ids exist."""
    await conn.execute("DELETE FROM e2e.login_challenges WHERE expires_at < now()")
    challenge_id, challenge = uuid.uuid4(), secrets.token_bytes(CHALLENGE_BYTES)
    cur = await conn.execute(
        "INSERT INTO e2e.login_challenges (challenge_id, account_id, challenge, expires_at)"
        " VALUES (%s, %s, %s, now() + %s) RETURNING expires_at",
        (challenge_id, account_id, challenge, CHALLENGE_TTL),
    )
    row = await cur.fetchone()
    assert row is not None
    return Challenge(challenge_id, challenge, row[0])


async def _consume_challenge(conn: AsyncConnection, challenge_id: uuid.UUID, account_id: str) -> bytes:
    cur = await conn.execute(
        "DELETE FROM e2e.login_challenges WHERE challenge_id = %s AND account_id = %s"
        " RETURNING challenge, expires_at > now()",
        (challenge_id, account_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise Unauthenticated("unknown or already used challenge: ask for a new one")
    if not row[1]:
        raise Unauthenticated("the challenge expired: ask for a new one")
    return bytes(row[0])


async def answer_challenge(
    conn: AsyncConnection, challenge_id: uuid.UUID, account_id: str, signature: bytes
) -> Token:
    """A token for `account_id` if `signature` is its key's signature of the (fresh, unused) challenge.

    The challenge is consumed in its own commit first, so a failed answer cannot be retried.
    """
    async with conn.transaction():
        challenge = await _consume_challenge(conn, challenge_id, account_id)
    account = await get_account(conn, account_id)
    try:
        if account is None:
            raise Unauthenticated("the signature does not verify")
        verify_challenge(account.public, challenge, signature)
    except ClientCryptoError:
        raise Unauthenticated("the signature does not verify") from None
    await conn.execute("DELETE FROM e2e.sessions WHERE expires_at < now()")
    token = secrets.token_urlsafe(32)
    cur = await conn.execute(
        "INSERT INTO e2e.sessions (token_hash, account_id, expires_at) VALUES (%s, %s, now() + %s)"
        " RETURNING expires_at",
        (token_hash(token), account_id, TOKEN_TTL),
    )
    row = await cur.fetchone()
    assert row is not None
    return Token(token, account_id, row[0])


def bearer(authorization: str | None) -> str:
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("missing bearer token: log in with a signed challenge")
    return presented.strip()


async def authenticate(conn: AsyncConnection, token: str) -> Account:
    digest = token_hash(token)
    cur = await conn.execute(
        f"SELECT {ACCOUNT_COLUMNS}, s.token_hash, s.expires_at > now() FROM e2e.sessions s"
        " JOIN e2e.accounts a ON a.account_id = s.account_id WHERE s.token_hash = %s",
        (digest,),
    )
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[4]), digest):
        raise Unauthenticated("invalid token: log in with a signed challenge")
    if not row[5]:
        raise Unauthenticated("the token expired: log in again")
    return account_from_row(row)


async def logout(conn: AsyncConnection, token: str) -> None:
    await conn.execute("DELETE FROM e2e.sessions WHERE token_hash = %s", (token_hash(token),))

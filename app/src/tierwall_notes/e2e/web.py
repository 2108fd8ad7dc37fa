"""The v2 HTTP API under /v2: per-account login, notes and chat as end-to-end encrypted envelopes.

The app's rules hold here as in v1 (tierwall_notes.web): fixed paths only, identifiers in headers
or bodies, any query string refused before anything is read, no cookie, `Cache-Control: no-store`,
one log line per request with the route template only. The v1 shared token opens nothing here:
every request but the two login steps carries a token obtained by signing a challenge.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tierwall_notes_client import NoteEnvelope, PublicIdentity
from tierwall_notes_client.errors import ClientCryptoError

from tierwall_notes.e2e.accounts import Account, bearer
from tierwall_notes.e2e.errors import E2EError
from tierwall_notes.e2e.files import Contract
from tierwall_notes.e2e.records import Kind, StoredRecord
from tierwall_notes.e2e.service import Access, Deleted, E2EService
from tierwall_notes.envelope import DecryptionError
from tierwall_notes.keyring import UnknownKeyError
from tierwall_notes.web import (
    CLIENT_REF,
    MAX_NAME_CHARS,
    NOTE_HEADER,
    BadRequest,
    _body,
    _client_ref,
    _contract_terms,
    _date,
    _error,
    _iso,
    _json,
    _text,
    _uuid,
    errors,
    log,
)

PSYCHOLOGIST_HEADER = "Tierwall-Psychologist-Id"
ID_FIELD = {"note": "note_id", "chat": "message_id"}
LEGAL_HOLD = (
    "contract records are kept until 10 years after the contract ended (limitation period for claims"
    " and accounting records), then deleted by the retention purge; erasure does not reach them earlier"
)
Handler = Callable[[Request, Any], Awaitable[Response]]


# -- request and response helpers ------------------------------------------------------------------
def _service(request: Request) -> E2EService:
    service = request.app.state.tierwall.e2e
    assert service is not None, "the v2 service is wired in server.state_factory"
    return service


def _account_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not CLIENT_REF.match(value):
        raise BadRequest(f"{what} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return value


def _b64(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise BadRequest(f"'{what}' must be base64")


def _envelope(value: Any) -> NoteEnvelope:
    try:
        return NoteEnvelope.from_json(value, "envelope")
    except ClientCryptoError as exc:
        raise BadRequest(str(exc)) from None


def _public_key(value: Any) -> PublicIdentity:
    try:
        return PublicIdentity.from_json(value, "client_key")
    except ClientCryptoError as exc:
        raise BadRequest(str(exc)) from None


def _record_json(kind: Kind, record: StoredRecord) -> dict[str, Any]:
    payload = {
        ID_FIELD[kind]: str(record.record_id),
        "file_id": str(record.file_id),
        "created_at": _iso(record.created_at),
        "envelope": record.envelope.to_json(),
    }
    if kind == "chat":
        payload["sender"] = record.sender
    return payload


def _contract_json(contract: Contract) -> dict[str, Any]:
    return {
        "contract_id": str(contract.contract_id),
        **contract.terms,
        "started_on": _iso(contract.started_on),
        "ended_at": _iso(contract.ended_at),
        "hold_until": _iso(contract.hold_until),
    }


def _file_json(access: Access) -> dict[str, Any]:
    return {
        "client_ref": access.client.client_ref,
        "file_id": str(access.client.file_id),
        "client_key": access.client_account.public.to_json() if access.client_account else None,
        "psychologists": [p.public.to_json() for p in access.psychologists],
    }


def _deleted_json(deleted: Deleted) -> dict[str, Any]:
    return {
        "deleted": deleted.counts,
        "kept": {
            "contracts": [_contract_json(c) for c in deleted.contracts],
            "contracts_ended_now": deleted.contracts_ended,
            "legal_hold": LEGAL_HOLD,
        },
    }


# -- login -----------------------------------------------------------------------------------------
async def post_challenge(request: Request, _: None) -> Response:
    account_id = _account_id((await _body(request)).get("account_id"), "'account_id'")
    challenge = await _service(request).challenge(account_id)
    return _json(
        {
            "challenge_id": str(challenge.challenge_id),
            "challenge": base64.b64encode(challenge.challenge).decode("ascii"),
            "expires_at": _iso(challenge.expires_at),
        },
        201,
    )


async def post_token(request: Request, _: None) -> Response:
    data = await _body(request)
    challenge_id = _uuid(data.get("challenge_id"), "'challenge_id'")
    account_id = _account_id(data.get("account_id"), "'account_id'")
    token = await _service(request).login(challenge_id, account_id, _b64(data.get("signature"), "signature"))
    return _json({"token": token.token, "account_id": token.account_id, "expires_at": _iso(token.expires_at)})


async def post_logout(request: Request, caller: Account) -> Response:
    await _service(request).logout(bearer(request.headers.get("authorization")))
    return _json({"logged_out": caller.account_id})


async def get_psychologist_key(request: Request, caller: Account) -> Response:
    account_id = _account_id(request.headers.get(PSYCHOLOGIST_HEADER), f"the {PSYCHOLOGIST_HEADER} header")
    return _json((await _service(request).public_key(caller, account_id)).to_json())


# -- the client's file -----------------------------------------------------------------------------
async def put_client(request: Request, caller: Account) -> Response:
    data = await _body(request)
    name = _text(data, "name", MAX_NAME_CHARS)
    key = _public_key(data["client_key"]) if data.get("client_key") is not None else None
    created, access = await _service(request).open_file(caller, _client_ref(request), name, key)
    return _json(_file_json(access), 201 if created else 200)


async def get_client(request: Request, caller: Account) -> Response:
    return _json(_file_json(await _service(request).file(caller, _client_ref(request))))


def _post_record(kind: Kind) -> Handler:
    async def post(request: Request, caller: Account) -> Response:
        data = await _body(request)
        record_id = _uuid(data.get(ID_FIELD[kind]), f"'{ID_FIELD[kind]}'")
        envelope = _envelope(data.get("envelope"))
        created_at = await _service(request).post(caller, _client_ref(request), kind, record_id, envelope)
        return _json({ID_FIELD[kind]: str(record_id), "created_at": _iso(created_at)}, 201)

    return post


def _list_records(kind: Kind) -> Handler:
    async def get(request: Request, caller: Account) -> Response:
        found = await _service(request).read(caller, _client_ref(request), kind)
        return _json([_record_json(kind, r) for r in found])

    return get


async def get_note(request: Request, caller: Account) -> Response:
    note_id = _uuid(request.headers.get(NOTE_HEADER), f"the {NOTE_HEADER} header")
    found = await _service(request).read(caller, _client_ref(request), "note", note_id)
    return _json(_record_json("note", found[0])) if found else _error("unknown note", 404)


# -- change of psychologist and end of the file ----------------------------------------------------
def _batch(data: dict[str, Any], key: str, kind: Kind) -> dict[uuid.UUID, NoteEnvelope]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadRequest(f"'{key}' must be a list of {{{ID_FIELD[kind]!r}, 'envelope'}} objects")
    return {
        _uuid(e.get(ID_FIELD[kind]), f"'{ID_FIELD[kind]}'"): _envelope(e.get("envelope")) for e in entries
    }


async def post_rewrap(request: Request, caller: Account) -> Response:
    data = await _body(request)
    to = _account_id(data.get("to"), "'to'")
    batch: dict[Kind, dict[uuid.UUID, NoteEnvelope]] = {
        "note": _batch(data, "notes", "note"),
        "chat": _batch(data, "chat", "chat"),
    }
    return _json(await _service(request).rewrap(caller, _client_ref(request), to, batch))


async def post_release(request: Request, caller: Account) -> Response:
    return _json(await _service(request).release(caller, _client_ref(request)))


async def post_handover(request: Request, caller: Account) -> Response:
    ref = _client_ref(request)
    deleted = await _service(request).handover(caller, ref)
    bundle = {
        "client_ref": ref,
        "exported_at": _iso(deleted.at),
        "notes": [_record_json("note", r) for r in deleted.exported],
    }
    return _json(bundle | _deleted_json(deleted))


# -- identity and contract data: the data subject's rights -----------------------------------------
async def get_contracts(request: Request, caller: Account) -> Response:
    _, contracts = await _service(request).contracts(caller, _client_ref(request))
    return _json([_contract_json(c) for c in contracts])


async def post_contract(request: Request, caller: Account) -> Response:
    data = await _body(request)
    package, price, currency = _contract_terms(data)
    terms = {"package": package, "price_cents": price, "currency": currency}
    contract = await _service(request).add_contract(
        caller, _client_ref(request), terms, _date(data, "started_on")
    )
    return _json(_contract_json(contract), 201)


async def _export(request: Request, caller: Account) -> dict[str, Any]:
    access, contracts = await _service(request).contracts(caller, _client_ref(request))
    return {
        "format": "tierwall-notes-data-export",
        "version": 1,
        "exported_at": _iso(dt.datetime.now(dt.UTC)),
        "client": {
            "client_ref": access.client.client_ref,
            "name": access.client.name,
            "file_id": str(access.client.file_id),
            "registered_at": _iso(access.client.created_at),
            "chat_key_fingerprint": access.client_account.fingerprint if access.client_account else None,
        },
        "psychologists": [p.account_id for p in access.psychologists],
        "contracts": [_contract_json(c) for c in contracts],
        "not_included": "notes and chat messages: end-to-end encrypted, the platform cannot read them",
    }


async def get_export(request: Request, caller: Account) -> Response:
    return _json(await _export(request, caller))


async def put_identity(request: Request, caller: Account) -> Response:
    name = _text(await _body(request), "name", MAX_NAME_CHARS)
    await _service(request).rectify(caller, _client_ref(request), name)
    return _json(await _export(request, caller))


async def post_erase(request: Request, caller: Account) -> Response:
    deleted = await _service(request).erase(caller, _client_ref(request))
    return _json({"client_ref": _client_ref(request), "erased_at": _iso(deleted.at)} | _deleted_json(deleted))


# -- wiring ----------------------------------------------------------------------------------------
async def _respond(request: Request, handler: Handler, auth: bool) -> Response:
    if request.url.query:
        # Identifiers in a URL end up in access logs; refuse them before reading anything.
        raise BadRequest("query strings are not accepted: name the client in a header")
    caller = None
    if auth:
        caller = await _service(request).authenticate(bearer(request.headers.get("authorization")))
    return await handler(request, caller)


def _failure(exc: Exception, template: str) -> Response:
    if isinstance(exc, BadRequest):
        return _error(str(exc), exc.status)
    if isinstance(exc, E2EError):
        response = _error(str(exc), exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, (DecryptionError, UnknownKeyError)):  # identity data sealed by the app
        errors.error("decryption failed on %s: %s", template, exc)
        return _error("a stored record could not be decrypted", 500)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        # A deployment migrated without --v2: the v2 routes do not exist there, as before v2.
        return _error("no such route: the v2 API is not installed here (tierwall-notes-migrate --v2)", 404)
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        errors.error("database unavailable on %s: %s", template, type(exc).__name__)
        return _error("database unavailable", 503)
    assert isinstance(exc, psycopg.Error)  # its message may quote row values: class and SQLSTATE only
    errors.error("database error on %s: %s %s", template, type(exc).__name__, exc.sqlstate)
    return _error("database error", 500)


def _guard(handler: Handler, template: str, auth: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        try:
            response = await _respond(request, handler, auth)
        except (BadRequest, E2EError, DecryptionError, UnknownKeyError, psycopg.Error, PoolTimeout) as exc:
            response = _failure(exc, template)
        elapsed = (time.monotonic() - started) * 1000
        log.info("%s %s %d %.1fms", request.method, template, response.status_code, elapsed)
        return response

    return endpoint


def _route(template: str, handler: Handler, method: str, *, auth: bool = True) -> Route:
    return Route(template, _guard(handler, template, auth), methods=[method])


ROUTES = [
    # Fixed paths only: the client is named by Tierwall-Client-Ref, a note by Tierwall-Note-Id.
    _route("/v2/auth/challenge", post_challenge, "POST", auth=False),
    _route("/v2/auth/token", post_token, "POST", auth=False),
    _route("/v2/auth/logout", post_logout, "POST"),
    _route("/v2/psychologist-key", get_psychologist_key, "GET"),
    _route("/v2/client", get_client, "GET"),
    _route("/v2/client", put_client, "PUT"),
    _route("/v2/client/notes", _list_records("note"), "GET"),
    _route("/v2/client/notes", _post_record("note"), "POST"),
    _route("/v2/client/note", get_note, "GET"),
    _route("/v2/client/chat", _list_records("chat"), "GET"),
    _route("/v2/client/chat", _post_record("chat"), "POST"),
    _route("/v2/client/rewrap", post_rewrap, "POST"),
    _route("/v2/client/release", post_release, "POST"),
    _route("/v2/client/handover", post_handover, "POST"),
    _route("/v2/client/contracts", get_contracts, "GET"),
    _route("/v2/client/contracts", post_contract, "POST"),
    _route("/v2/client/data-export", get_export, "GET"),
    _route("/v2/client/identity", put_identity, "PUT"),
    _route("/v2/client/erase", post_erase, "POST"),
]

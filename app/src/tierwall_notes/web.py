"""The HTTP API (Starlette). Every route but /healthz needs the bearer token.

No cookie is set, no third-party resource is referenced, request bodies are never logged, and the
access log names the route (``/client/notes``), never the client's address. Every response carries
``Cache-Control: no-store``.

No identifier travels in a URL: paths are fixed route names and query strings are refused. The
client (``Tierwall-Client-Ref``) and a note (``Tierwall-Note-Id``) are named in request headers, a
contract in the request body. Proxies log request paths (nginx logs ``$uri``); headers and bodies
are not logged anywhere, so the access logs of every tier cannot say whose file was read.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tierwall_notes.auth import TokenChecker
from tierwall_notes.db import Databases
from tierwall_notes.e2e.service import E2EService
from tierwall_notes.envelope import DecryptionError
from tierwall_notes.keyring import UnknownKeyError
from tierwall_notes.service import ClientClosing, ClientNotFound, Handover, HandoverConflict, NotesService

log = logging.getLogger("tierwall_notes.access")
errors = logging.getLogger("tierwall_notes.errors")

MAX_TEXT_CHARS = 100_000
MAX_NAME_CHARS = 200
CLIENT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CLIENT_HEADER = "Tierwall-Client-Ref"
NOTE_HEADER = "Tierwall-Note-Id"
CURRENCY = re.compile(r"^[A-Z]{3}$")
SENDERS = ("client", "psychologist")
NO_STORE = {"Cache-Control": "no-store"}

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AppState:
    service: NotesService
    dbs: Databases
    tokens: TokenChecker
    max_body_bytes: int  # Settings.max_body_bytes: the edge refuses larger bodies before they come here
    e2e: E2EService | None = None  # the v2 API's service, when its routes are served


# -- helpers ---------------------------------------------------------------------------------------
def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers=NO_STORE)


def _error(message: str, status: int) -> JSONResponse:
    return _json({"error": message}, status)


async def _body(request: Request) -> dict[str, Any]:
    limit = _state(request).max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body larger than {limit} bytes", 413)
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("request body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{key}' must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(f"'{key}' is longer than {limit} characters")
    return value


def _date(data: dict[str, Any], key: str) -> dt.date:
    value = data.get(key)
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise BadRequest(f"'{key}' must be a date YYYY-MM-DD")


def _client_ref(request: Request) -> str:
    ref = request.headers.get(CLIENT_HEADER)
    if ref is None:
        raise BadRequest(f"the {CLIENT_HEADER} header is required")
    if not CLIENT_REF.match(ref):
        raise BadRequest(f"{CLIENT_HEADER} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return ref


def _uuid(value: Any, what: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise BadRequest(f"{what} must be a UUID")


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _contract_json(c: Any) -> dict[str, Any]:
    return {
        "contract_id": str(c.contract_id),
        "client_ref": c.client_ref,
        "client_name": c.client_name,
        "package": c.package,
        "price_cents": c.price_cents,
        "currency": c.currency,
        "started_on": _iso(c.started_on),
        "ended_at": _iso(c.ended_at),
    }


def _export_json(
    client_ref: str, client_name: str, exported_at: dt.datetime, notes: list[Any]
) -> dict[str, Any]:
    return {
        "client_ref": client_ref,
        "client_name": client_name,
        "exported_at": _iso(exported_at),
        "notes": [
            {"note_id": str(n.note_id), "created_at": _iso(n.created_at), "text": n.text} for n in notes
        ],
    }


def _state(request: Request) -> AppState:
    return request.app.state.tierwall


# -- endpoints -------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    checks = await _state(request).dbs.health()
    ok = all(checks.values())
    return _json(
        {
            "status": "ok" if ok else "unavailable",
            **{k: "ok" if v else "unavailable" for k, v in checks.items()},
        },
        200 if ok else 503,
    )


async def put_client(request: Request) -> Response:
    ref = _client_ref(request)
    name = _text(await _body(request), "name", MAX_NAME_CHARS)
    created = await _state(request).service.register_client(ref, name)
    return _json({"client_ref": ref, "created": created}, 201 if created else 200)


async def post_note(request: Request) -> Response:
    ref = _client_ref(request)
    text = _text(await _body(request), "text", MAX_TEXT_CHARS)
    note_id, created_at = await _state(request).service.add_note(ref, text)
    return _json({"note_id": str(note_id), "created_at": _iso(created_at)}, 201)


async def list_notes(request: Request) -> Response:
    notes = await _state(request).service.list_notes(_client_ref(request))
    return _json(
        [{"note_id": str(n.note_id), "created_at": _iso(n.created_at), "text": n.text} for n in notes]
    )


async def get_note(request: Request) -> Response:
    ref = _client_ref(request)
    note_id = _uuid(request.headers.get(NOTE_HEADER), f"the {NOTE_HEADER} header")
    note = await _state(request).service.get_note(ref, note_id)
    if note is None:
        return _error("unknown note", 404)
    return _json({"note_id": str(note.note_id), "created_at": _iso(note.created_at), "text": note.text})


async def post_chat(request: Request) -> Response:
    ref = _client_ref(request)
    data = await _body(request)
    sender = data.get("sender")
    if sender not in SENDERS:
        raise BadRequest(f"'sender' must be one of {', '.join(SENDERS)}")
    text = _text(data, "text", MAX_TEXT_CHARS)
    message_id, created_at = await _state(request).service.add_chat_message(ref, sender, text)
    return _json({"message_id": str(message_id), "created_at": _iso(created_at)}, 201)


async def list_chat(request: Request) -> Response:
    messages = await _state(request).service.list_chat(_client_ref(request))
    return _json(
        [
            {
                "message_id": str(m.message_id),
                "created_at": _iso(m.created_at),
                "sender": m.sender,
                "text": m.text,
            }
            for m in messages
        ]
    )


def _contract_terms(data: dict[str, Any]) -> tuple[str, int, str]:
    """A new contract's package, price in cents and currency, each checked."""
    package = _text(data, "package", MAX_NAME_CHARS)
    price = data.get("price_cents")
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise BadRequest("'price_cents' must be a non-negative integer")
    currency = data.get("currency", "CHF")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise BadRequest("'currency' must be an ISO 4217 code such as CHF")
    return package, price, currency


async def post_contract(request: Request) -> Response:
    ref = _client_ref(request)
    data = await _body(request)
    package, price, currency = _contract_terms(data)
    contract = await _state(request).service.add_contract(
        ref, package, price, currency, _date(data, "started_on")
    )
    return _json(_contract_json(contract), 201)


async def list_contracts(request: Request) -> Response:
    contracts = await _state(request).service.list_contracts(_client_ref(request))
    return _json([_contract_json(c) for c in contracts])


async def end_contract(request: Request) -> Response:
    ref = _client_ref(request)
    data = await _body(request)
    contract_id = _uuid(data.get("contract_id"), "'contract_id'")
    ended_at = _date(data, "ended_at")
    contract = await _state(request).service.end_contract(ref, contract_id, ended_at)
    if contract is None:
        return _error("unknown contract", 404)
    return _json(_contract_json(contract))


async def export_notes(request: Request) -> Response:
    """Read-only export (the same document the handover returns), to keep a copy before deleting."""
    client, notes = await _state(request).service.export(_client_ref(request))
    return _json(_export_json(client.client_ref, client.display_name, dt.datetime.now(dt.UTC), notes))


async def handover(request: Request) -> Response:
    result: Handover = await _state(request).service.handover(_client_ref(request))
    payload = _export_json(result.client_ref, result.client_name, result.exported_at, result.notes)
    payload["deleted"] = {
        "notes": result.deleted_notes,
        "chat_messages": result.deleted_chat_messages,
        "clients": result.deleted_clients,
    }
    payload["kept"] = {
        "contracts": "kept up to 10 years after ended_at",
        "contracts_ended_now": result.contracts_ended,
    }
    return _json(payload)


# -- wiring ----------------------------------------------------------------------------------------
def _guard(handler: Handler, template: str, *, auth: bool = True) -> Handler:
    """Token check, error mapping and one access-log line (method, route template, status, time)."""

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        try:
            if request.url.query:
                # Identifiers in a URL end up in access logs; refuse them before reading anything.
                raise BadRequest("query strings are not accepted: name the client in a header")
            if auth and not _state(request).tokens.check_header(request.headers.get("authorization")):
                response: Response = _error("missing or invalid bearer token", 401)
                response.headers["WWW-Authenticate"] = "Bearer"
            else:
                response = await handler(request)
        except BadRequest as exc:
            response = _error(str(exc), exc.status)
        except ClientNotFound:
            response = _error("unknown client", 404)
        except ClientClosing:
            response = _error("the client's handover has started: no more writes", 409)
        except HandoverConflict:
            response = _error("notes changed during the handover; nothing was deleted, retry", 409)
        except (DecryptionError, UnknownKeyError) as exc:
            errors.error("decryption failed on %s: %s", template, exc)
            response = _error("a stored record could not be decrypted", 500)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            errors.error("database unavailable on %s: %s", template, type(exc).__name__)
            response = _error("database unavailable", 503)
        except psycopg.Error as exc:  # the message may quote row values: log class and SQLSTATE only
            errors.error("database error on %s: %s %s", template, type(exc).__name__, exc.sqlstate)
            response = _error("database error", 500)
        log.info(
            "%s %s %d %.1fms",
            request.method,
            template,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    return endpoint


def _route(template: str, handler: Handler, methods: list[str], *, auth: bool = True) -> Route:
    return Route(template, _guard(handler, template, auth=auth), methods=methods)


ROUTES = [
    _route("/healthz", healthz, ["GET"], auth=False),
    # Fixed paths only (no path parameters): the client is named by the Tierwall-Client-Ref header.
    _route("/client", put_client, ["PUT"]),
    _route("/client/notes", list_notes, ["GET"]),
    _route("/client/notes", post_note, ["POST"]),
    _route("/client/note", get_note, ["GET"]),
    _route("/client/chat", list_chat, ["GET"]),
    _route("/client/chat", post_chat, ["POST"]),
    _route("/client/contracts", list_contracts, ["GET"]),
    _route("/client/contracts", post_contract, ["POST"]),
    _route("/client/contracts/end", end_contract, ["POST"]),
    _route("/client/export", export_notes, ["GET"]),
    _route("/client/handover", handover, ["POST"]),
]


def create_app(
    state_factory: Callable[[], Awaitable[AppState]], extra_routes: Sequence[Route] = ()
) -> Starlette:
    """The ASGI app; ``state_factory`` opens the pools and loads the keys when the server starts.

    ``extra_routes``: the v2 API's (tierwall_notes.e2e.web.ROUTES), served beside v1's.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = await state_factory()
        app.state.tierwall = state
        try:
            yield
        finally:
            await state.dbs.close()

    async def no_such_route(request: Request, exc: Exception) -> Response:
        # Starlette's default is a text page; keep errors JSON and uncached like every other answer.
        status = getattr(exc, "status_code", 404)
        return _error("no such route" if status == 404 else "method not allowed", status)

    return Starlette(
        routes=[*ROUTES, *extra_routes],
        lifespan=lifespan,
        exception_handlers={404: no_such_route, 405: no_such_route},
    )

"""The application end to end on one machine: HTTPS (uvicorn, TLS) -> app -> PostgreSQL (TLS verify-full).

Needs PostgreSQL's server binaries (the ``pg`` fixture fails with the package to install).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
import uuid

import pytest
from notes_testkit import Api, PgCluster
from tierwall_notes.retention import PURGE_CHAT_SQL, PURGE_CONTRACTS_SQL

NOTE = "Client described panic attacks on the tram; we practised paced breathing."


def new_client(api: Api, name: str = "Anna Beispiel") -> str:
    ref = f"c-{uuid.uuid4().hex[:12]}"
    status, _, body = api.call("PUT", "/client", {"name": name}, client=ref)
    assert status == 201, body
    return ref


def file_id_of(pg: PgCluster, ref: str) -> uuid.UUID:
    rows = pg.execute("identity", "SELECT file_id FROM clients WHERE client_ref = %s", (ref,))
    assert rows, f"no mapping for {ref}"
    return rows[0][0]


def test_healthz_checks_both_databases(api: Api) -> None:
    status, headers, body = api.call("GET", "/healthz", token="")
    assert status == 200
    assert body == {"status": "ok", "notes": "ok", "identity": "ok"}
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("token", ["", "wrong-token-" + "y" * 40])
def test_data_endpoints_need_the_bearer_token(api: Api, pg: PgCluster, token: str) -> None:
    ref = new_client(api, "Original Name")
    for method, path, body in [
        ("PUT", "/client", {"name": "X"}),
        ("POST", "/client/notes", {"text": NOTE}),
        ("GET", "/client/notes", None),
        ("POST", "/client/chat", {"sender": "client", "text": NOTE}),
        ("GET", "/client/contracts", None),
        ("GET", "/client/export", None),
        ("POST", "/client/handover", None),
    ]:
        status, headers, payload = api.call(method, path, body, client=ref, token=token)
        assert status == 401, (method, path)
        assert headers["www-authenticate"] == "Bearer"
        assert payload == {"error": "missing or invalid bearer token"}
    file_id = file_id_of(pg, ref)  # the handover did not run
    assert pg.execute("notes", "SELECT count(*) FROM notes WHERE file_id = %s", (file_id,)) == [(0,)]
    assert pg.execute("identity", "SELECT display_name FROM clients WHERE client_ref = %s", (ref,)) == [
        ("Original Name",)
    ]


@pytest.mark.control("COOK-01")
def test_note_round_trip_without_cookies_or_caching(api: Api) -> None:
    ref = new_client(api)
    status, headers, created = api.call("POST", "/client/notes", {"text": NOTE}, client=ref)
    assert status == 201
    note_id = created["note_id"]
    assert "set-cookie" not in headers
    status, headers, note = api.call("GET", "/client/note", client=ref, headers={"Tierwall-Note-Id": note_id})
    assert status == 200
    assert note["text"] == NOTE
    assert headers["cache-control"] == "no-store"
    assert "set-cookie" not in headers
    assert "server" not in headers
    status, _, notes = api.call("GET", "/client/notes", client=ref)
    assert [n["text"] for n in notes] == [NOTE]


@pytest.mark.control("APP-01")
@pytest.mark.control("PSE-01")
def test_notes_database_holds_only_ciphertext_and_no_client_data(api: Api, pg: PgCluster) -> None:
    name, text = "Zoë Geheimname", "Unique note text 7f3a about a recurring nightmare."
    ref = new_client(api, name)
    assert api.call("POST", "/client/notes", {"text": text}, client=ref)[0] == 201
    chat = {"sender": "client", "text": "chat " + text}
    assert api.call("POST", "/client/chat", chat, client=ref)[0] == 201
    notes_dump = pg.dump("notes")
    assert str(file_id_of(pg, ref)) in notes_dump  # the dump really holds this client's rows
    for secret in (text, name, ref, "nightmare"):
        assert secret not in notes_dump
    identity_dump = pg.dump("identity")
    assert name in identity_dump
    assert "nightmare" not in identity_dump
    columns = pg.execute(
        "notes",
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'",
    )
    assert {c for _, c in columns} == {
        "note_id", "message_id", "file_id", "sender", "key_id", "wrapped_key", "nonce", "ciphertext",
        "enc_version", "created_at",
    }  # fmt: skip


@pytest.mark.control("PSE-01")
def test_file_ids_are_random_uuid4_and_unlinkable(api: Api, pg: PgCluster) -> None:
    refs = [new_client(api, f"Client {i}") for i in range(12)]
    file_ids = [file_id_of(pg, ref) for ref in refs]
    assert len(set(file_ids)) == len(file_ids)
    assert all(f.version == 4 for f in file_ids)
    ints = sorted(f.int for f in file_ids)
    assert min(b - a for a, b in itertools.pairwise(ints)) > 2**64  # not sequential
    for ref, file_id in zip(refs, file_ids, strict=True):
        assert ref.encode() not in file_id.bytes


def test_registering_twice_keeps_the_first_mapping(api: Api, pg: PgCluster) -> None:
    ref = new_client(api, "First Name")
    before = file_id_of(pg, ref)
    status, _, body = api.call("PUT", "/client", {"name": "Other Name"}, client=ref)
    assert (status, body) == (200, {"client_ref": ref, "created": False})
    assert file_id_of(pg, ref) == before


@pytest.mark.control("APP-01")
def test_ciphertext_moved_to_another_file_is_refused(api: Api, pg: PgCluster) -> None:
    victim, other = new_client(api), new_client(api)
    _, _, created = api.call("POST", "/client/notes", {"text": NOTE}, client=victim)
    pg.execute(
        "notes",
        "UPDATE notes SET file_id = %s WHERE note_id = %s",
        (file_id_of(pg, other), created["note_id"]),
    )
    status, _, body = api.call("GET", "/client/notes", client=other)
    assert status == 500
    assert body == {"error": "a stored record could not be decrypted"}
    assert NOTE not in str(body)


def test_validation_errors(api: Api) -> None:
    ref = new_client(api)
    assert api.call("POST", "/client/notes", {"text": ""}, client=ref)[0] == 400
    assert api.call("POST", "/client/notes", raw=b"not json", client=ref)[0] == 400
    assert api.call("POST", "/client/notes", raw=b"x" * (300 * 1024), client=ref)[0] == 413
    assert api.call("POST", "/client/chat", {"sender": "bot", "text": "hi"}, client=ref)[0] == 400
    assert api.call("PUT", "/client", {"name": "X"}, client="bad ref")[0] == 400
    assert api.call("PUT", "/client", {"name": "X"})[0] == 400  # no Tierwall-Client-Ref header
    assert api.call("POST", "/client/notes", {"text": NOTE}, client="nobody-here")[0] == 404
    note = {"Tierwall-Note-Id": str(uuid.uuid4())}
    assert api.call("GET", "/client/note", client=ref, headers=note)[0] == 404
    assert api.call("GET", "/client/note", client=ref, headers={"Tierwall-Note-Id": "1"})[0] == 400
    assert api.call("GET", "/client/note", client=ref)[0] == 400
    # The old API carried the client in the path: such URLs no longer exist.
    assert api.call("GET", f"/clients/{ref}/notes")[0] == 404


@pytest.mark.control("APP-01")
def test_query_strings_are_refused_before_anything_is_read(api: Api, pg: PgCluster) -> None:
    """Proxies log request paths: an identifier in the URL would land in their logs, so the API
    takes none (the client is named in a header) and refuses any query string outright."""
    ref = new_client(api)
    status, _, body = api.call("POST", "/client/notes?client_ref=x", {"text": NOTE}, client=ref)
    assert status == 400
    assert "query" in body["error"]
    file_id = file_id_of(pg, ref)
    assert pg.execute("notes", "SELECT count(*) FROM notes WHERE file_id = %s", (file_id,)) == [(0,)]


def test_access_log_names_route_templates_only(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tierwall_notes.access")
    ref = new_client(api)
    api.call("POST", "/client/notes", {"text": NOTE}, client=ref)
    api.call("POST", "/client/notes?debug=1", {"text": NOTE}, client=ref)
    lines = [r.getMessage() for r in caplog.records if r.name == "tierwall_notes.access"]
    assert "POST /client/notes 201" in " ".join(lines)
    assert "POST /client/notes 400" in " ".join(lines)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert ref not in logged
    assert NOTE not in logged
    assert "debug" not in logged
    assert "127.0.0.1" not in logged


def test_chat_round_trip_and_retention_purge(api: Api, pg: PgCluster) -> None:
    ref = new_client(api)
    ids = {}
    for age in (13, 11):
        status, _, body = api.call(
            "POST", "/client/chat", {"sender": "client", "text": f"{age} days"}, client=ref
        )
        assert status == 201
        ids[age] = body["message_id"]
        pg.execute(
            "notes",
            "UPDATE chat_messages SET created_at = now() - make_interval(days => %s) WHERE message_id = %s",
            (age, ids[age]),
        )
    pg.execute("notes", PURGE_CHAT_SQL)
    _, _, messages = api.call("GET", "/client/chat", client=ref)
    assert [(m["sender"], m["text"]) for m in messages] == [("client", "11 days")]


def test_contracts_and_their_retention_purge(api: Api, pg: PgCluster) -> None:
    ref = new_client(api, "Vertrag Person")
    today = dt.date.today()
    kept, purged = [], []
    for ended_at, bucket in (
        (today.replace(year=today.year - 10) - dt.timedelta(days=2), purged),
        (today.replace(year=today.year - 10) + dt.timedelta(days=2), kept),
    ):
        status, _, contract = api.call(
            "POST",
            "/client/contracts",
            {"package": "10 sessions", "price_cents": 150000, "started_on": "2000-01-01"},
            client=ref,
        )
        assert status == 201
        assert contract["client_name"] == "Vertrag Person"
        assert contract["currency"] == "CHF"
        status, _, ended = api.call(
            "POST",
            "/client/contracts/end",
            {"contract_id": contract["contract_id"], "ended_at": ended_at.isoformat()},
            client=ref,
        )
        assert status == 200
        assert ended["ended_at"] == ended_at.isoformat()
        bucket.append(contract["contract_id"])
    pg.execute("identity", PURGE_CONTRACTS_SQL)
    _, _, contracts = api.call("GET", "/client/contracts", client=ref)
    assert [c["contract_id"] for c in contracts] == kept


@pytest.mark.control("RET-04")
def test_handover_exports_then_deletes_everything_but_contracts(api: Api, pg: PgCluster) -> None:
    name = "Hand Over"
    ref = new_client(api, name)
    texts = ["first session", "second session: ça va mieux"]
    for text in texts:
        assert api.call("POST", "/client/notes", {"text": text}, client=ref)[0] == 201
    api.call("POST", "/client/chat", {"sender": "psychologist", "text": "see you Tuesday"}, client=ref)
    api.call(
        "POST",
        "/client/contracts",
        {"package": "single", "price_cents": 12000, "started_on": "2024-02-01"},
        client=ref,
    )
    file_id = file_id_of(pg, ref)

    status, _, export = api.call("GET", "/client/export", client=ref)
    assert status == 200
    assert [n["text"] for n in export["notes"]] == texts

    status, headers, handover = api.call("POST", "/client/handover", client=ref)
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert handover["client_ref"] == ref
    assert handover["client_name"] == name
    assert [n["text"] for n in handover["notes"]] == texts
    assert handover["deleted"] == {"notes": 2, "chat_messages": 1, "clients": 1}
    assert handover["kept"]["contracts_ended_now"] == 1

    assert pg.execute("notes", "SELECT count(*) FROM notes WHERE file_id = %s", (file_id,)) == [(0,)]
    assert pg.execute("notes", "SELECT count(*) FROM chat_messages WHERE file_id = %s", (file_id,)) == [(0,)]
    assert pg.execute("identity", "SELECT count(*) FROM clients WHERE client_ref = %s", (ref,)) == [(0,)]
    assert str(file_id) not in pg.dump("notes") + pg.dump("identity")
    contracts = pg.execute(
        "identity", "SELECT client_name, ended_at FROM contracts WHERE client_ref = %s", (ref,)
    )
    assert contracts == [(name, dt.date.today())]  # kept, and the 10-year clock started today

    status, _, body = api.call("POST", "/client/handover", client=ref)
    assert (status, body) == (404, {"error": "unknown client"})
    assert api.call("GET", "/client/notes", client=ref)[0] == 404


@pytest.mark.control("RET-04")
def test_interrupted_handover_completes_on_retry(api: Api, pg: PgCluster) -> None:
    ref = new_client(api)
    api.call("POST", "/client/notes", {"text": NOTE}, client=ref)
    file_id = file_id_of(pg, ref)
    # State after a crash between the notes delete and the mapping delete:
    pg.execute("identity", "UPDATE clients SET closing_at = now() WHERE client_ref = %s", (ref,))
    pg.execute("notes", "DELETE FROM notes WHERE file_id = %s", (file_id,))
    assert api.call("POST", "/client/notes", {"text": "late write"}, client=ref)[0] == 409
    status, _, handover = api.call("POST", "/client/handover", client=ref)
    assert status == 200
    assert handover["notes"] == []
    assert handover["deleted"] == {"notes": 0, "chat_messages": 0, "clients": 1}
    assert pg.execute("identity", "SELECT count(*) FROM clients WHERE client_ref = %s", (ref,)) == [(0,)]


@pytest.mark.control("RET-04")
def test_handover_deletes_nothing_it_cannot_export(api: Api, pg: PgCluster) -> None:
    ref = new_client(api)
    _, _, created = api.call("POST", "/client/notes", {"text": NOTE}, client=ref)
    pg.execute(
        "notes",
        "UPDATE notes SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)"
        " WHERE note_id = %s",
        (created["note_id"],),
    )
    status, _, _ = api.call("POST", "/client/handover", client=ref)
    assert status == 500
    assert pg.execute("notes", "SELECT count(*) FROM notes WHERE note_id = %s", (created["note_id"],)) == [
        (1,)
    ]
    assert pg.execute(
        "identity", "SELECT closing_at IS NOT NULL FROM clients WHERE client_ref = %s", (ref,)
    ) == [(True,)]


@pytest.mark.control("APP-01")
def test_postgresql_restart_is_survived(api: Api, pg: PgCluster) -> None:
    ref = new_client(api)
    api.call("POST", "/client/notes", {"text": NOTE}, client=ref)
    pg.restart()
    status, _, notes = api.call("GET", "/client/notes", client=ref)
    assert status == 200
    assert [n["text"] for n in notes] == [NOTE]
    assert api.call("GET", "/healthz", token="")[0] == 200


def test_healthz_reports_a_stopped_database_and_recovers(api: Api, pg: PgCluster) -> None:
    pg.stop()
    try:
        status, _, body = api.call("GET", "/healthz", token="")
        assert (status, body) == (
            503,
            {"status": "unavailable", "notes": "unavailable", "identity": "unavailable"},
        )
        assert api.call("GET", "/client/notes", client="anyone")[0] == 503
    finally:
        pg.start()
    # The pools reconnect with a backoff: recovery is bounded, not instant.
    deadline = time.monotonic() + 30
    while (status := api.call("GET", "/healthz", token="")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200

"""v2 identity and contract data: sealed at rest by the app, and the data subject's rights.

Export (machine-readable JSON), rectification, erasure with the contracts kept under their legal
hold; the retention purges of the v2 tables against their schema.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from e2e_testkit import File, Person, assert_no_identity_rows, open_file, post, psychologist
from notes_testkit import Api, PgCluster
from tierwall_notes.e2e.files import add_years
from tierwall_notes.e2e.retention import PURGE_CHAT_SQL, PURGE_CONTRACTS_SQL

NAME = "Ludmila Quellenhof"
CONTRACT = {"package": "10 sessions", "price_cents": 150000, "currency": "CHF", "started_on": "2026-02-02"}


def _file_with_contract(v2: Api, pg: PgCluster, tmp_path: Path) -> tuple[Person, File, dict]:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy, NAME)
    status, _, contract = v2.call("POST", "/v2/client/contracts", CONTRACT, client=file.ref, token=psy.token)
    assert status == 201, contract
    return psy, file, contract


def test_export_is_machine_readable_and_complete(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy, file, contract = _file_with_contract(v2, pg, tmp_path)
    assert file.client is not None
    for reader in (file.client, psy):  # the data subject, or their psychologist on their behalf
        status, headers, export = v2.call(
            "GET", "/v2/client/data-export", client=file.ref, token=reader.token
        )
        assert status == 200, export
        assert headers["content-type"] == "application/json"
        assert (export["format"], export["version"]) == ("tierwall-notes-data-export", 1)
        assert export["client"]["client_ref"] == file.ref
        assert export["client"]["name"] == NAME
        assert export["client"]["chat_key_fingerprint"] == file.client.public.fingerprint
        assert export["psychologists"] == [psy.id]
        assert export["contracts"] == [contract]
        assert contract["client_name"] == NAME
        assert contract["hold_until"] is None  # running: held until 10 years after it ends
        assert "end-to-end encrypted" in export["not_included"]


def test_identity_and_contract_data_are_sealed_at_rest(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    _, file, _ = _file_with_contract(v2, pg, tmp_path)
    identity_dump = pg.dump("identity")
    assert file.ref in identity_dump  # the rows are in the dump ...
    for clear in (NAME, "10 sessions", "150000"):
        assert clear not in identity_dump  # ... but not the name or the terms
    assert NAME not in pg.dump("notes")


def test_rectification_corrects_the_name_everywhere(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy, file, _ = _file_with_contract(v2, pg, tmp_path)
    assert file.client is not None
    status, _, export = v2.call(
        "PUT",
        "/v2/client/identity",
        {"name": "Ludmila Quellenhof-Berg"},
        client=file.ref,
        token=file.client.token,
    )
    assert status == 200, export
    assert export["client"]["name"] == "Ludmila Quellenhof-Berg"
    _, _, contracts = v2.call("GET", "/v2/client/contracts", client=file.ref, token=psy.token)
    assert [c["client_name"] for c in contracts] == ["Ludmila Quellenhof-Berg"]
    assert v2.call("PUT", "/v2/client/identity", {"name": ""}, client=file.ref, token=psy.token)[0] == 400


def test_erasure_waits_for_the_notes_to_go_to_the_psychologist(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy, file, _ = _file_with_contract(v2, pg, tmp_path)
    assert file.client is not None
    post(v2, psy, file, "a note", [psy.public])
    status, _, body = v2.call("POST", "/v2/client/erase", client=file.ref, token=file.client.token)
    assert status == 409
    assert "handover" in body["error"]
    assert pg.execute("identity", "SELECT count(*) FROM e2e.clients WHERE client_ref = %s", (file.ref,)) == [
        (1,)
    ]
    assert pg.execute("notes", "SELECT count(*) FROM e2e.notes WHERE file_id = %s", (file.file_id,)) == [(1,)]


def test_erasure_deletes_the_client_and_shows_the_contracts_hold(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy, file, contract = _file_with_contract(v2, pg, tmp_path)
    client = file.client
    assert client is not None
    post(v2, client, file, "please delete my data", [psy.public, client.public], kind="chat")
    status, _, body = v2.call("POST", "/v2/client/erase", client=file.ref, token=client.token)
    assert status == 200, body
    assert body["deleted"] == {"notes": 0, "chat_messages": 1, "clients": 1, "accounts": 1, "assignments": 1}
    today = dt.datetime.now(dt.UTC).date()
    [kept] = body["kept"]["contracts"]
    assert kept["contract_id"] == contract["contract_id"]
    assert (kept["ended_at"], kept["hold_until"]) == (today.isoformat(), add_years(today, 10).isoformat())
    assert "10 years" in body["kept"]["legal_hold"]
    assert_no_identity_rows(pg, file)
    assert pg.execute(
        "notes", "SELECT count(*) FROM e2e.chat_messages WHERE file_id = %s", (file.file_id,)
    ) == [(0,)]
    assert v2.call("GET", "/v2/client/data-export", client=file.ref, token=client.token)[0] == 401
    assert v2.call("GET", "/v2/client/data-export", client=file.ref, token=psy.token)[0] == 403


def test_v2_retention_purges(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy, file, contract = _file_with_contract(v2, pg, tmp_path)
    assert file.client is not None
    both = [psy.public, file.client.public]
    old, _ = post(v2, psy, file, "13 days old", both, kind="chat")
    recent, _ = post(v2, psy, file, "11 days old", both, kind="chat")
    for message_id, days in ((old, 13), (recent, 11)):
        pg.execute(
            "notes",
            "UPDATE e2e.chat_messages SET created_at = now() - make_interval(days => %s)"
            " WHERE message_id = %s",
            (days, message_id),
        )
    pg.execute("notes", PURGE_CHAT_SQL)
    left = pg.execute("notes", "SELECT message_id FROM e2e.chat_messages WHERE file_id = %s", (file.file_id,))
    assert left == [(recent,)]
    assert pg.execute("notes", "SELECT count(*) FROM e2e.chat_keys WHERE message_id = %s", (old,)) == [(0,)]
    _, _, second = v2.call("POST", "/v2/client/contracts", CONTRACT, client=file.ref, token=psy.token)
    ten_years_ago = add_years(dt.date.today(), -10)
    for contract_id, ended in ((contract["contract_id"], ten_years_ago - dt.timedelta(days=2)),
                               (second["contract_id"], ten_years_ago + dt.timedelta(days=2))):  # fmt: skip
        pg.execute(
            "identity",
            "UPDATE e2e.contracts SET started_on = '2000-01-01', ended_at = %s WHERE contract_id = %s",
            (ended, contract_id),
        )
    pg.execute("identity", PURGE_CONTRACTS_SQL)
    _, _, contracts = v2.call("GET", "/v2/client/contracts", client=file.ref, token=psy.token)
    assert [c["contract_id"] for c in contracts] == [second["contract_id"]]

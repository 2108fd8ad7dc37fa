"""v2 accounts: the operator's registration and assignment (tierwall-notes-admin), opening a
client's file, fetching public keys, and the v2 migration on a database v1 already uses."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from e2e_testkit import login, new_ref, open_file, psychologist
from notes_testkit import Api, PgCluster
from tierwall_notes.e2e import web as e2e_web
from tierwall_notes.e2e.admin import main as admin_main
from tierwall_notes.migrate import main as migrate_main
from tierwall_notes.schema import APP_PRIVILEGES, E2E_PRIVILEGES
from tierwall_notes_client import PublicIdentity, generate_identity

ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def _admin(pg: PgCluster, *argv: str) -> int:
    return admin_main(["--dsn", pg.superuser_conninfo(), *argv])


def test_registration_needs_the_fingerprint_read_out_by_the_psychologist(
    e2e_schema: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = e2e_schema
    identity = generate_identity(new_ref("psy"))
    path = tmp_path / "key.pub"
    path.write_text(identity.public.dumps())
    other = generate_identity(identity.psychologist_id).public.fingerprint
    assert _admin(pg, "add-psychologist", str(path), "--fingerprint", other) == 1
    assert "do not register it" in capsys.readouterr().err
    assert pg.execute(
        "identity", "SELECT count(*) FROM e2e.accounts WHERE account_id = %s", (identity.psychologist_id,)
    ) == [(0,)]
    spoken = identity.public.fingerprint.upper().replace(" ", "-")  # as typed by the operator
    assert _admin(pg, "add-psychologist", str(path), "--fingerprint", spoken) == 0
    # A second key under the same id is refused: a key is never replaced silently.
    again = tmp_path / "again.pub"
    again.write_text(generate_identity(identity.psychologist_id).public.dumps())
    fingerprint = PublicIdentity.loads(again.read_text()).fingerprint
    assert _admin(pg, "add-psychologist", str(again), "--fingerprint", fingerprint) == 1
    stored = pg.execute(
        "identity",
        "SELECT fingerprint, role FROM e2e.accounts WHERE account_id = %s",
        (identity.psychologist_id,),
    )
    assert stored == [(identity.public.fingerprint, "psychologist")]


def test_assignment_needs_a_registered_psychologist_and_client(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    assert _admin(pg, "assign", "--client-ref", file.ref, "--psychologist", "psy-unknown") == 1
    assert _admin(pg, "assign", "--client-ref", "c-unknown", "--psychologist", psy.id) == 1
    assert file.client is not None  # a client account is no psychologist
    assert _admin(pg, "assign", "--client-ref", file.ref, "--psychologist", file.client.id) == 1
    assert _admin(pg, "assign", "--client-ref", file.ref, "--psychologist", psy.id) == 0  # already: no change
    rows = pg.execute(
        "identity", "SELECT psychologist_id FROM e2e.assignments WHERE client_ref = %s", (file.ref,)
    )
    assert rows == [(psy.id,)]


def test_opening_a_file(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    file = open_file(v2, a)
    status, _, body = v2.call("PUT", "/v2/client", {"name": "Other"}, client=file.ref, token=a.token)
    assert (status, body["file_id"]) == (200, str(file.file_id))  # unchanged
    assert v2.call("PUT", "/v2/client", {"name": "Other"}, client=file.ref, token=b.token)[0] == 403
    assert file.client is not None
    ref = new_ref("c")
    assert v2.call("PUT", "/v2/client", {"name": "X"}, client=ref, token=file.client.token)[0] == 403
    wrong = generate_identity("c-someone-else").public.to_json()  # a client key names its client ref
    assert (
        v2.call("PUT", "/v2/client", {"name": "X", "client_key": wrong}, client=ref, token=a.token)[0] == 400
    )
    assert v2.call("PUT", "/v2/client", {"name": "X"}, client="bad ref", token=a.token)[0] == 400
    status, _, body = v2.call("PUT", "/v2/client", {"name": "No Chat"}, client=ref, token=a.token)
    assert (status, body["client_key"]) == (201, None)


def test_public_keys_are_served_to_logged_in_accounts(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    status, _, body = v2.call(
        "GET", "/v2/psychologist-key", token=a.token, headers={"Tierwall-Psychologist-Id": b.id}
    )
    assert status == 200
    assert PublicIdentity.from_json(body) == b.public
    missing = {"Tierwall-Psychologist-Id": "psy-nobody"}
    assert v2.call("GET", "/v2/psychologist-key", token=a.token, headers=missing)[0] == 404
    assert (
        v2.call("GET", "/v2/psychologist-key", token="", headers={"Tierwall-Psychologist-Id": b.id})[0] == 401
    )
    login(v2, a)  # a second login is a second token; both valid until they expire
    assert (
        v2.call("GET", "/v2/psychologist-key", token=a.token, headers={"Tierwall-Psychologist-Id": b.id})[0]
        == 200
    )


@pytest.mark.parametrize(("database", "role"), [("notes", "notes_app"), ("identity", "identity_app")])
def test_v2_migration_is_idempotent_and_grants_exactly_what_v2_needs(
    e2e_schema: PgCluster, database: str, role: str
) -> None:
    pg = e2e_schema
    count = "SELECT count(*) FROM pg_class WHERE relnamespace = 'e2e'::regnamespace"
    before = pg.execute(database, count)
    assert (
        migrate_main(["--database", database, "--dsn", pg.superuser_conninfo(), "--grant-to", role, "--v2"])
        == 0
    )
    assert pg.execute(database, count) == before
    for schema, privileges in (("e2e", E2E_PRIVILEGES), ("public", APP_PRIVILEGES)):
        for table, wanted in privileges[database].items():  # type: ignore[index]
            granted = {
                p
                for p in ALL_PRIVILEGES
                if pg.execute(
                    database, "SELECT has_table_privilege(%s, %s, %s)", (role, f"{schema}.{table}", p)
                )[0][0]
            }
            assert granted == set(wanted), (schema, table)
    other = "identity_app" if role == "notes_app" else "notes_app"
    assert pg.execute(database, "SELECT has_schema_privilege(%s, 'e2e', 'USAGE')", (other,)) == [(False,)]


def test_notes_role_cannot_rewrite_an_envelope(e2e_schema: PgCluster) -> None:
    for table in ("notes", "note_keys", "chat_messages", "chat_keys"):
        query = "SELECT has_table_privilege('notes_app', %s, 'UPDATE')"
        assert e2e_schema.execute("notes", query, (f"e2e.{table}",)) == [(False,)]


def test_a_deployment_without_the_v2_tables_answers_404_on_v2_routes() -> None:
    response = e2e_web._failure(
        psycopg.errors.UndefinedTable("relation e2e.sessions does not exist"), "/v2/x"
    )
    assert response.status_code == 404
    assert b"tierwall-notes-migrate --v2" in response.body
    assert e2e_web._failure(psycopg.errors.UniqueViolation("x"), "/v2/x").status_code == 500

"""The schema files and tierwall-notes-migrate against the throwaway PostgreSQL."""

from __future__ import annotations

import pytest
from notes_testkit import PgCluster
from tierwall_notes.migrate import main as migrate_main
from tierwall_notes.schema import APP_PRIVILEGES, schema_sql

ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def test_schema_files_ship_in_the_package() -> None:
    assert "CREATE TABLE IF NOT EXISTS notes" in schema_sql("notes")
    assert "CREATE TABLE IF NOT EXISTS chat_messages" in schema_sql("notes")
    assert "CREATE TABLE IF NOT EXISTS clients" in schema_sql("identity")
    assert "CREATE TABLE IF NOT EXISTS contracts" in schema_sql("identity")


@pytest.mark.parametrize(("database", "role"), [("notes", "notes_app"), ("identity", "identity_app")])
def test_migrate_is_idempotent(pg: PgCluster, database: str, role: str) -> None:
    before = pg.execute(database, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    code = migrate_main(["--database", database, "--dsn", pg.superuser_conninfo(), "--grant-to", role])
    assert code == 0
    after = pg.execute(database, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    assert before == after


@pytest.mark.parametrize(("database", "role"), [("notes", "notes_app"), ("identity", "identity_app")])
def test_app_roles_get_exactly_the_privileges_they_need(pg: PgCluster, database: str, role: str) -> None:
    for table, wanted in APP_PRIVILEGES[database].items():  # type: ignore[index]
        granted = {
            p
            for p in ALL_PRIVILEGES
            if pg.execute(database, "SELECT has_table_privilege(%s, %s, %s)", (role, table, p))[0][0]
        }
        assert granted == set(wanted), table


def test_notes_role_has_no_update_so_ciphertext_cannot_be_rewritten(pg: PgCluster) -> None:
    assert pg.execute("notes", "SELECT has_table_privilege('notes_app', 'notes', 'UPDATE')") == [(False,)]


def test_grant_needs_a_single_database() -> None:
    assert migrate_main(["--database", "all", "--dsn", "host=/nonexistent", "--grant-to", "x"]) == 2

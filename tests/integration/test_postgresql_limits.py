"""The postgresql role's session limits in a throw-away cluster of this machine's PostgreSQL.

The server settings are the role's rendered lines (idle_session_timeout shortened to one second so
the test can wait it out); the app role's settings are applied by the role's own module call
(community.postgresql.postgresql_user with the role's configuration, run twice: the second run must
change nothing). Then, as the server enforces it: an idle session of any other role is ended, the
app role's pooled connection is not, and the app's pool replaces a connection the server ended
before handing it out.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jinja2
import playbook_run
import psycopg
import pytest
import yaml

from tierwall.paths import REPO

ROLE = REPO / "ansible" / "roles" / "postgresql"
sys.path.insert(0, str(REPO / "app" / "tests"))
from notes_testkit import (  # noqa: E402
    NOTES_PASSWORD,
    PgCluster,
    make_pki,
    provisioned_cluster,
)

IDLE_S = 1  # the server-wide idle_session_timeout in this test


def _limits() -> str:
    """The session-limit lines of the role's postgresql.conf drop-in, rendered with its defaults."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    text = (ROLE / "templates" / "postgresql-tierwall.conf.j2").read_text()
    section = re.search(r"^# -- Session limits.*?\n\n", text, re.M | re.S)
    assert section, "the drop-in has no session limits section"
    overrides = {"postgresql_idle_session_timeout": f"{IDLE_S}s"}
    return jinja2.Template(section.group(0)).render({**defaults, **overrides})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with provisioned_cluster(pki, "tierwall-pg-limits-", _limits()) as pg:
        yield pg


def _apply_role_settings(pg: PgCluster, work: Path) -> int:
    """The role's postgresql_user call for notes_app, configuration included; its changed count."""
    playbook = work / "role-settings.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "The app role's settings", "community.postgresql.postgresql_user": {
            "login_host": str(pg.base), "login_port": pg.port, "login_user": "postgres",
            "login_db": "postgres",
            "name": "notes_app", "configuration": "{{ __postgresql_app_role_configuration }}",
            "reset_unspecified_configuration": True,
        }}],
    }]))  # fmt: skip
    inventory = work / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    changed, _ = playbook_run.converge(work, "localhost", "-i", inventory, playbook)
    return changed


def _app_conninfo(pg: PgCluster) -> str:
    return (pg.app_conninfo("notes", "notes_app")
            + f" password={NOTES_PASSWORD} sslmode=verify-ca sslrootcert={pg.pki.ca_cert}")  # fmt: skip


@pytest.mark.control("AVL-01")
def test_the_server_enforces_the_roles_limits(cluster: PgCluster) -> None:
    rows = dict(cluster.execute(
        "postgres", "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
        "('statement_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout')"))  # fmt: skip
    assert rows == {"statement_timeout": "30000ms", "idle_in_transaction_session_timeout": "60000ms",
                    "idle_session_timeout": f"{IDLE_S * 1000}ms"}  # fmt: skip
    with psycopg.connect(cluster.superuser_conninfo(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '200ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(2)")


@pytest.mark.control("AVL-01")
def test_the_role_applies_the_app_roles_settings_once(cluster: PgCluster, tmp_path: Path) -> None:
    assert _apply_role_settings(cluster, tmp_path) == 1
    assert _apply_role_settings(cluster, tmp_path) == 0, "a second converge changed the role's settings"
    config = cluster.execute("postgres", "SELECT rolconfig FROM pg_roles WHERE rolname = 'notes_app'")
    assert config == [(["idle_session_timeout=0"],)]


@pytest.mark.control("AVL-01")
def test_an_idle_session_ends_but_the_apps_pooled_connection_stays(
    cluster: PgCluster, tmp_path: Path
) -> None:
    _apply_role_settings(cluster, tmp_path)
    with psycopg.connect(cluster.superuser_conninfo(), autocommit=True) as other, \
            psycopg.connect(_app_conninfo(cluster), autocommit=True) as app:  # fmt: skip
        time.sleep(IDLE_S + 1.5)
        assert app.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")


def test_the_apps_pool_replaces_a_connection_the_server_ended(cluster: PgCluster) -> None:
    """Without the role's exemption the pool still serves: it checks a connection before handing it
    out and opens another (the cost the exemption avoids: a logged FATAL and a new handshake)."""
    from tierwall_notes.db import make_pool

    async def scenario() -> tuple[int, int]:
        pool = make_pool(_app_conninfo(cluster), "limits", 1, 2)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                first = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
            cluster.execute("postgres", "SELECT pg_terminate_backend(%s)", (first,))
            async with pool.connection() as conn:
                second = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
            return first, second
        finally:
            await pool.close()

    first, second = asyncio.run(scenario())
    assert first != second

"""Fixtures for the tierwall-notes tests.

Crypto and settings tests need nothing. The DB-backed tests start a throwaway PostgreSQL cluster
(Debian's ``postgresql`` package) in a temporary directory: TLS on 127.0.0.1 only plus a unix socket
in that directory, pg_hba as in production (hostssl + scram-sha-256 per role and database, then
reject). Missing binaries FAIL the tests with the package to install; nothing is installed here.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from notes_testkit import (
    API_TOKEN,
    IDENTITY_PASSWORD,
    NOTES_PASSWORD,
    Api,
    PgCluster,
    Pki,
    free_port,
    make_pki,
    provisioned_cluster,
    random_key_line,
    write_secret,
)
from tierwall_notes.migrate import main as migrate_main
from tierwall_notes.server import uvicorn_config
from tierwall_notes.settings import load_settings


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def pg(pki: Pki) -> Iterator[PgCluster]:
    with provisioned_cluster(pki, "tierwall-notes-pg-") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def app_env(pg: PgCluster, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    creds = tmp_path_factory.mktemp("credentials")
    creds.chmod(0o700)
    write_secret(creds / "notes-master-key", "\n".join([random_key_line("k-old"), random_key_line("k-new")]))
    write_secret(creds / "api-token", API_TOKEN)
    write_secret(creds / "notes-db-password", NOTES_PASSWORD)
    write_secret(creds / "identity-db-password", IDENTITY_PASSWORD)
    return {
        "CREDENTIALS_DIRECTORY": str(creds),
        "PGSSLROOTCERT": str(pki.ca_cert),
        "NOTES_DSN": pg.app_conninfo("notes", "notes_app"),
        "IDENTITY_DSN": pg.app_conninfo("identity", "identity_app"),
        "TIERWALL_LISTEN_HOST": "127.0.0.1",
        "TIERWALL_LISTEN_PORT": str(free_port()),
        "TIERWALL_TLS_CERT": str(pki.server_cert),
        "TIERWALL_TLS_KEY": str(pki.server_key),
        "TIERWALL_POOL_MAX_SIZE": "4",
        "TIERWALL_MAX_BODY_BYTES": str(256 * 1024),
    }


@pytest.fixture(scope="session")
def api(app_env: dict[str, str], pki: Pki) -> Iterator[Api]:
    settings = load_settings(app_env)
    server = uvicorn.Server(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, name="tierwall-notes-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the tierwall-notes test server did not start")
        time.sleep(0.05)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        yield Api(f"https://127.0.0.1:{settings.listen_port}", context, API_TOKEN)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def e2e_schema(pg: PgCluster) -> PgCluster:
    """The v2 tables, applied with `tierwall-notes-migrate --v2` on the databases v1 already uses."""
    for db, role in (("notes", "notes_app"), ("identity", "identity_app")):
        code = migrate_main(["--database", db, "--dsn", pg.superuser_conninfo(), "--grant-to", role, "--v2"])
        assert code == 0, f"migrating {db} to v2 failed"
    return pg


@pytest.fixture(scope="session")
def v2(e2e_schema: PgCluster, api: Api) -> Api:
    """The running app (v1 and v2 routes) once the v2 tables exist."""
    return api

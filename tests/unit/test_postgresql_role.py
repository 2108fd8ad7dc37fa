"""The postgresql role agrees with the application it serves, and renders what the controls promise.

The schema, the purge statements and the table privileges are the app's (app/src/tierwall_notes):
a drift between the two would pass every role test and break the app or the retention promise.
The rendered pg_hba.conf and server settings are checked here as well as live
(tests/testinfra/test_database.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from tierwall_notes import retention
from tierwall_notes.schema import APP_PRIVILEGES, DATABASES, schema_sql

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "postgresql"
APPS = ["10.10.2.20", "10.10.2.21"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _defaults() -> dict[str, Any]:
    return _yaml(ROLE / "defaults" / "main.yml")


def _render(template: str, **extra: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True, undefined=jinja2.StrictUndefined
    )
    internal = {
        "__postgresql_max_connections": 40,
        "__postgresql_memory_mb": 4096,
        "__postgresql_shared_buffers_mb": 1024,
        "__postgresql_effective_cache_size_mb": 3072,
        "__postgresql_maintenance_work_mem_mb": 256,
        "__postgresql_work_mem_mb": 25,
    }
    context = {
        **_defaults(),
        **internal,
        "ansible_managed": "Ansible managed",
        "inventory_hostname": "db-1",
        "postgresql_listen_addresses": ["10.10.2.30"],
        "postgresql_client_addresses": APPS,
        **extra,
    }
    return env.get_template(template).render(context)


@pytest.mark.parametrize("database", DATABASES)
def test_schema_files_are_the_apps(database: str) -> None:
    """The role applies the schema files the application ships, read from where the app keeps them."""
    source = _defaults()["postgresql_schema_source_dir"].replace("{{ role_path }}", str(ROLE))
    schema = next(db["schema"] for db in _defaults()["postgresql_databases"] if db["name"] == database)
    assert (Path(source) / schema).resolve().read_text() == schema_sql(database)


def test_privileges_are_the_apps() -> None:
    """Each database's login role gets exactly the app's APP_PRIVILEGES, and audited tables exist."""
    databases = {db["name"]: db for db in _defaults()["postgresql_databases"]}
    assert set(databases) == set(DATABASES)
    for name, db in databases.items():
        assert {t: set(p) for t, p in db["privileges"].items()} == {
            t: set(p) for t, p in APP_PRIVILEGES[name].items()
        }
        assert set(db["audited_tables"]) <= set(db["privileges"])
    assert {"notes", "chat_messages"} <= set(databases["notes"]["audited_tables"])


def test_retention_statements_are_the_apps() -> None:
    """With the default periods the timers run the statements the app tests against its schema."""
    jobs_src = _yaml(ROLE / "vars" / "main.yml")["__postgresql_retention_jobs"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    rendered = {job["name"]: env.from_string(job["statement"]).render(_defaults()) for job in jobs_src}
    assert rendered == {
        "chat-messages": retention.PURGE_CHAT_SQL,
        "contracts": retention.PURGE_CONTRACTS_SQL,
    }


@pytest.mark.control("RET-01")
def test_the_default_chat_retention_keeps_the_two_week_promise() -> None:
    """The default period plus the daily timer's cadence and random delay stays within 14 days."""
    days = re.fullmatch(r"(\d+) days", _defaults()["postgresql_retention_chat_period"])
    assert days, "postgresql_retention_chat_period must be whole days"
    timer = _render("tierwall-retention.timer.j2", item={"rule": "chat"})
    assert re.search(r"^OnCalendar=\*-\*-\* \d\d:\d\d:\d\d$", timer, re.M), timer  # daily
    delay = re.search(r"^RandomizedDelaySec=(\d+)min$", timer, re.M)
    assert delay, timer
    assert int(days.group(1)) * 1440 + 1440 + int(delay.group(1)) <= 14 * 1440


def _hba_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_pg_hba_is_tls_scram_from_app_addresses_only() -> None:
    """hostssl + scram-sha-256 from each app's /32, one line per role and database; local peer for
    postgres; an explicit reject for everything else at the end; no trust/password/md5."""
    lines = _hba_lines(_render("pg_hba.conf.j2"))
    assert lines[0] == ["local", "all", "postgres", "peer"]
    admitted = [ln for ln in lines if ln[-1] not in ("reject", "peer")]
    assert sorted(admitted) == sorted(
        ["hostssl", db, role, f"{app}/32", "scram-sha-256"]
        for db, role in (("notes", "notes_app"), ("identity", "identity_app"))
        for app in APPS
    )
    assert lines[-3:] == [
        ["local", "all", "all", "reject"],
        ["host", "all", "all", "0.0.0.0/0", "reject"],
        ["host", "all", "all", "::/0", "reject"],
    ]
    assert not {ln[-1] for ln in lines} & {"trust", "password", "md5", "ident"}


def _server_settings() -> dict[str, str]:
    text = _render("postgresql-tierwall.conf.j2")
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^([a-z_.]+) = ([^#\n]+)", text, re.M)}


def test_server_settings() -> None:
    """The drop-in pins the backend address, TLS and SCRAM."""
    settings = _server_settings()
    assert settings["listen_addresses"] == "'10.10.2.30'"
    assert settings["ssl"] == "on"
    assert settings["ssl_min_protocol_version"] == "'TLSv1.3'"
    assert settings["password_encryption"] == "'scram-sha-256'"
    assert settings["wal_compression"] == "lz4"  # less WAL to encrypt (bench/README.md)


@pytest.mark.control("LOG-01")
def test_connections_and_audit_logging_are_configured() -> None:
    """Who connected, from where, and pgAudit loaded, without statement parameters in the log."""
    settings = _server_settings()
    assert settings["log_connections"] == settings["log_disconnections"] == "on"
    assert settings["shared_preload_libraries"] == "'pgaudit'"
    assert settings["pgaudit.log_parameter"] == "off"
    for escape in ("%m", "%u", "%d", "%h"):
        assert escape in settings["log_line_prefix"]


def test_the_cluster_never_starts_at_boot() -> None:
    """start.conf is manual and the unit asserts the (encrypted) data directory is readable."""
    assert _render("start.conf.j2").strip().splitlines()[-1] == "manual"
    dropin = _render(
        "postgresql-unit-tierwall.conf.j2",
        __postgresql_data_directory="/srv/pgdata-volume/postgresql/15/main",
    )
    assert "AssertPathExists=/srv/pgdata-volume/postgresql/15/main/PG_VERSION" in dropin


def _role_steps(tasks: list[dict]) -> list[tuple]:
    """(role, tasks_from, when) of each include_role/import_role task, in order."""
    steps = []
    for task in tasks:
        for key, spec in task.items():
            if key.endswith(("include_role", "import_role")):
                steps.append((spec["name"], spec.get("tasks_from"), task.get("when")))
    return steps


def test_playbooks_wire_the_key_and_the_secrets() -> None:
    """The db tier's settings live once, in group_vars/db.yml: pki's key group postgres, the shared
    secrets, pipelining (no module file on the db's disk). Every playbook that converges or unlocks
    the db loads the key, and installs PostgreSQL (its group) before pki runs there."""
    playbooks = REPO / "ansible" / "playbooks"
    db_vars = _yaml(playbooks / "group_vars" / "db.yml")
    assert db_vars["pki_key_group"] == "postgres"
    assert db_vars["ansible_pipelining"] is True
    assert set(db_vars["postgresql_role_passwords"]) == {"notes_app", "identity_app"}
    assert db_vars["postgresql_encryption_key"] == "{{ tierwall_pgdata_key }}"

    converge = _yaml(playbooks / "database.yml")[0]
    assert [r["role"] for r in converge["roles"]] == ["pki", "postgresql"]
    assert converge["vars_files"] == ["vars/pgdata-key.yml"]
    # After the check of the secrets' source (tests/unit/test_vault.py), PostgreSQL's packages first.
    include = "ansible.builtin.include_role"
    roles = [task[include] for task in converge["pre_tasks"] if include in task]
    assert roles[0]["tasks_from"] == "packages.yml"
    unlock = _yaml(playbooks / "unlock-db.yml")[0]
    assert unlock["vars_files"] == ["vars/pgdata-key.yml"]

    # site.yml: in the converge play, the packages, then pki, then postgresql on the db.
    converge = next(p for p in _yaml(playbooks / "site.yml") if p.get("strategy") == "tierwall_free")
    assert converge["vars_files"] == ["vars/pgdata-key.yml"]
    steps = _role_steps(converge["tasks"])
    packages = steps.index(("postgresql", "packages.yml", "tierwall_tier == 'db'"))
    pki = steps.index(("pki", None, None))
    server = steps.index(("postgresql", None, "tierwall_tier == 'db'"))
    assert packages < pki < server


def _role_value(expression: str, release: str) -> Any:
    """A postgresql role variable as Ansible computes it on a host of Debian ``release``."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables.update(ansible_facts={"distribution_major_version": release}, postgresql_volume_mount="/srv/v")
    return Templar(loader=loader, variables=variables).template(trust_as_template(expression))


@pytest.mark.parametrize(("release", "version"), [("12", 15), ("13", 17)])
def test_version_packages_and_paths_follow_the_release(release: str, version: int) -> None:
    """Each Debian release gets its own PostgreSQL: packages, binaries, unit and data directory."""
    assert _role_value("{{ postgresql_version }}", release) == version
    packages = _role_value("{{ __postgresql_packages }}", release)
    assert {f"postgresql-{version}", f"postgresql-{version}-pgaudit"} <= set(packages)
    assert _role_value("{{ __postgresql_bindir }}", release) == f"/usr/lib/postgresql/{version}/bin"
    assert _role_value("{{ __postgresql_unit }}", release) == f"postgresql@{version}-main.service"
    assert _role_value("{{ __postgresql_data_directory }}", release) == f"/srv/v/postgresql/{version}/main"


def test_an_unknown_release_gets_no_version() -> None:
    """0, which packages.yml refuses with the fix, instead of a guessed postgresql-N."""
    assert _role_value("{{ postgresql_version }}", "14") == 0
    tasks = _yaml(ROLE / "tasks" / "packages.yml")
    assert tasks[0]["ansible.builtin.assert"]["that"] == ["postgresql_version | int > 0"]


# -- session limits (AVL-01) -----------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _ms(duration: str) -> float:
    """A postgresql.conf or nginx duration ('30s', '15min', '60s', '0') in milliseconds."""
    match = re.fullmatch(r"(\d+)\s*(us|ms|s|min|m|h|d)?", str(duration).strip())
    assert match, f"not a duration: {duration!r}"
    unit = {"m": "min"}.get(match.group(2) or "ms", match.group(2) or "ms")
    return int(match.group(1)) * _UNITS_MS[unit]


def _settings(text: str) -> dict[str, str]:
    found = re.findall(r"^([a-z_.]+) = '?([^'#\n]*?)'?\s*(?:#.*)?$", text, re.M)
    return dict(found)


@pytest.mark.control("AVL-01")
def test_every_session_is_bounded_by_the_servers_limits() -> None:
    """statement_timeout, idle_in_transaction_session_timeout and idle_session_timeout are set
    server-wide, none of them off."""
    settings = _settings(_render("postgresql-tierwall.conf.j2"))
    for name in ("statement_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout"):
        assert name in settings, name
        assert _ms(settings[name]) > 0, f"{name} is off"


@pytest.mark.control("AVL-01")
def test_the_limits_are_sized_for_the_app() -> None:
    """A statement, and a transaction idling between two, ends before nginx gives up on the request
    that waits for it; the app's own waits (a pooled connection, its health check) fit inside."""
    from tierwall_notes import db

    defaults = _defaults()
    nginx = _yaml(REPO / "ansible" / "roles" / "nginx" / "defaults" / "main.yml")
    edge_ms = _ms(nginx["nginx_proxy_timeout"])
    statement_ms = _ms(defaults["postgresql_statement_timeout"])
    assert db.HEALTH_TIMEOUT_S * 1000 < statement_ms < edge_ms
    assert _ms(defaults["postgresql_idle_in_transaction_session_timeout"]) <= edge_ms
    assert _ms(defaults["postgresql_idle_session_timeout"]) >= 5 * 60_000  # an operator's pause


@pytest.mark.control("AVL-01")
def test_the_apps_pooled_connections_are_left_to_its_pool() -> None:
    """The app's pools keep connections idle on purpose (min_size >= 1) and check each before use:
    the app's login roles carry idle_session_timeout 0, every other session the server's limit, and
    the role applies exactly these settings (any other per-role setting is reset)."""
    from tierwall_notes import db

    pool = db.make_pool("host=invalid", "probe", 1, 5)
    assert pool.min_size >= 1
    assert pool._check is not None  # a connection ended by the server is replaced, not handed out
    app_min = _yaml(REPO / "ansible" / "roles" / "app" / "defaults" / "main.yml")["app_pool_min_size"]
    assert app_min >= 1
    assert _defaults()["postgresql_app_role_settings"] == {"idle_session_timeout": "0"}
    tasks = _yaml(ROLE / "tasks" / "databases.yml")[0]["block"]
    module = "community.postgresql.postgresql_user"
    create = next(t[module] for t in tasks if module in t)
    assert create["configuration"] == "{{ __postgresql_app_role_configuration }}"
    assert create["reset_unspecified_configuration"] is True

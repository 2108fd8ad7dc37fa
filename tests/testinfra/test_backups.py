"""The db's backups, checked live: continuous, encrypted before they leave, in both German
locations, out only through the relay to the allow-listed repositories, and beyond the reach of
a compromised db.

The repository side is read in the lab's off-site store (tierwall.lab.offsite: moto's S3 behind
TLS in its own namespace), through ``ip netns exec`` on this machine against the store's own
loopback: nothing of it crosses a network. Those checks are ``lab_only``; on a stack the same
reading would go to the provider with the operator's credentials, which this suite does not hold.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import Inventory
from test_database import psql

from tierwall.paths import LAB_DIR

TIER_GROUP = "db"
# A WAL segment is switched after archive_timeout (60 s) at the latest and then pushed to each
# repository in turn; what must hold is that it is in all of them shortly after.
ARCHIVE_TIMEOUT_S = 60
PUSH_ALLOWANCE_S = 30
# The magic number of a zstd frame: a compressed but unencrypted file (or bundle) carries it.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SALTED = b"Salted__"  # OpenSSL's header of a file pgBackRest encrypted as a whole
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # a repository without a CA file of its own


def _store(action: str, **arguments: Any) -> Any:
    from tierwall.lab import offsite

    return offsite.s3(action, **arguments)


@pytest.fixture
def repositories(inventory: Inventory) -> list[dict[str, Any]]:
    repos = inventory.all_vars.get("tierwall_backup_repositories") or []
    assert repos, "the inventory names no backup repository (tierwall:backupRepositories)"
    return list(repos)


def _info(host: Any) -> list[dict[str, Any]]:
    result = host.run(
        "runuser -u postgres -- pgbackrest --config-include-path=%s --stanza=tierwall info --output=json",
        _secrets_dir(host),
    )
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def _secrets_dir(host: Any) -> str:
    """The secrets' directory the archive command names (the one PostgreSQL really uses)."""
    command = psql(host, "postgres", "SHOW archive_command")
    option = next(w for w in command.split() if w.startswith("--config-include-path="))
    return option.split("=", 1)[1]


@pytest.mark.control("BAK-01")
def test_archiving_is_on_and_has_not_failed(host: Any) -> None:
    """PostgreSQL archives every WAL segment with pgBackRest and none has failed since it started."""
    settings = psql(host, "postgres", "SELECT setting FROM pg_settings WHERE name IN "
                    "('archive_mode', 'archive_timeout') ORDER BY name")  # fmt: skip
    assert settings.splitlines() == ["on", str(ARCHIVE_TIMEOUT_S)]
    assert "pgbackrest" in psql(host, "postgres", "SHOW archive_command")
    counts = psql(host, "postgres", "SELECT archived_count, failed_count FROM pg_stat_archiver")
    archived, failed = counts.split("|")
    assert int(archived) > 0
    assert int(failed) == 0, "pg_stat_archiver counts failed archive attempts: see /var/log/pgbackrest"


@pytest.mark.control("BAK-01")
def test_every_repository_holds_a_full_backup(host: Any, repositories: list[dict[str, Any]]) -> None:
    """Each repository of the stack (both German locations) has the stanza, status ok, and at least
    one full backup of its own."""
    stanza = _info(host)[0]
    assert stanza["status"]["code"] == 0, stanza["status"]
    keys = {repo["key"]: repo["status"]["code"] for repo in stanza["repo"]}
    assert keys == {i: 0 for i in range(1, len(repositories) + 1)}
    full = {b["database"]["repo-key"] for b in stanza["backup"] if b["type"] == "full"}
    assert full == set(keys)


@pytest.mark.control("BAK-01")
@pytest.mark.lab_only
def test_a_commit_is_in_every_repository_within_the_archive_timeout(
    host: Any, repositories: list[dict[str, Any]]
) -> None:
    """RPO: a WAL record written now is in the WAL archive of every repository within archive_timeout
    and the time to push it, without anyone forcing a segment switch."""
    segment = psql(host, "postgres", "SELECT pg_walfile_name(pg_logical_emit_message(false, "
                   "'tierwall-rpo-probe', now()::text))")  # fmt: skip
    started = time.monotonic()
    deadline = started + ARCHIVE_TIMEOUT_S + PUSH_ALLOWANCE_S
    missing = [r["bucket"] for r in repositories]
    while missing and time.monotonic() < deadline:
        missing = [b for b in missing if not _has_segment(b, segment)]
        if missing:
            time.sleep(2)
    assert not missing, f"WAL segment {segment} not archived within {deadline - started:.0f} s in {missing}"


def _has_segment(bucket: str, segment: str) -> bool:
    prefix = "pgbackrest/archive/tierwall/"
    found = _store("versions", bucket=bucket, prefix=prefix)["versions"]
    return any(v["key"].rsplit("/", 1)[-1].startswith(segment + "-") for v in found)


@pytest.mark.control("BAK-01")
@pytest.mark.lab_only
def test_nothing_leaves_the_db_unencrypted(repositories: list[dict[str, Any]]) -> None:
    """Every object in every repository is ciphertext: whole files carry OpenSSL's salted header,
    and no object - the bundles of small files included - holds a zstd frame, which any compressed
    but unencrypted file or block would."""
    for repo in repositories:
        objects = _store("versions", bucket=repo["bucket"], prefix="pgbackrest/")["versions"]
        assert objects, f"{repo['bucket']} is empty"
        for obj in objects:
            data = _store("read", bucket=repo["bucket"], key=obj["key"], version=obj["version"])
            body = data["text"].encode("latin-1")
            assert ZSTD_MAGIC not in body, f"{repo['bucket']}/{obj['key']} holds a plain zstd frame"
            if "/bundle/" not in obj["key"]:
                assert body.startswith(SALTED), f"{repo['bucket']}/{obj['key']} is not encrypted"


@pytest.mark.control("BAK-01")
def test_the_repository_secrets_rest_on_the_encrypted_volume(host: Any) -> None:
    """pgBackRest's configuration on the root disk holds no secret; the passphrase and S3 keys are in
    a postgres-only file under the encrypted data directory's tree, so a copy of the root disk
    cannot open the backups."""
    config = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert config.exists
    assert not config.contains("cipher-pass")
    assert not config.contains("s3-key")
    secrets = host.file(f"{_secrets_dir(host)}/secrets.conf")
    assert (secrets.user, secrets.group, secrets.mode) == ("postgres", "postgres", 0o600)
    assert secrets.contains("cipher-pass")
    assert secrets.contains("s3-key-secret")
    data_directory = psql(host, "postgres", "SHOW data_directory")
    assert _secrets_dir(host).startswith(data_directory.rsplit("/", 2)[0] + "/"), (
        f"{_secrets_dir(host)} is not beside the data directory {data_directory} on the encrypted volume"
    )


# -- out through the relay only --------------------------------------------------------------------

# A TLS handshake through the relay naming ``name``: "verified" when the certificate checks out
# against ``cafile``; with cafile "-" no certificate is checked at all, so "handshake" means the
# relay passed the connection on to some TLS server, "refused" that it closed it.
TLS_PROBE = """
import socket, ssl, sys
host, port, name, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if cafile == "-":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
else:
    context = ssl.create_default_context(cafile=cafile)
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            print("verified" if cafile != "-" else "handshake", tls.version())
except (OSError, ssl.SSLError) as exc:
    print("refused", type(exc).__name__)
"""


def _tls_from_db(host: Any, relay: str, port: int, name: str, cafile: str) -> str:
    result = host.run("python3 -c %s %s %s %s %s", TLS_PROBE, relay, str(port), name, cafile)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.control("BAK-01")
@pytest.mark.lab_only
def test_the_relay_passes_the_repositories_and_nothing_else(
    host: Any, inventory: Inventory, repositories: list[dict[str, Any]]
) -> None:
    """From the db, the backup relay leads to each repository by its name, with the certificate
    verified against it; a TLS connection naming any other server is closed before it leaves, and
    not merely refused by a certificate check: the probe for it checks no certificate."""
    topology = inventory.all_vars["tierwall_topology"]
    relay = next(h["addresses"]["backend"] for h in topology["hosts"].values() if h["tier"] == "app")
    port = int(topology["ports"]["backup_relay"])
    for repo in repositories:
        cafile = f"/etc/pgbackrest/ca/{repo['name']}.pem" if repo["ca_file"] else SYSTEM_CAS
        assert _tls_from_db(host, relay, port, repo["endpoint"], cafile).startswith("verified"), repo
        assert _tls_from_db(host, relay, port, repo["endpoint"], "-").startswith("handshake"), repo
    assert _tls_from_db(host, relay, port, "sentinel.lab.test", "-").startswith("refused")


# -- a compromised db ------------------------------------------------------------------------------------


def _db_credentials() -> tuple[str, str]:
    secrets = LAB_DIR / "secrets"
    return (
        (secrets / "backup-s3-access-key").read_text().strip(),
        (secrets / "backup-s3-secret-key").read_text().strip(),
    )


@pytest.mark.control("BAK-02")
@pytest.mark.lab_only
def test_the_db_cannot_destroy_a_backup(repositories: list[dict[str, Any]]) -> None:
    """With the db's own credentials, the stored versions of a backup's files cannot be deleted (Object
    Lock, COMPLIANCE): a plain delete only hides the object behind a delete marker, which the owner
    removes, and the version is still there, byte for byte."""
    access, secret = _db_credentials()
    bucket = repositories[0]["bucket"]
    target = next(v for v in _store("versions", bucket=bucket, prefix="pgbackrest/backup/")["versions"]
                  if v["key"].endswith("/backup.manifest") and v["latest"])  # fmt: skip
    before = _store("read", bucket=bucket, key=target["key"], version=target["version"])
    tries = {"delete_version", "delete_version_bypassing_governance", "delete_object"}
    outcome = _store("attack", bucket=bucket, key=target["key"], version=target["version"],
                     access_key=access, secret_key=secret, tries=sorted(tries))  # fmt: skip
    try:
        assert outcome["delete_version"].startswith("refused"), outcome
        assert outcome["delete_version_bypassing_governance"].startswith("refused"), outcome
        assert _store("read", bucket=bucket, key=target["key"], version=target["version"]) == before
    finally:
        _store("undelete", bucket=bucket, key=target["key"])
    assert _store("read", bucket=bucket, key=target["key"]) == before


@pytest.mark.control("BAK-02")
@pytest.mark.lab_only
def test_what_the_db_wrote_it_cannot_rewrite(repositories: list[dict[str, Any]]) -> None:
    """An object the db's credentials wrote and then overwrote keeps its first version, readable and
    undeletable: a rewrite only adds a version."""
    access, secret = _db_credentials()
    bucket = repositories[0]["bucket"]
    key = f"tierwall-tests/rewrite-{time.time_ns()}"
    first = _store("put", bucket=bucket, key=key, body="written by the db",
                   access_key=access, secret_key=secret)  # fmt: skip
    outcome = _store("attack", bucket=bucket, key=key, version=first["version"], access_key=access,
                     secret_key=secret, tries=["overwrite_object", "delete_version"])  # fmt: skip
    assert outcome["overwrite_object"] == "done"
    assert outcome["delete_version"].startswith("refused"), outcome
    assert _store("read", bucket=bucket, key=key, version=first["version"])["text"] == "written by the db"
    assert _store("read", bucket=bucket, key=key)["text"] == "overwritten by the db"


# -- for monitoring ----------------------------------------------------------------------------------------


def _metrics(host: Any) -> dict[str, float]:
    """The backups' state file as name{labels} -> value."""
    text = host.file("/var/lib/tierwall/metrics/backup.prom").content_string
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}  # fmt: skip


@pytest.mark.control("BAK-01")
def test_the_backups_state_is_exposed_for_monitoring(host: Any, repositories: list[dict[str, Any]]) -> None:
    """Every few minutes a metrics file says, per repository, that it is sound and when its last full
    backup ended (within a week and a day: the weekly full's schedule), and that no WAL segment has
    failed to archive: what monitoring alerts on."""
    result = host.run("systemctl start tierwall-backup-status.service")
    assert result.rc == 0, result.stderr
    metrics = _metrics(host)
    now = time.time()
    assert metrics["tierwall_backup_info_ok"] == 1
    for repo in repositories:
        label = f'{{repository="{repo["name"]}"}}'
        assert metrics[f"tierwall_backup_repository_ok{label}"] == 1, repo["name"]
        assert now - metrics[f"tierwall_backup_last_full_timestamp_seconds{label}"] < 8 * 86400, repo["name"]
    assert metrics["tierwall_wal_archive_failed_total"] == 0
    assert metrics["tierwall_wal_archived_total"] > 0
    timer = host.run("systemctl is-active tierwall-backup-status.timer")
    assert timer.stdout.strip() == "active"

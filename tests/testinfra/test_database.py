"""The database tier's promises, checked live: encrypted at rest with the key off the
host, TLS-only scram access for the app servers alone, least privilege and pseudonymisation,
audit logging, retention.

Checks on the db run there as the OS user postgres (peer authentication on the unix socket,
the only way in for the superuser). Checks "as the app" run ON each app server with
:data:`PG_CLIENT`, a small PostgreSQL client written against Python's standard library (the app
hosts have python3 but no psql): TLS with the internal CA and host name verification, i.e.
libpq's ``sslmode=verify-full``, then SCRAM-SHA-256. The app roles' passwords come from the
controller's lab secrets (or TIERWALL_NOTES_DB_PASSWORD / TIERWALL_IDENTITY_DB_PASSWORD) and reach
the app host on stdin, never on a command line.

The restart check runs last: it restarts the db machine (lab only), checks the data is locked
and PostgreSQL down, runs unlock-db.yml and leaves the db unlocked and running.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Inventory, connect
from probes import tcp_outcome
from sealed_rows import platform_keyring, sealed_sql

from tierwall.paths import LAB_DIR, REPO

TIER_GROUP = "db"
# What the read-only verify account may never do (docs/operations/verification.md): any SQL as the
# superuser is root in effect, the app roles' passwords are secrets, and the retention jobs and the
# key search act on the host as root.
SUPERUSER = pytest.mark.verify_never("SQL as PostgreSQL's superuser (runuser -u postgres): root in effect")
APP_PASSWORDS = pytest.mark.verify_never("logs in as the app's database roles with their passwords (secrets)")
PORT = 5432
VOLUME_MOUNT = "/srv/pgdata-volume"
ENCRYPTED_DIR = f"{VOLUME_MOUNT}/postgresql"
CA_FILE = "/etc/ssl/tierwall/ca.crt"
ROLES = {"notes": "notes_app", "identity": "identity_app"}
# app/src/tierwall_notes/schema/__init__.py: APP_PRIVILEGES
APP_PRIVILEGES = {
    "notes": {"notes": {"SELECT", "INSERT", "DELETE"}, "chat_messages": {"SELECT", "INSERT", "DELETE"}},
    "identity": {
        "clients": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "contracts": {"SELECT", "INSERT", "UPDATE"},
    },
}
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
LIBEXEC = "/usr/local/lib/tierwall"  # the role's helper scripts
RETENTION = {"chat": "tierwall-retention-chat-messages", "contracts": "tierwall-retention-contracts"}

# A PostgreSQL client on the standard library: SSLRequest, TLS verified like verify-full,
# startup, SCRAM-SHA-256 (password on stdin), one simple query. Prints one JSON object.
PG_CLIENT = r"""
import base64, hashlib, hmac, json, os, socket, ssl, struct, sys
host, port, dbname, user, mode, cafile, name, query = sys.argv[1:9]
password = sys.stdin.read()
out = {"ok": False}
def msg(kind, body): return kind + struct.pack("!I", len(body) + 4) + body
def recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk: raise ConnectionError("server closed the connection")
        data += chunk
    return data
def read(sock):
    kind = recv(sock, 1); size = struct.unpack("!I", recv(sock, 4))[0]
    return kind, recv(sock, size - 4)
def error(body):
    fields = dict((f[:1].decode(), f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return fields.get("C", "") + " " + fields.get("M", "")
try:
    sock = socket.create_connection((host, int(port)), timeout=10)
    if mode == "verify-full":
        sock.sendall(struct.pack("!II", 8, 80877103))
        if recv(sock, 1) != b"S": raise ConnectionError("server refused TLS")
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = True; ctx.verify_mode = ssl.CERT_REQUIRED
        sock = ctx.wrap_socket(sock, server_hostname=name)
        out["tls"] = sock.version()
    params = b"user\0" + user.encode() + b"\0database\0" + dbname.encode()
    params += b"\0application_name\0tierwall-test\0\0"
    sock.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
    nonce = base64.b64encode(os.urandom(18)).decode(); bare = "n=,r=" + nonce; rows = []
    while True:
        kind, body = read(sock)
        if kind == b"E": out["error"] = error(body); break
        if kind == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:
                first = ("n,," + bare).encode()
                sock.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
            elif code == 11:
                server_first = body[4:].decode()
                attrs = dict(a.split("=", 1) for a in server_first.split(","))
                salt, rounds = base64.b64decode(attrs["s"]), int(attrs["i"])
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
                client_key = hmac.new(salted, b"Client Key", "sha256").digest()
                final = "c=biws,r=" + attrs["r"]
                auth = (bare + "," + server_first + "," + final).encode()
                sig = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
                proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
                sock.sendall(msg(b"p", (final + ",p=" + proof).encode()))
            elif code not in (0, 12):
                out["error"] = "unsupported authentication request %d" % code; break
        elif kind == b"Z":
            if "sent" in out: out["ok"] = True; out["rows"] = rows; break
            sock.sendall(msg(b"Q", query.encode() + b"\0")); out["sent"] = True
        elif kind == b"D":
            count = struct.unpack("!H", body[:2])[0]; pos = 2; row = []
            for _ in range(count):
                size = struct.unpack("!i", body[pos:pos + 4])[0]; pos += 4
                row.append(None if size < 0 else body[pos:pos + size].decode()); pos += max(size, 0)
            rows.append(row)
except (OSError, ssl.SSLError, ConnectionError, KeyError, ValueError) as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


# -- helpers -------------------------------------------------------------------------------------


def psql(host: Any, database: str, sql: str, check: bool = True) -> str:
    """Run ``sql`` on the db host as postgres (peer); unaligned, tuples only."""
    result = host.run(
        "runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -d %s -c %s", database, sql
    )
    if check:
        assert result.rc == 0, f"{sql}: {result.stderr}"
    return result.stdout.strip() if check else result.stderr.strip()


def _password(role: str) -> str:
    env = {"notes_app": "TIERWALL_NOTES_DB_PASSWORD", "identity_app": "TIERWALL_IDENTITY_DB_PASSWORD"}[role]
    if os.environ.get(env):
        return os.environ[env]
    path = LAB_DIR / "secrets" / f"{role.removesuffix('_app')}-db-password"
    if not path.is_file():
        pytest.skip(f"no password for {role}: set {env} or converge the lab (writes {path})")
    return path.read_text().strip()


def connect_as_app(
    app: Any,
    db_address: str,
    database: str,
    role: str,
    query: str = "SELECT 1",
    *,
    mode: str = "verify-full",
    password: str | None = None,
    server_name: str | None = None,
) -> dict[str, Any]:
    """Connect from app host ``app`` to the db as ``role``; the client's JSON verdict."""
    secret = _password(role) if password is None else password
    result = app.run(
        "printf '%%s' %s | python3 -c %s %s %s %s %s %s %s %s %s",
        secret, PG_CLIENT, db_address, str(PORT), database, role, mode, CA_FILE,
        server_name or db_address, query,
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def db_address(hostvars: dict[str, Any]) -> str:
    return str(hostvars["tierwall_addresses"]["backend"])


@pytest.fixture
def apps(inventory: Inventory) -> list[Any]:
    names = inventory.hosts_of("app")
    if not names:
        pytest.skip("no app host in the inventory")
    return [connect(inventory, name) for name in names]


def _is_lab(inventory: Inventory) -> bool:
    return inventory.all_vars.get("tierwall_target") == "lab"


@dataclass(frozen=True)
class Cluster:
    """The db's cluster ``main`` of PostgreSQL ``version`` and what the postgresql role names after it."""

    version: str

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-main.service"

    @property
    def data_directory(self) -> str:
        return f"{ENCRYPTED_DIR}/{self.version}/main"

    @property
    def log_file(self) -> str:
        return f"/var/log/postgresql/postgresql-{self.version}-main.log"

    @property
    def start_conf(self) -> str:
        return f"/etc/postgresql/{self.version}/main/start.conf"


_CLUSTERS: dict[str, Cluster] = {}
# The PostgreSQL major the role installs on each Debian release (by VERSION_ID).
RELEASE_VERSIONS = yaml.safe_load(
    (REPO / "ansible" / "roles" / "postgresql" / "vars" / "main.yml").read_text()
)["__postgresql_release_versions"]


@pytest.fixture
def cluster(host: Any, host_name: str) -> Cluster:
    """The cluster as the host has it (15 on Debian 12, 17 on Debian 13), read once per host, before
    a test can lock the data: pg_lsclusters reads /etc/postgresql, and it must be the one cluster
    ``main``, of the PostgreSQL the role installs on the host's release."""
    if host_name not in _CLUSTERS:
        listed = host.run("pg_lsclusters --no-header")
        assert listed.rc == 0, listed.stderr
        versions = [line.split()[0] for line in listed.stdout.splitlines() if line.split()[1:2] == ["main"]]
        assert len(versions) == 1, f"not exactly one cluster main:\n{listed.stdout}"
        release = re.search(r'^VERSION_ID="?(\d+)', host.file("/etc/os-release").content_string, re.M)
        assert release, "no VERSION_ID in /etc/os-release"
        assert versions[0] == str(RELEASE_VERSIONS.get(release.group(1))), (
            f"PostgreSQL {versions[0]} on Debian {release.group(1)}, the role installs {RELEASE_VERSIONS}"
        )
        _CLUSTERS[host_name] = Cluster(versions[0])
    return _CLUSTERS[host_name]


# -- network, TLS and authentication ----------------------------------------------------------------


@pytest.mark.control("AC-01")
@SUPERUSER
def test_listens_on_the_backend_address_only(host: Any, db_address: str) -> None:
    """PostgreSQL listens on the db's backend address (and its unix socket), nowhere else: no
    wildcard, no loopback TCP, no other interface could ever carry a connection."""
    listening = host.run("ss -Hltn 'sport = :%s'", str(PORT))
    assert listening.rc == 0, listening.stderr
    locals_ = sorted(line.split()[3] for line in listening.stdout.splitlines() if line.strip())
    assert locals_ == [f"{db_address}:{PORT}"]
    assert psql(host, "postgres", "SHOW listen_addresses") == db_address


@pytest.mark.control("ENC-02")
@SUPERUSER
def test_tls_is_on_with_a_modern_minimum(host: Any) -> None:
    """The server offers TLS with the internal CA's certificate and accepts TLS 1.2 at the oldest."""
    settings = dict(
        line.split("|")
        for line in psql(
            host,
            "postgres",
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('ssl', 'ssl_min_protocol_version', 'ssl_cert_file', 'ssl_key_file')",
        ).splitlines()
    )
    assert settings["ssl"] == "on"
    assert settings["ssl_min_protocol_version"] in ("TLSv1.2", "TLSv1.3")
    assert settings["ssl_cert_file"].startswith("/etc/ssl/tierwall/")


@pytest.mark.control("AVL-01")
@SUPERUSER
def test_sessions_are_bounded_and_the_apps_pool_is_left_alone(
    host: Any, apps: list[Any], db_address: str
) -> None:
    """The server ends a statement before the edge stops waiting for it (nginx, 60 s), a transaction
    left idle, and an idle session of any role but the app's, whose pooled connections its pool
    bounds: the app's login roles carry idle_session_timeout 0 and nothing else, and a session of
    the app role really gets it (asked over its own TLS connection from an app server)."""
    rows = psql(host, "postgres", "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', "
                "'idle_in_transaction_session_timeout', 'idle_session_timeout')")  # fmt: skip
    settings = {name: int(ms) for name, ms in (line.split("|") for line in rows.splitlines())}
    assert 0 < settings["statement_timeout"] < 60_000
    assert 0 < settings["idle_in_transaction_session_timeout"] <= 60_000
    assert settings["idle_session_timeout"] > 0
    roles = psql(host, "postgres", "SELECT rolname, coalesce(array_to_string(rolconfig, ','), '') "
                 "FROM pg_roles WHERE rolname IN ('postgres', 'notes_app', 'identity_app')")  # fmt: skip
    assert dict(line.split("|") for line in roles.splitlines()) == {
        "identity_app": "idle_session_timeout=0", "notes_app": "idle_session_timeout=0", "postgres": "",
    }  # fmt: skip
    query = "SELECT current_setting('idle_session_timeout'), current_setting('statement_timeout')"
    shown = connect_as_app(apps[0], db_address, "notes", "notes_app", query)
    assert shown["ok"], shown
    assert shown["rows"][0][0] == "0"
    assert shown["rows"][0][1] not in ("0", "")


@pytest.mark.control("ENC-02")
@APP_PASSWORDS
def test_the_app_connects_with_verify_full(host: Any, apps: list[Any], db_address: str) -> None:
    """Each app server reaches the db over TLS, verifying the certificate against the internal CA
    and the db's address (libpq's sslmode=verify-full), and logs in with SCRAM to both databases."""
    for app in apps:
        for database, role in ROLES.items():
            verdict = connect_as_app(app, db_address, database, role, "SELECT current_user, ssl FROM "
                                     "pg_stat_ssl WHERE pid = pg_backend_pid()")  # fmt: skip
            assert verdict["ok"], verdict
            assert verdict["tls"] in ("TLSv1.2", "TLSv1.3")
            assert verdict["rows"] == [[role, "t"]]


@pytest.mark.control("ENC-02")
@APP_PASSWORDS
def test_a_certificate_for_another_name_is_refused(host: Any, apps: list[Any], db_address: str) -> None:
    """verify-full means something: a client expecting another name rejects the db's certificate."""
    verdict = connect_as_app(apps[0], db_address, "notes", "notes_app", server_name="other.tierwall.internal")
    assert not verdict["ok"]
    assert "certificate verify failed" in verdict["error"].lower() or "hostname" in verdict["error"].lower()


@pytest.mark.control("ENC-03")
@APP_PASSWORDS
def test_a_connection_without_tls_is_refused(host: Any, apps: list[Any], db_address: str) -> None:
    """pg_hba.conf has hostssl lines only: a plain-text connection is rejected before any password."""
    verdict = connect_as_app(apps[0], db_address, "notes", "notes_app", mode="disable")
    assert not verdict["ok"]
    assert "28000" in verdict["error"], verdict
    assert "no encryption" in verdict["error"], verdict


@pytest.mark.control("ENC-03")
def test_a_wrong_password_is_refused(host: Any, apps: list[Any], db_address: str) -> None:
    """SCRAM refuses a wrong password (over TLS, from an allowed address)."""
    verdict = connect_as_app(apps[0], db_address, "notes", "notes_app", password="wrong-" + uuid.uuid4().hex)
    assert not verdict["ok"]
    assert "28P01" in verdict["error"], verdict


@pytest.mark.control("ENC-03")
@SUPERUSER
def test_pg_hba_admits_the_app_roles_over_tls_only(host: Any, hostvars: dict[str, Any]) -> None:
    """As the server reads pg_hba.conf: postgres by peer on the socket; each app role to its own
    database, hostssl, scram-sha-256, from app /32 addresses; everything else rejected; no trust."""
    apps = {
        h["addresses"]["backend"]
        for h in hostvars["tierwall_topology"]["hosts"].values()
        if h["tier"] == "app"
    }
    rules = [
        line.split("|")
        for line in psql(
            host,
            "postgres",
            "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
            "coalesce(address, ''), coalesce(netmask, ''), auth_method, coalesce(error, '') "
            "FROM pg_hba_file_rules ORDER BY line_number",
        ).splitlines()
    ]
    assert all(rule[6] == "" for rule in rules), rules
    assert rules[0][:3] == ["local", "all", "postgres"]
    assert rules[0][5] == "peer"
    assert rules[-1][5] == "reject"
    assert rules[-1][0] == "host"
    admitted = [r for r in rules if r[5] != "reject"][1:]
    assert admitted, "no rule admits the app"
    for kind, database, user, address, netmask, method, _ in admitted:
        assert (kind, method, netmask) == ("hostssl", "scram-sha-256", "255.255.255.255"), admitted
        assert ROLES[database] == user
        assert address in apps
    assert {(r[1], r[3]) for r in admitted} == {(d, a) for d in ROLES for a in apps}
    assert not [r for r in rules if r[5] in ("trust", "password", "md5", "ident")]


@pytest.mark.control("ENC-04")
@SUPERUSER
def test_passwords_are_stored_as_scram(host: Any) -> None:
    """password_encryption is scram-sha-256 and every stored password is a SCRAM verifier (no MD5)."""
    assert psql(host, "postgres", "SHOW password_encryption") == "scram-sha-256"
    weak = psql(
        host, "postgres", "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL "
        "AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'",
    )  # fmt: skip
    assert weak == ""
    scram = psql(host, "postgres", "SELECT count(*) FROM pg_authid WHERE rolname IN "
                 "('notes_app', 'identity_app') AND rolpassword LIKE 'SCRAM-SHA-256$%'")  # fmt: skip
    assert scram == "2"


@pytest.mark.control("NET-05")
def test_the_proxy_cannot_reach_the_db(inventory: Inventory, db_address: str, host: Any) -> None:
    """From a proxy (the internet-facing tier) no connection to the db's port can even start."""
    for name in inventory.hosts_of("proxy"):
        assert tcp_outcome(connect(inventory, name), db_address, PORT) == "blocked"


# -- encryption at rest -------------------------------------------------------------------------------


@pytest.mark.control("ENC-05")
@SUPERUSER
def test_the_data_directory_is_on_the_encrypted_volume(
    host: Any, hostvars: dict[str, Any], cluster: Cluster
) -> None:
    """The cluster's data directory lies inside the encrypted directory on the attached volume, not
    on the system disk: fscrypt (lab) reports it encrypted, or its file system sits on a LUKS mapping."""
    assert psql(host, "postgres", "SHOW data_directory") == cluster.data_directory
    source = host.run("findmnt -n -o SOURCE --target %s", cluster.data_directory).stdout.strip()
    if _is_lab_host(hostvars):
        assert source == hostvars["tierwall_volume_device"]
        status = host.run("fscrypt status %s", ENCRYPTED_DIR)
        assert status.rc == 0, status.stderr
        assert "is encrypted with fscrypt" in status.stdout
        assert re.search(r"^Unlocked: Yes", status.stdout, re.M)
    else:
        kind = host.run("lsblk -n -o TYPE %s", source).stdout.split()
        assert kind[:1] == ["crypt"], f"{cluster.data_directory} is on {source} ({kind}), not a LUKS mapping"


@pytest.mark.control("ENC-05")
def test_postgresql_is_not_started_at_boot(host: Any, cluster: Cluster) -> None:
    """The key is not on the host, so nothing may start the cluster at boot: start.conf is manual,
    postgresql.service is disabled and the unit refuses to start on locked data."""
    assert host.file(cluster.start_conf).content_string.strip().endswith("manual")
    assert not host.service("postgresql.service").is_enabled
    dropins = host.run("systemctl show -p DropInPaths --value %s", cluster.unit).stdout.split()
    assert dropins, f"{cluster.unit} has no drop-in"
    assertion = f"AssertPathExists={cluster.data_directory}/PG_VERSION"
    assert any(assertion in host.file(path).content_string for path in dropins), dropins


# Walks the writable trees of the db and its journal for 64-hex-digit tokens and prints
# "<digest> <file>" for each token whose SHA-256 is one of argv[1:]: the key itself never leaves
# the controller, neither on a command line nor in a module's arguments (the db's journal
# records those).
KEY_SEARCH = r"""
import hashlib, os, re, sys
wanted = set(sys.argv[1:])
token = re.compile(rb"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
SCRATCH = ("/run", "/tmp", "/var/tmp", "/dev/shm")
def digests(data):
    return {hashlib.sha256(m.group().lower()).hexdigest() for m in token.finditer(data)} & wanted
def raw_digests(data, path):
    # The key as 32 raw bytes: a file of exactly that size anywhere, or any 32-byte window of a
    # small file where a helper would write it (the scratch file systems).
    if len(data) == 32:
        windows = [data]
    elif path.startswith(SCRATCH) and len(data) <= 65536:
        windows = (data[i:i + 32] for i in range(len(data) - 31))
    else:
        return set()
    return {hashlib.sha256(w).hexdigest() for w in windows} & wanted
found = [f"{d} journal" for d in digests(sys.stdin.buffer.read())]
for top in ("/etc", "/home", "/root", "/tmp", "/var", "/run", "/srv", "/opt", "/usr/local", "/dev/shm"):
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        data = handle.read()
                    found += [f"{d} {path}" for d in digests(data) | raw_digests(data, path)]
            except OSError:
                pass
print(chr(10).join(found))
"""


def _text_and_raw_digests(key: bytes) -> set[str]:
    """SHA-256 of the key as lower-case hex text and as its raw bytes."""
    return {hashlib.sha256(key.hex().encode()).hexdigest(), hashlib.sha256(key).hexdigest()}


@pytest.mark.control("ENC-05")
@pytest.mark.verify_never("searches the whole disk and the journal as root for the volume's key")
def test_the_key_is_nowhere_on_the_db(host: Any) -> None:
    """The data directory's key reached the db only to unlock it: no file on the db (temporary
    module files, logs, configuration, the data volume) and no journal entry holds it. A random
    token planted in /tmp first shows the search finds what is there."""
    key = os.environ.get("TIERWALL_PGDATA_KEY") or ""
    path = LAB_DIR / "secrets" / "pgdata-key"
    if not key and path.is_file():
        key = path.read_text().strip()
    if not key:
        pytest.skip(f"no key to look for: set TIERWALL_PGDATA_KEY or converge the lab (writes {path})")
    # Searched for by digest, as hex text and as the 32 raw bytes the unlock helper writes: the
    # key itself never travels to the host for the search.
    wanted = _text_and_raw_digests(bytes.fromhex(key))
    probe = os.urandom(32)
    probe_digests = _text_and_raw_digests(probe)
    probe_text = f"/tmp/tierwall-key-search-{uuid.uuid4().hex}"
    probe_raw = f"/run/tierwall-key-search-{uuid.uuid4().hex}"
    assert host.run("umask 077 && echo token=%s > %s", probe.hex(), probe_text).rc == 0
    write_raw = "import sys; open(sys.argv[2], 'wb').write(bytes.fromhex(sys.argv[1]))"
    assert host.run("umask 077 && python3 -c %s %s %s", write_raw, probe.hex(), probe_raw).rc == 0
    searched = sorted(wanted | probe_digests)
    try:
        command = "journalctl -q -o cat | python3 -c" + " %s" * (1 + len(searched))
        result = host.run(command, KEY_SEARCH, *searched)
    finally:
        host.run("rm -f %s %s", probe_text, probe_raw)
    assert result.rc == 0, result.stderr
    hits = {tuple(line.split(" ", 1)) for line in result.stdout.splitlines() if line.strip()}
    # (The probe's hex form also shows in the journal: the command that planted it is logged.)
    assert {probe_text, probe_raw} <= {path for found, path in hits if found in probe_digests}, (
        f"the search missed a planted token: {hits}"
    )
    assert [path for found, path in hits if found in wanted] == [], "the pgdata key is on the db"
    leftovers = host.run("ls -d /run/tierwall-pgdata-key.* 2>/dev/null || true").stdout.split()
    assert leftovers == [], f"the unlock helper's key files remain: {leftovers}"


def _keyring() -> Any:
    """Rows these tests plant are real ciphertexts: every stored row must open under the keyring
    (APP-01), and these tests run beside that one."""
    return platform_keyring()


# -- least privilege, pseudonymisation -------------------------------------------------------------


@pytest.mark.control("AC-02")
@SUPERUSER
def test_only_postgres_is_privileged(host: Any) -> None:
    """No role but postgres is superuser or may create roles/databases, replicate or bypass RLS."""
    privileged = psql(
        host, "postgres", "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' AND (rolsuper OR "
        "rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls) ORDER BY 1",
    )  # fmt: skip
    assert privileged == "postgres"


@pytest.mark.control("AC-02")
@pytest.mark.parametrize("database", ["notes", "identity", "postgres"])
@SUPERUSER
def test_no_public_grants(host: Any, database: str) -> None:
    """PUBLIC (every role) holds nothing: no CONNECT/TEMP on the databases, no USAGE on the schema,
    no table privilege. Each app role gets only what is granted to it by name."""
    on_db = psql(host, "postgres", f"SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a "
                 f"WHERE d.datname = '{database}' AND a.grantee = 0")  # fmt: skip
    assert on_db == "0"
    assert (
        psql(host, "postgres", f"SELECT datacl IS NOT NULL FROM pg_database WHERE datname = '{database}'")
        == "t"
    )
    if database == "postgres":
        return
    on_schema = psql(host, database, "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a "
                     "WHERE n.nspname = 'public' AND a.grantee = 0")  # fmt: skip
    assert on_schema == "0"
    on_tables = psql(host, database, "SELECT count(*) FROM information_schema.table_privileges "
                     "WHERE grantee = 'PUBLIC' AND table_schema = 'public'")  # fmt: skip
    assert on_tables == "0"


@pytest.mark.control("AC-02")
@pytest.mark.parametrize("database", ["notes", "identity"])
@SUPERUSER
def test_app_roles_have_exactly_their_privileges(host: Any, database: str) -> None:
    """Each app role has exactly the table privileges the app needs (app/README.md) and nothing
    else: notes_app cannot UPDATE a note, identity_app cannot DELETE a contract."""
    role = ROLES[database]
    for table, wanted in APP_PRIVILEGES[database].items():
        checks = ", ".join(f"has_table_privilege('{role}', '{table}', '{p}')" for p in TABLE_PRIVILEGES)
        held = psql(host, database, f"SELECT {checks}").split("|")
        granted = {p for p, yes in zip(TABLE_PRIVILEGES, held, strict=True) if yes == "t"}
        assert granted == wanted, f"{role} on {table}"


@pytest.mark.control("PSE-01")
@SUPERUSER
def test_the_notes_role_cannot_cross_the_boundary(host: Any, apps: list[Any], db_address: str) -> None:
    """The link between a notes file and its client stays apart: notes_app cannot connect to
    identity, identity_app cannot connect to notes, and even inside the other database a SELECT
    as the other role is refused."""
    for database, role in (("identity", "notes_app"), ("notes", "identity_app")):
        refused = connect_as_app(apps[0], db_address, database, role, "SELECT 1")
        assert not refused["ok"], refused
        # 28000: pg_hba.conf turned the connection away, before any password or query; not a
        # network error, a TLS failure or a wrong password (28P01), which would prove nothing.
        assert refused.get("error", "").startswith("28000 "), refused
    for database, role, table in (("identity", "notes_app", "clients"), ("notes", "identity_app", "notes")):
        assert (
            psql(host, "postgres", f"SELECT has_database_privilege('{role}', '{database}', 'CONNECT')") == "f"
        )
        error = psql(host, database, f"SET ROLE {role}; SELECT * FROM public.{table} LIMIT 1", check=False)
        assert "permission denied" in error, error


# What the notes database may hold, table by table: the pseudonymous file id, ciphertext and what
# decrypting it needs, and when. Nothing else, so a client_id or name column fails here whatever
# it is called.
NOTES_COLUMNS = {
    "notes": {"note_id", "file_id", "ciphertext", "nonce", "wrapped_key", "key_id", "enc_version",
              "created_at"},
    "chat_messages": {"message_id", "file_id", "sender", "ciphertext", "nonce", "wrapped_key", "key_id",
                      "enc_version", "created_at"},
}  # fmt: skip


@pytest.mark.control("PSE-01")
@SUPERUSER
def test_the_notes_database_holds_no_client_identifier(host: Any) -> None:
    """The notes database knows pseudonymous file ids only: its tables hold exactly these columns."""
    rows = psql(
        host, "notes", "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )  # fmt: skip
    found: dict[str, set[str]] = {}
    for line in rows.splitlines():
        table, column = line.split("|")
        found.setdefault(table, set()).add(column)
    assert found == NOTES_COLUMNS


# -- logging ---------------------------------------------------------------------------------------------


@pytest.mark.control("LOG-01")
@SUPERUSER
def test_connections_are_logged_with_who_and_where(host: Any) -> None:
    """Every connection and disconnection is logged with time, user, database and client address."""
    settings = dict(
        line.split("|", 1)
        for line in psql(host, "postgres", "SELECT name, setting FROM pg_settings WHERE name IN "
                         "('log_connections', 'log_disconnections', 'log_line_prefix')").splitlines()
    )  # fmt: skip
    assert settings["log_connections"] == "on"
    assert settings["log_disconnections"] == "on"
    for escape in ("%m", "%u", "%d", "%h"):
        assert escape in settings["log_line_prefix"]


@pytest.mark.control("LOG-01")
@SUPERUSER
def test_pgaudit_logs_a_read_of_the_notes(
    host: Any, apps: list[Any], db_address: str, cluster: Cluster
) -> None:
    """A read of the notes table by the app is written to the server log by pgAudit (who, what,
    which table), as DSV Art. 4 asks for sensitive data processed at scale."""
    assert "pgaudit" in psql(host, "postgres", "SHOW shared_preload_libraries")
    marker = f"audit-probe-{uuid.uuid4().hex}"
    verdict = connect_as_app(
        apps[0], db_address, "notes", "notes_app", f"SELECT count(*) FROM notes /* {marker} */"
    )
    assert verdict["ok"], verdict
    for _ in range(20):
        lines = host.run("grep -F %s %s", marker, cluster.log_file).stdout.splitlines()
        audit = [ln for ln in lines if "AUDIT: OBJECT" in ln]
        if audit:
            break
        time.sleep(0.5)
    assert audit, f"no pgAudit line for {marker} in {cluster.log_file}"
    assert "READ,SELECT,TABLE,public.notes" in audit[0]
    assert "notes_app@notes" in audit[0]


# -- retention -------------------------------------------------------------------------------------------


def _run_job(host: Any, unit: str) -> str:
    since = "@" + host.run("date -u +%s").stdout.strip()
    started = host.run("systemctl start %s.service", unit)
    assert started.rc == 0, (
        started.stderr + host.run("journalctl -u %s.service -n 20 --no-pager", unit).stdout
    )
    return host.run("journalctl -u %s.service --since %s -o cat --no-pager", unit, since).stdout


@pytest.mark.control("RET-01")
def test_no_chat_message_outlives_two_weeks(host: Any) -> None:
    """The promise with the timer's cadence: what the installed job keeps, plus the longest wait
    for its next run (daily, up to its random delay late), stays within two weeks."""
    job = host.file(f"{LIBEXEC}/{RETENTION['chat']}").content_string
    kept = re.search(r"created_at < now\(\) - interval '(\d+) days'", job)
    assert kept, job
    timer = f"{RETENTION['chat']}.timer"
    calendar = host.run("systemctl show -p TimersCalendar --value %s", timer).stdout
    assert re.search(r"OnCalendar=\*-\*-\* \d\d:\d\d:\d\d ;", calendar), f"not a daily timer: {calendar}"
    delay = host.run("systemctl show -p RandomizedDelayUSec --value %s", timer).stdout.strip()
    span = host.run("systemd-analyze timespan %s", delay or "0").stdout
    late = int(re.search(r"μs: (\d+)", span).group(1)) / 1e6
    longest = int(kept.group(1)) * 86400 + 86400 + late
    assert longest <= 14 * 86400, f"a chat message may live {longest / 86400:.2f} days"


@pytest.mark.control("RET-01")
@pytest.mark.verify_never("changes the host: plants rows as the superuser and starts the retention job")
def test_the_chat_purge_deletes_after_12_days(host: Any) -> None:
    """The retention job deletes a 13-day-old chat message, keeps an 11-day-old one, and logs the
    number of rows it removed; its timer is active."""
    old, recent, file_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    keyring = _keyring()
    rows = ", ".join(
        f"('{mid}', '{file_id}', 'client', {sealed_sql(keyring, 'chat', file_id, mid, 'retention')}, "
        f"now() - interval '{age}')"
        for mid, age in ((old, "13 days"), (recent, "11 days"))
    )
    psql(host, "notes", "INSERT INTO chat_messages (message_id, file_id, sender, key_id, wrapped_key, nonce, "
         f"ciphertext, created_at) VALUES {rows}")  # fmt: skip
    try:
        journal = _run_job(host, RETENTION["chat"])
        left = psql(host, "notes", f"SELECT message_id FROM chat_messages WHERE file_id = '{file_id}'")
        assert left == str(recent)
        assert re.search(r"deleted [1-9][0-9]* row\(s\) from notes\.chat_messages", journal), journal
    finally:
        psql(host, "notes", f"DELETE FROM chat_messages WHERE file_id = '{file_id}'")
    assert host.service(f"{RETENTION['chat']}.timer").is_enabled
    assert host.service(f"{RETENTION['chat']}.timer").is_running


@pytest.mark.control("RET-02")
@pytest.mark.verify_never("changes the host: plants rows as the superuser and starts the retention job")
def test_the_contracts_purge_deletes_10_years_after_the_end(host: Any) -> None:
    """A contract that ended more than 10 years ago is deleted, one that ended less than 10 years
    ago and a running one are kept."""
    ref = f"retention-test-{uuid.uuid4().hex[:12]}"
    cases = {"expired": "10 years 1 day", "kept": "9 years 364 days", "running": None}
    ids = {case: uuid.uuid4() for case in cases}
    values = ", ".join(
        f"('{ids[case]}', '{ref}', 'Retention Test', 'test', 0, current_date - interval '12 years', "
        + (f"current_date - interval '{age}')" if age else "NULL)")
        for case, age in cases.items()
    )
    psql(host, "identity", "INSERT INTO contracts (contract_id, client_ref, client_name, package, "
         f"price_cents, started_on, ended_at) VALUES {values}")  # fmt: skip
    try:
        journal = _run_job(host, RETENTION["contracts"])
        left = set(
            psql(host, "identity", f"SELECT contract_id FROM contracts WHERE client_ref = '{ref}'").split()
        )
        assert left == {str(ids["kept"]), str(ids["running"])}
        assert re.search(r"deleted [1-9][0-9]* row\(s\) from identity\.contracts", journal), journal
    finally:
        psql(host, "identity", f"DELETE FROM contracts WHERE client_ref = '{ref}'")
    assert host.service(f"{RETENTION['contracts']}.timer").is_enabled


# -- after a restart (last: it restarts the db machine) ------------------------------------------------


def _is_lab_host(hostvars: dict[str, Any]) -> bool:
    return hostvars.get("tierwall_target") == "lab"


@pytest.mark.control("ENC-05")
@pytest.mark.lab
@pytest.mark.lab_only
@pytest.mark.disruptive  # the db machine restarts and stays locked until unlocked
def test_after_a_restart_the_data_is_locked_until_unlocked(
    host: Any, host_name: str, inventory: Inventory, cluster: Cluster
) -> None:
    """The promise "unreadable on unauthorised access" survives a reboot: a row is written, the db
    machine restarts, its data directory shows only ciphertext names and PostgreSQL is down; after
    unlock-db.yml (the operator's key) PostgreSQL runs and the row reads back intact."""
    if not _is_lab(inventory):
        pytest.skip("restarts a lab machine with `tierwall lab restart`; on a stack reboot the server "
                    "by hand and run unlock-db.yml (the same checks apply)")  # fmt: skip
    note_id, file_id = uuid.uuid4(), uuid.uuid4()
    sealed = sealed_sql(_keyring(), "note", file_id, note_id, "written before the restart")
    psql(host, "notes", "INSERT INTO notes (note_id, file_id, key_id, wrapped_key, nonce, ciphertext) "
         f"VALUES ('{note_id}', '{file_id}', {sealed})")  # fmt: skip
    stored = psql(host, "notes", f"SELECT encode(ciphertext, 'hex') FROM notes WHERE note_id = '{note_id}'")
    tierwall = Path(sys.executable).with_name("tierwall")
    done = subprocess.run([str(tierwall), "lab", "restart", host_name], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        listing = host.run("ls -A %s", ENCRYPTED_DIR)
        assert listing.rc == 0, listing.stderr
        names = listing.stdout.split()
        assert names, f"{ENCRYPTED_DIR} is empty after the restart: is the volume mounted?"
        assert cluster.version not in names, f"plaintext names after the restart: {names}"
        assert all(re.fullmatch(r"[A-Za-z0-9+,_-]{16,}", n) for n in names), names
        assert re.search(r"^Unlocked: No", host.run("fscrypt status %s", ENCRYPTED_DIR).stdout, re.M)
        assert not host.service(cluster.unit).is_running
        # What really listens, on any address: PostgreSQL binds the backend address, so a check
        # of the wildcard address alone would pass even with the server up.
        listening = host.run("ss -Hltn 'sport = :%s'", str(PORT))
        assert listening.rc == 0, listening.stderr
        assert listening.stdout.strip() == "", f"something listens on {PORT} while locked: {listening.stdout}"
    finally:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")}
        unlocked = subprocess.run(
            [str(tierwall.with_name("ansible-playbook")), "-i", str(inventory.path),
             str(REPO / "ansible" / "playbooks" / "unlock-db.yml"), "--limit", host_name],
            capture_output=True, text=True, timeout=600, env=env, cwd=REPO, check=False,
        )  # fmt: skip
        assert unlocked.returncode == 0, unlocked.stdout[-3000:] + unlocked.stderr[-2000:]
    assert host.service(cluster.unit).is_running
    try:
        row = psql(
            host, "notes", f"SELECT file_id, encode(ciphertext, 'hex') FROM notes WHERE note_id = '{note_id}'"
        )
        assert row == f"{file_id}|{stored}"
    finally:
        psql(host, "notes", f"DELETE FROM notes WHERE note_id = '{note_id}'")

"""Helpers for the tierwall-notes tests: a throwaway CA, a throwaway PostgreSQL cluster, an HTTPS client.

(A module of its own, not conftest.py: other test trees in the repository have a conftest too, and
``from conftest import`` would pick whichever was imported last.)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tierwall_notes.migrate import main as migrate_main

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, pg_dump) not found: the DB-backed tests of tierwall-notes "
    "need them. Install with: apt-get install -y postgresql   (Debian 12: PostgreSQL 15)"
)
API_TOKEN = "test-token-" + "x" * 40
NOTES_PASSWORD = "notes-app-password-for-tests"
IDENTITY_PASSWORD = "identity-app-password-for-tests"


# -- keys and certificates ------------------------------------------------------------------------
def random_key_line(key_id: str) -> str:
    return f"{key_id}: {base64.b64encode(os.urandom(32)).decode()}"


def write_secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tierwall-notes test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pki.server_key.chmod(0o600)
    return pki


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- PostgreSQL -----------------------------------------------------------------------------------
def find_pg_bindir() -> Path | None:
    """TIERWALL_PG_BINDIR if set (and only it), else the newest /usr/lib/postgresql/N/bin, else PATH."""
    override = os.environ.get("TIERWALL_PG_BINDIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    else:
        root = Path("/usr/lib/postgresql")
        if root.is_dir():
            versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            candidates += [v / "bin" for v in reversed(versions)]
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_dump")):
            return bindir
    return None


@dataclass
class PgCluster:
    bindir: Path
    base: Path
    port: int
    pki: Pki
    run_as: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.run_as, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = (self.base / "postgres.log").read_text() if (self.base / "postgres.log").exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}\n{log[-3000:]}")

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.base} port={self.port} user=postgres dbname={dbname}"

    def app_conninfo(self, dbname: str, user: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def pg_ctl(self, *args: str) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "postgres.log"), *args
        )

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "60", "start")

    def restart(self) -> None:
        self.pg_ctl("-w", "-t", "60", "-m", "fast", "restart")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")

    def dump(self, dbname: str) -> str:
        return subprocess.run(
            [str(self.bindir / "pg_dump"), "--data-only", "--inserts", self.superuser_conninfo(dbname)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def execute(self, dbname: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.superuser_conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


def init_cluster(bindir: Path, base: Path, pki: Pki) -> PgCluster:
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' user; " + INSTALL_HINT)
        run_as = ["runuser", "-u", "postgres", "--"]
        os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
    cluster = PgCluster(bindir, base, free_port(), pki, run_as)
    cluster._run(
        str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=reject", "--encoding=UTF8", "--no-sync",
    )  # fmt: skip
    # The server's TLS files inside the data directory, owned by the server's user.
    for src, name in (
        (pki.server_cert, "server.crt"),
        (pki.server_key, "server.key"),
        (pki.ca_cert, "ca.crt"),
    ):
        shutil.copy(src, cluster.data / name)
        (cluster.data / name).chmod(0o600)
        if run_as:
            os.chown(cluster.data / name, pg_user.pw_uid, pg_user.pw_gid)
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {cluster.port}\n"
            f"unix_socket_directories = '{base}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "ssl_min_protocol_version = 'TLSv1.2'\npassword_encryption = 'scram-sha-256'\n"
            "fsync = off\nfull_page_writes = off\nmax_connections = 50\n"
        )
    (cluster.data / "pg_hba.conf").write_text(
        "local   all       postgres                     trust\n"
        "hostssl notes     notes_app     127.0.0.1/32  scram-sha-256\n"
        "hostssl identity  identity_app  127.0.0.1/32  scram-sha-256\n"
        "host    all       all           0.0.0.0/0     reject\n"
    )
    return cluster


@contextlib.contextmanager
def provisioned_cluster(pki: Pki, prefix: str, extra_conf: str = "") -> Iterator[PgCluster]:
    """A scratch cluster with the app's roles, databases and schema, removed afterwards;
    ``extra_conf`` is appended to its postgresql.conf before it starts."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = init_cluster(bindir, base, pki)
    if extra_conf:
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("\n" + extra_conf)
    try:
        cluster.start()
        provision(cluster)
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError):
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def provision(cluster: PgCluster) -> None:
    """Roles and databases as the postgresql role would make them, then the app's schema + grants."""
    for role, password in (("notes_app", NOTES_PASSWORD), ("identity_app", IDENTITY_PASSWORD)):
        cluster.execute("postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    for db, role in (("notes", "notes_app"), ("identity", "identity_app")):
        cluster.execute("postgres", f"CREATE DATABASE {db}")
        cluster.execute("postgres", f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        cluster.execute("postgres", f"GRANT CONNECT ON DATABASE {db} TO {role}")
        code = migrate_main(["--database", db, "--dsn", cluster.superuser_conninfo(), "--grant-to", role])
        assert code == 0, f"migrating {db} failed"


# -- the application over HTTPS -------------------------------------------------------------------
def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@dataclass(frozen=True)
class Api:
    base_url: str
    ssl_context: ssl.SSLContext
    token: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        client: str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request; ``client`` goes in the Tierwall-Client-Ref header (never in the URL)."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        if client is not None:
            headers["Tierwall-Client-Ref"] = client
        auth = self.token if token is None else token
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.ssl_context, timeout=20) as response:
                status, resp_headers, payload = response.status, _lower(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, resp_headers, payload = exc.code, _lower(exc.headers), exc.read()
        return status, resp_headers, json.loads(payload) if payload else None

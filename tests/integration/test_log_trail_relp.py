"""The audit trail's rsyslog configurations, run: three real rsyslogd (Debian's, with RELP and
OpenSSL) on this machine's loopback with the roles' rendered files, certificates of a CA made here.

A db sender goes through an app relay to the archive (log_shipping's ship.conf for db-1 and app-1,
log_archive's archive.conf for mgmt-1): entries arrive filed under their host, with addresses
cut to their network part; while the archive is down they wait and then arrive in order; a client
without a certificate, or with one of the CA that names a host the archive does not list, files
nothing. Only the journal input is replaced (this machine's journal is not the host's): each
sender reads a socket of its own into the same rule set the journal feeds.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testinfra"))
from role_render import render
from trail_lines import first_deliveries

NAMES = ("mgmt-1", "app-1", "db-1", "intruder-1")


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: `make apt-deps` installs it")
    return path


def _openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and an ECDSA P-256 certificate per name (serverAuth and clientAuth, as the pki role's)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name in NAMES:
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
                 str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                 "-out", str(d / f"{name}.crt"))
    return d  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Daemon:
    name: str
    conf: Path
    pidfile: Path
    socket: Path | None
    process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [_binary("rsyslogd"), "-N1", "-f", str(self.conf)]
        check = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert check.returncode == 0, f"{self.name}: rsyslogd -N1: {check.stderr}"
        self.process = subprocess.Popen(
            [_binary("rsyslogd"), "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        if self.socket is not None:
            _wait(self.socket.exists, f"{self.name}'s socket")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def log(self, message: str) -> None:
        assert self.socket is not None
        subprocess.run(["logger", "-u", str(self.socket), "-t", "tierwall-test", message], check=True)


JOURNAL_INPUT = re.compile(r'module\(load="imjournal"[^)]*\)\n')


def _daemon(
    tmp: Path, pki: Path, name: str, role: str, template: str, host: str = "", **overrides: object
) -> Daemon:
    """rsyslogd for ``name`` with the role's rendered part (for inventory host ``host``, default
    ``name``), this name's certificate, and a socket instead of the journal for a sender."""
    work = tmp / name
    (work / "spool").mkdir(parents=True)
    prefix = "log_archive_" if role == "log_archive" else "log_shipping_"
    tls = {"ca_file": pki / "ca.crt", "cert_file": pki / f"{name}.crt", "key_file": pki / f"{name}.key"}
    part = render(role, template, host or name, **{prefix + k: str(v) for k, v in tls.items()}, **overrides)
    sock = None
    source = ""
    if role == "log_shipping":
        # This machine's journal is not the host's: the module that reads it is left out, and a
        # socket feeds the same rule set the journal does.
        assert len(JOURNAL_INPUT.findall(part)) == 1, part
        part = JOURNAL_INPUT.sub("", part)
        sock = work / "log.sock"
        source = f'module(load="imuxsock" SysSock.Use="off")\ninput(type="imuxsock" Socket="{sock}")\n'
    (work / "part.conf").write_text(part)
    (work / "rsyslog.conf").write_text(
        f'global(workDirectory="{work / "spool"}" maxMessageSize="64k" localHostname="{name}")\n'
        f'{source}include(file="{work / "part.conf"}")\n'
    )
    return Daemon(name, work / "rsyslog.conf", work / "rsyslogd.pid", sock)


@dataclass
class Trail:
    archive_dir: Path
    port: int
    archive: Daemon
    relay: Daemon
    db: Daemon
    audit_log: Path

    def lines(self, host: str, marker: str) -> list[str]:
        return [line for path in sorted((self.archive_dir / host).glob("*.log"))
                for line in path.read_text().splitlines() if marker in line]  # fmt: skip

    def wait_for(self, host: str, marker: str, count: int = 1) -> list[str]:
        _wait(lambda: len(self.lines(host, marker)) >= count, f"{count} x {marker} under {host}")
        return self.lines(host, marker)


@pytest.fixture
def trail(tmp_path: Path, pki: Path) -> Iterator[Trail]:
    port, archive_dir = _free_port(), tmp_path / "archive"
    archive = _daemon(tmp_path, pki, "mgmt-1", "log_archive", "archive.conf.j2", log_archive_port=port,
                      log_archive_listen_address="127.0.0.1", log_archive_dir=str(archive_dir))
    relay = _daemon(tmp_path, pki, "app-1", "log_shipping", "ship.conf.j2", log_shipping_port=port,
                    log_shipping_targets={"mgmt-1": "127.0.0.1"},
                    log_shipping_relay_listen_address="127.0.0.2", log_shipping_files=[])
    audit_log = tmp_path / "audit.log"
    audit_log.touch()
    db = _daemon(tmp_path, pki, "db-1", "log_shipping", "ship.conf.j2", log_shipping_port=port,
                 log_shipping_targets={"app-1": "127.0.0.2"},
                 log_shipping_files=[{"path": str(audit_log), "tag": "auditd"}])  # fmt: skip
    daemons = (archive, relay, db)
    try:
        for daemon in daemons:
            daemon.start()
        yield Trail(archive_dir, port, archive, relay, db, audit_log)
    finally:
        for daemon in daemons:
            daemon.stop()


def _marker() -> str:
    return f"tierwall-{uuid.uuid4().hex[:16]}"


@pytest.mark.control("AUD-02")
def test_the_dbs_entry_reaches_the_archive_through_the_relay_with_its_address_cut(trail: Trail) -> None:
    marker = _marker()
    trail.db.log(f"{marker} connection from 10.10.2.20 port 51234")
    trail.relay.log(f"{marker} accepted from 10.10.1.10")
    (db_line,) = trail.wait_for("db-1", marker)
    (app_line,) = trail.wait_for("app-1", marker)
    assert f"db-1 tierwall-test[-]: {marker} connection from 10.10.2.0 port 51234" in db_line, db_line
    assert f"app-1 tierwall-test[-]: {marker} accepted from 10.10.1.0" in app_line, app_line
    assert "10.10.2.20" not in db_line


@pytest.mark.control("AUD-02")
def test_auditds_records_leave_with_the_journal_their_address_cut(trail: Trail) -> None:
    """A record auditd appends to its file (a login, with the client's address) arrives under the
    db's name, tagged auditd, the address cut to its network part."""
    marker = _marker()
    record = (f"type=USER_LOGIN msg=audit(1764680000.123:456): pid=812 uid=0 auid=1000 ses=3 "
              f"msg='op=login acct=\"ops\" exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.7 "
              f"terminal=ssh res=success {marker}'")
    with trail.audit_log.open("a") as log:
        log.write(record + "\n")
    (line,) = trail.wait_for("db-1", marker)
    assert " db-1 auditd[-]: type=USER_LOGIN " in line, line
    assert "addr=198.51.100.0 " in line, line


@pytest.mark.control("AUD-02")
def test_entries_wait_while_the_archive_is_down_and_arrive_in_order(trail: Trail) -> None:
    marker, count = _marker(), 20
    trail.archive.stop()
    for number in range(count):
        trail.db.log(f"{marker}-{number:03d}")
        trail.relay.log(f"{marker}-{number:03d}")
    time.sleep(2)
    trail.archive.start()
    for host in ("db-1", "app-1"):
        lines = trail.wait_for(host, marker, count)
        assert first_deliveries(lines) == [f"{n:03d}" for n in range(count)], lines


@pytest.mark.control("AUD-02")
def test_a_client_without_a_certificate_is_refused(trail: Trail, pki: Path) -> None:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{trail.port}", "-CAfile", str(pki / "ca.crt"),
         "-verify_return_error", "-brief", "-ign_eof"],
        input="x\n", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert re.search(r"alert (certificate required|handshake failure)", done.stdout + done.stderr), done


@pytest.mark.control("AUD-02")
def test_a_certificate_of_the_ca_for_a_host_not_listed_files_nothing(
    trail: Trail, tmp_path: Path, pki: Path
) -> None:
    intruder = _daemon(tmp_path, pki, "intruder-1", "log_shipping", "ship.conf.j2", host="proxy-1",
                       log_shipping_port=trail.port,
                       log_shipping_targets={"mgmt-1": "127.0.0.1"})  # fmt: skip
    intruder.start()
    try:
        marker = _marker()
        intruder.log(f"{marker} forged")
        trail.db.log(f"{marker} genuine")
        trail.wait_for("db-1", marker)
        time.sleep(3)
        forged = [line for path in trail.archive_dir.glob("*/*.log") for line in path.read_text().splitlines()
                  if f"{marker} forged" in line]  # fmt: skip
        assert forged == []
    finally:
        intruder.stop()

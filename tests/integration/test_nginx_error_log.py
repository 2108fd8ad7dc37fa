"""The proxy's error log, end to end on this machine: a real nginx sends its error log the way the
rendered nginx.conf tells it to, a real rsyslogd runs the role's rendered rsyslog.conf, and the
file it writes must hold the client's network part only.

Both daemons run in a temporary directory on loopback; nothing else on the machine is touched.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tierwall.paths import REPO

ROLE = REPO / "ansible" / "roles" / "nginx"
NGINX_CONF = REPO / "templates" / "nginx" / "nginx.conf.j2"


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: `make apt-deps` installs it")
    return path


def _role_templar(**overrides: str) -> Templar:
    loader = DataLoader()
    variables = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables.update({"ansible_managed": "Ansible managed", "role_path": str(ROLE), **overrides})
    return Templar(loader=loader, variables=variables)


def _render(templar: Templar, template: Path) -> str:
    return templar.template(trust_as_template(template.read_text()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[tuple[Path, Path, Templar]]:
    """rsyslogd with the role's configuration, its socket and log file moved into tmp_path."""
    logs, spool = tmp_path / "logs", tmp_path / "spool"
    logs.mkdir()
    spool.mkdir()
    sock = tmp_path / "error.sock"
    templar = _role_templar(
        nginx_log_dir=str(logs), __nginx_error_log_socket=str(sock), __nginx_rsyslog_work_dir=str(spool)
    )
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(_render(templar, ROLE / "templates" / "rsyslog.conf.j2"))
    check = subprocess.run([_binary("rsyslogd"), "-N1", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    daemon = subprocess.Popen(
        [_binary("rsyslogd"), "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(sock.exists, "rsyslogd's socket")
        yield sock, logs / "error.log", templar
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def _error_log_directives(templar: Templar, sock: Path, level: str) -> str:
    """The rendered nginx.conf's own error_log lines, the syslog one at the test's level."""
    rendered = _render(templar, NGINX_CONF)
    lines = re.findall(r"^error_log\s+(\S+)\s+(\S+);", rendered, re.M)
    targets = [target for target, _ in lines]
    assert targets == [f"syslog:server=unix:{sock},tag=nginx,nohostname", "stderr"], lines
    return "\n".join(f"error_log {target} {level if target != 'stderr' else lvl};" for target, lvl in lines)


def _start_nginx(tmp_path: Path, directives: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """nginx as systemd starts it: what it writes to stderr (the journal on a host) goes to a file."""
    prefix = tmp_path / "nginx"
    (prefix / "html").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(
        # Workers as root: they must reach the socket and the root inside pytest's private tmp.
        f"daemon off;\nuser root;\nworker_processes 1;\npid {prefix}/nginx.pid;\n{directives}\n"
        "events { worker_connections 16; }\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {prefix}/html; }} }}\n"
    )
    stderr = tmp_path / "nginx-stderr"
    with stderr.open("wb") as sink:
        argv = [_binary("nginx"), "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        daemon = subprocess.Popen(argv, stderr=sink)
    return daemon, stderr


def _get(url: str) -> int:
    """The status of a GET on loopback (no proxy from the environment), 0 while nobody listens."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0


@pytest.mark.control("RET-03")
def test_nginx_error_lines_reach_the_disk_with_the_network_part_only(
    rsyslog: tuple[Path, Path, Templar], tmp_path: Path
) -> None:
    """A 404 for a missing file is an error-level line with "client: 127.0.0.1": through the role's
    pipeline it lands as 127.0.0.0, and the full address is nowhere in the file."""
    sock, error_log, templar = rsyslog
    port = _free_port()
    nginx, stderr = _start_nginx(tmp_path, _error_log_directives(templar, sock, "error"), port)
    try:
        marker = f"tierwall-missing-{time.monotonic_ns()}"
        _wait_for(lambda: _get(f"http://127.0.0.1:{port}/{marker}?secret=q") == 404, "nginx's 404")
        _wait_for(lambda: error_log.exists() and marker in error_log.read_text(), "the error line")
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    line = next(line for line in error_log.read_text().splitlines() if marker in line)
    assert "client: 127.0.0.0," in line, line
    assert "127.0.0.1" not in error_log.read_text(), error_log.read_text()
    # nginx's built-in log (stderr, the journal under systemd) takes none of it.
    assert marker not in stderr.read_text(), stderr.read_text()


@pytest.mark.control("RET-03")
@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd:0:0:0:0:0"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
    ],
)
def test_every_address_form_is_cut_to_its_network_part(
    rsyslog: tuple[Path, Path, Templar], address: str, kept: str
) -> None:
    """What nginx writes after "client:" (IPv4, IPv6, IPv4-mapped IPv6), sent as nginx sends it."""
    sock, error_log, _ = rsyslog
    marker = f"tierwall-form-{time.monotonic_ns()}"
    line = f"<10>Dec  1 04:40:00 nginx: [crit] 12#12: *3 {marker}, client: {address}, server: 0.0.0.0:443"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(line.encode(), str(sock))
    _wait_for(lambda: error_log.exists() and marker in error_log.read_text(), "the line")
    written = error_log.read_text()
    assert kept in written, written
    assert address not in written, written

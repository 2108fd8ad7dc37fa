"""The public edge, checked live as the internet sees it.

Run against the lab after `tierwall lab up` and a converge (or against a stack, with
TIERWALL_INVENTORY pointing at its inventory). "The internet" is the lab's sentinel host: every
client command runs inside its network namespace (`ip netns exec`, hence root), so requests
arrive at the proxy's public address from a documentation-range address, as from any browser.
Against a real stack the client is the machine running the tests.
Checks on the proxy itself (logs, live config) go through testinfra's Ansible backend.

Every check is bounded (timeouts, a fixed number of requests); nothing here reaches an address
outside the lab's own hosts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tierwall.paths import LAB_DIR

# The shared conftest parametrizes every test taking ``host_name`` over this inventory group.
TIER_GROUP = "proxy"
LAB_CA = Path(os.environ.get("TIERWALL_LAB_CA", LAB_DIR / "pki" / "ca.crt"))
UNKNOWN_NAME = "unknown.tierwall-edge.invalid"
SECURITY_HEADERS = (
    "strict-transport-security",
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
)
# The internal CA's CRL, where every certificate of the lab names it as CRL distribution point
# (pki role: pki_crl_url; nginx role: nginx_crl_uri).
CRL_NAME = "tierwall-ca.crl"


pytestmark = [pytest.mark.lab]


@dataclass(frozen=True)
class Edge:
    """One proxy as a client on the internet sees it."""

    name: str
    host: Any  # testinfra host (the shared conftest's ansible backend connection)
    public_address: str
    domain: str
    lab: bool
    namespace: str | None  # the sentinel's network namespace (lab) or None (this machine)
    sentinel: str | None

    def client(
        self, argv: list[str], timeout: float = 30, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        return subprocess.run(
            [*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ca_args(self, flag: str) -> list[str]:
        """In the lab, trust exactly the lab's CA; on a stack, the system's trust store."""
        return [flag, str(LAB_CA)] if self.lab else []

    def curl(self, url: str, *extra: str) -> tuple[int, int | None, dict[str, list[str]]]:
        """(curl exit code, HTTP status, headers) of one request; the name resolves to the proxy."""
        port = "443" if url.startswith("https:") else "80"
        argv = [
            "curl", "--silent", "--show-error", "--max-time", "10", "--output", "/dev/null",
            "--dump-header", "-", "--resolve", f"{self.domain}:{port}:{self.public_address}",
            *self.ca_args("--cacert"), *extra, url,
        ]  # fmt: skip
        done = self.client(argv, timeout=20)
        return done.returncode, *_parse_headers(done.stdout)

    def s_client(self, *options: str, servername: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [
            "openssl", "s_client", "-connect", f"{self.public_address}:443",
            "-servername", servername or self.domain, *options,
        ]  # fmt: skip
        return self.client(argv, timeout=20, stdin="")

    def live_config(self) -> str:
        done = self.host.run("/usr/sbin/nginx -T")  # the verify account: through sudo
        assert done.rc == 0, done.stderr
        return done.stdout


def _parse_headers(text: str) -> tuple[int | None, dict[str, list[str]]]:
    status, headers = None, {}
    for line in text.splitlines():
        match = re.match(r"HTTP/[\d.]+ (\d{3})", line)
        if match:  # a new response (curl prints each one it reads)
            status, headers = int(match.group(1)), {}
        elif ":" in line:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers


@pytest.fixture
def edge(inventory: Any, host_name: str, host: Any, hostvars: dict[str, Any]) -> Edge:
    lab = hostvars.get("tierwall_target") == "lab"
    if lab and not LAB_CA.exists():
        pytest.fail(f"the lab CA {LAB_CA} is missing: converge the lab (the pki role creates it)")
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed on this machine: apt-get install {tool}")
    return Edge(
        name=host_name,
        host=host,
        public_address=hostvars["tierwall_public_address"],
        domain=hostvars["tierwall_domain"],
        lab=lab,
        namespace=hostvars.get("tierwall_lab_namespaces", {}).get("sentinel") if lab else None,
        sentinel=hostvars.get("tierwall_lab_sentinel") if lab else None,
    )


# -- TLS-02: HTTPS only, and browsers remember it --------------------------------------------------


@pytest.mark.control("TLS-02")
def test_http_redirects_to_https_with_path_and_query(edge: Edge) -> None:
    """Port 80 serves nothing but a permanent redirect to the same URL over HTTPS."""
    code, status, headers = edge.curl(f"http://{edge.domain}/some/page?x=1")
    assert code == 0
    assert status == 301
    assert headers.get("location") == [f"https://{edge.domain}/some/page?x=1"]


@pytest.mark.control("TLS-02")
def test_hsts_is_sent_for_at_least_a_year(edge: Edge) -> None:
    """HSTS makes browsers refuse plain HTTP for the site afterwards (no SSL stripping)."""
    code, _, headers = edge.curl(f"https://{edge.domain}/")
    assert code == 0
    (hsts,) = headers.get("strict-transport-security", [None])
    assert hsts, "no Strict-Transport-Security header"
    max_age = int(re.search(r"max-age=(\d+)", hsts).group(1))
    assert max_age >= 31536000, f"HSTS max-age {max_age} is below one year"


@pytest.mark.control("TLS-02")
def test_unknown_host_on_http_gets_no_answer(edge: Edge) -> None:
    """Port 80's default server closes the connection (444) for any name but the site's."""
    code, status, _ = edge.curl(f"http://{edge.domain}/", "--header", f"Host: {UNKNOWN_NAME}")
    assert status is None
    # 444 closes the connection without a response; with reset_timedout_connection it is a reset.
    assert code in (52, 56), f"curl exit {code}: expected 52 (empty reply) or 56 (connection reset)"


@pytest.mark.control("TLS-02")
def test_unknown_name_on_https_gets_no_handshake(edge: Edge) -> None:
    """An unknown SNI name is refused in the handshake: no certificate, no site."""
    done = edge.s_client("-tls1_3", servername=UNKNOWN_NAME)
    assert done.returncode != 0
    assert "BEGIN CERTIFICATE" not in done.stdout
    assert "unrecognized name" in (done.stdout + done.stderr).lower()


@pytest.mark.control("TLS-02")
def test_unknown_host_header_inside_a_valid_handshake_gets_no_site(edge: Edge) -> None:
    code, status, _ = edge.curl(f"https://{edge.domain}/", "--http1.1", "--header", f"Host: {UNKNOWN_NAME}")
    assert status is None
    # 444 closes the connection without a response; with reset_timedout_connection it is a reset.
    assert code in (52, 56), f"curl exit {code}: expected 52 (empty reply) or 56 (connection reset)"


# -- TLS-01: protocols and ciphers ----------------------------------------------------------------


@pytest.mark.control("TLS-01")
def test_tls_1_1_is_refused(edge: Edge) -> None:
    """The client offers TLS 1.1 (security level 0 lets OpenSSL 3 do so); the server refuses."""
    done = edge.s_client("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    output = done.stdout + done.stderr
    assert "no protocols available" not in output, (
        "the client did not offer TLS 1.1: the check proves nothing"
    )
    assert done.returncode != 0
    assert not re.search(r"New, TLSv1(\.1)?,", output), output


@pytest.mark.control("TLS-01")
@pytest.mark.parametrize("version", ["1_2", "1_3"])
def test_modern_tls_succeeds_and_the_chain_verifies(edge: Edge, version: str) -> None:
    """TLS 1.2 and 1.3 handshakes succeed, with an AEAD suite, and the certificate verifies
    for the site's name (against the lab CA in the lab, the system's trust store on a stack)."""
    done = edge.s_client(
        f"-tls{version}", *edge.ca_args("-CAfile"), "-verify_return_error", "-verify_hostname", edge.domain
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"New, (TLSv1\.[23]), Cipher is (\S+)", done.stdout)
    assert match, done.stdout
    assert match.group(1) == "TLSv1." + version[-1]
    assert re.search(r"GCM|CHACHA20", match.group(2)), f"{match.group(2)} is not AEAD"
    assert "Verify return code: 0 (ok)" in done.stdout


@pytest.mark.control("TLS-01")
def test_cbc_suites_are_refused_on_tls_1_2(edge: Edge) -> None:
    cbc = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-SHA"
    done = edge.s_client("-tls1_2", "-cipher", cbc)
    assert done.returncode != 0
    assert not re.search(r"New, TLSv1\.2, Cipher is", done.stdout)


@pytest.mark.control("TLS-01")
def test_testssl_reports_nothing_high_or_critical(edge: Edge, tmp_path: Path) -> None:
    """testssl (Debian package testssl.sh) as a second opinion on the whole TLS setup. Nothing is
    accepted, in the lab either: the internal CA's certificates name a CRL distribution point
    (testssl rates a certificate without CRL or OCSP URI HIGH, cert_revocation)."""
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")  # Debian names it testssl
    if testssl is None:
        pytest.fail("testssl is not installed on this machine: apt-get install testssl.sh")
    report = tmp_path / "testssl.json"
    # Every check group whose findings can be rated above INFO: protocols, cipher categories,
    # forward secrecy, server preferences, certificate and defaults, headers, vulnerabilities.
    # Left out: the client simulations and the per-protocol cipher list, which rate nothing
    # (INFO only, checked on this lab: a full run's other 41 findings) and took half the time.
    checks = ["--protocols", "--std", "--fs", "--server-preference", "--server-defaults", "--headers",
              "--vulnerable"]  # fmt: skip
    argv = [
        testssl, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", *checks,
        "--ip", edge.public_address, "--jsonfile", str(report), *edge.ca_args("--add-ca"),
        f"https://{edge.domain}/",
    ]  # fmt: skip
    done = edge.client(argv, timeout=900)
    assert report.exists(), f"testssl.sh wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}"
    findings = json.loads(report.read_text())
    problems = [f for f in findings if f.get("severity") == "FATAL" or f.get("id") == "scanProblem"]
    assert not problems, f"testssl.sh could not scan: {problems}"
    high = [f"{f['id']}: {f.get('finding')}" for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
    assert not high, "testssl.sh findings rated HIGH or CRITICAL:\n" + "\n".join(high)


@pytest.mark.control("TLS-02")
@pytest.mark.lab_only
def test_the_crl_is_served_over_http_and_verifies_against_the_lab_ca(edge: Edge, tmp_path: Path) -> None:
    """The site certificate's CRL distribution point answers, from the internet, over plain HTTP,
    with a DER CRL signed by the lab CA that lists nothing the site uses: revocation of an internal
    certificate reaches every client that checks. (A stack's site certificate comes from ACME.)"""
    done = edge.s_client("-showcerts")
    match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", done.stdout, re.S)
    assert match, done.stdout + done.stderr
    site_cert = tmp_path / "site.crt"
    site_cert.write_text(match.group(0) + "\n")
    text = subprocess.run(
        ["openssl", "x509", "-in", str(site_cert), "-noout", "-ext", "crlDistributionPoints"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    url = f"http://{edge.domain}/{CRL_NAME}"
    assert f"URI:{url}" in text, f"the site certificate names no CRL at {url}:\n{text}"

    crl = tmp_path / CRL_NAME  # written inside the sentinel's namespace, on this file system
    fetched = edge.client(
        ["curl", "--silent", "--show-error", "--max-time", "10", "--output", str(crl),
         "--write-out", "%{http_code} %{content_type}",
         "--resolve", f"{edge.domain}:80:{edge.public_address}", url],
        timeout=20,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.split() == ["200", "application/pkix-crl"], f"{url}: {fetched.stdout}"
    verified = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(LAB_CA), "-noout", "-text"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    # OpenSSL 3.0 exits 0 even on a bad signature: the verdict is the "verify OK" line.
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stderr, verified.stderr
    serial = subprocess.run(
        ["openssl", "x509", "-in", str(site_cert), "-noout", "-serial"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip().split("=", 1)[1]  # fmt: skip
    listed = {int(s, 16) for s in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", verified.stdout)}
    assert int(serial, 16) not in listed, "the site's own certificate is revoked"
    next_update = re.search(r"Next Update: (.+)", verified.stdout).group(1).strip()
    assert datetime.strptime(next_update, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC) > datetime.now(UTC), (
        f"the CRL expired on {next_update}: converge (the pki role renews it)"
    )


@pytest.mark.control("TLS-02")
def test_only_the_crl_is_served_over_http(edge: Edge) -> None:
    """The CRL location is an exact match: a neighbouring path, and the CRL path with a suffix,
    still get the redirect."""
    for path in (f"/{CRL_NAME}x", f"/{CRL_NAME}/", f"/x/{CRL_NAME}"):
        code, status, headers = edge.curl(f"http://{edge.domain}{path}")
        assert code == 0
        assert status == 301, f"{path}: {status}"
        assert headers.get("location") == [f"https://{edge.domain}{path}"]


# -- HDR-01: headers on every response --------------------------------------------------------------


@pytest.mark.control("HDR-01")
@pytest.mark.parametrize("path", ["/", "/tierwall-edge-check-does-not-exist"])
@pytest.mark.parametrize("header", SECURITY_HEADERS)
def test_security_header_is_present_exactly_once(edge: Edge, path: str, header: str) -> None:
    """Each header arrives on every response, pages and errors alike, and only once (the proxy
    hides the app's copy, so a weaker duplicate cannot slip in)."""
    code, status, headers = edge.curl(f"https://{edge.domain}{path}")
    assert code == 0
    assert status is not None
    assert len(headers.get(header, [])) == 1, f"{header} on {path} ({status}): {headers.get(header)}"


@pytest.mark.control("HDR-01")
def test_header_values(edge: Edge) -> None:
    _, _, headers = edge.curl(f"https://{edge.domain}/")
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["DENY"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"][0]
    assert headers["referrer-policy"] in (["no-referrer"], ["same-origin"], ["strict-origin"])


@pytest.mark.control("HDR-01")
def test_no_software_versions_are_disclosed(edge: Edge) -> None:
    """server_tokens off, and the app's X-Powered-By never leaves the proxy."""
    _, _, headers = edge.curl(f"https://{edge.domain}/")
    assert headers.get("server", ["nginx"]) == ["nginx"]
    assert "x-powered-by" not in headers


# -- TLS-03: proxy -> app over verified TLS ---------------------------------------------------------


@pytest.mark.control("TLS-03")
def test_proxy_verifies_the_app_servers_certificates(edge: Edge) -> None:
    config = edge.live_config()
    assert re.search(r"^\s*proxy_ssl_verify\s+on;", config, re.M)
    assert re.search(r"^\s*proxy_ssl_trusted_certificate\s+\S+;", config, re.M)
    assert re.search(r"^\s*proxy_ssl_crl\s+\S+;", config, re.M), "revoked app certificates would be accepted"
    assert re.search(r"^\s*proxy_pass\s+https://", config, re.M)


@pytest.mark.control("TLS-03")
def test_every_app_server_certificate_verifies_from_the_proxy(edge: Edge, inventory: Any) -> None:
    """From the proxy, each app server's TLS port presents a certificate that chains to the
    internal CA and carries the name nginx checks: what proxy_ssl_verify relies on."""
    config = edge.live_config()
    name = re.search(r"^\s*proxy_ssl_name\s+(\S+);", config, re.M).group(1)
    ca = re.search(r"^\s*proxy_ssl_trusted_certificate\s+(\S+);", config, re.M).group(1)
    port = inventory.all_vars["tierwall_topology"]["ports"]["app"]
    apps = inventory.hosts_of("app")
    assert apps, "the inventory has no app server"
    failures = []
    for app in apps:
        address = inventory.hostvars(app)["tierwall_addresses"]["frontend"]
        done = edge.host.run(
            "openssl s_client -connect %s:%s -servername %s -verify_hostname %s -CAfile %s"
            " -verify_return_error </dev/null",
            address, str(port), name, name, ca,
        )  # fmt: skip
        if done.rc != 0 or "Verify return code: 0 (ok)" not in done.stdout:
            failures.append(f"{app} ({address}:{port}): {(done.stdout + done.stderr)[-800:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.control("TLS-03")
def test_the_site_reaches_an_app_server(edge: Edge) -> None:
    """End to end: had the upstream handshake or its verification failed, nginx would answer 502."""
    code, status, _ = edge.curl(f"https://{edge.domain}/")
    assert code == 0
    assert status not in (502, 503, 504), f"the proxy could not reach a verified app server ({status})"


# -- RET-03: anonymised, short-lived logs -----------------------------------------------------------


def _logged_line(edge: Edge, log: str, marker: str) -> str:
    """The line of /var/log/nginx/<log> holding ``marker``, "" if none within 5 s (the writer,
    nginx or rsyslog, appends it just after the request)."""
    deadline = time.monotonic() + 5
    while True:
        done = edge.host.run("grep -F -- %s /var/log/nginx/%s", marker, log)
        if done.rc == 0 or time.monotonic() > deadline:
            return done.stdout if done.rc == 0 else ""
        time.sleep(0.25)


@pytest.mark.control("RET-03")
@pytest.mark.lab_only
def test_access_log_holds_the_sentinel_only_anonymised(edge: Edge) -> None:
    """The sentinel's request is logged, with its address truncated to /24, and its full address
    appears in no access log, rotated ones included."""
    marker = f"/tierwall-edge-log-check-{uuid.uuid4().hex}"
    edge.curl(f"https://{edge.domain}{marker}")
    anonymised = edge.sentinel.rsplit(".", 1)[0] + ".0"
    line = _logged_line(edge, "access.log", marker)
    assert line, "the request was not logged"
    assert line.startswith(anonymised + " "), line
    full = edge.host.run("zgrep -F -w -- %s /var/log/nginx/access.log*", edge.sentinel)
    assert full.rc == 1, f"the sentinel's full address is in the access log:\n{full.stdout[:2000]}"


@pytest.mark.control("RET-03")
@pytest.mark.lab_only
def test_error_log_holds_no_full_client_address(edge: Edge) -> None:
    """Whatever this suite provokes (refused TLS versions, which some nginx and OpenSSL releases
    log at crit with the client's address, 429s, unknown names), the sentinel's full address is in
    no error log, rotated ones included."""
    full = edge.host.run("zgrep -F -w -- %s /var/log/nginx/error.log*", edge.sentinel)
    assert full.rc == 1, f"the sentinel's full address is in the error log:\n{full.stdout[:2000]}"
    # nginx's own stderr is the journal: its built-in error log must not be writing there.
    journal = edge.host.run("journalctl --quiet --no-pager -u nginx.service")
    assert journal.rc == 0, journal.stderr
    assert edge.sentinel not in journal.stdout, f"the sentinel is in nginx's journal:\n{journal.stdout[:999]}"


def _error_log_socket(edge: Edge) -> str:
    """The one socket the live nginx sends its error log to (it must write no log file itself)."""
    logs = re.findall(r"^\s*error_log\s+(\S+)\s*(\S*?);", edge.live_config(), re.M)
    targets = [target for target, _ in logs]
    assert targets, "nginx -T shows no error_log"
    # Besides the socket only stderr (the journal), at emerg: start-up failures, no client data.
    allowed = ("syslog:server=unix:", "stderr emerg")
    itself = [f"{t} {level}" for t, level in logs if not f"{t} {level}".startswith(allowed)]
    assert not itself, f"nginx writes an error log itself: {itself}"
    sockets = {t.removeprefix("syslog:server=unix:").split(",")[0] for t in targets if t != "stderr"}
    assert len(sockets) == 1, sockets
    return sockets.pop()


def _log_to(edge: Edge, user: str, sock: str, text: str) -> Any:
    command = "runuser -u %s -- logger --socket-errors=on -d -u %s -t nginx -- %s"
    return edge.host.run(command, user, sock, text)


@pytest.mark.control("RET-03")
@pytest.mark.lab_only
@pytest.mark.verify_never("writes a line into the proxy's error log as nginx's user (runuser needs root)")
def test_error_lines_reach_the_disk_anonymised_and_only_from_nginx(edge: Edge) -> None:
    """A line sent as nginx's workers send theirs, naming the sentinel's full address, is written
    with the address's network part only; a user other than nginx's cannot write to the log."""
    sock = _error_log_socket(edge)
    workers = edge.host.run("ps -o user= -C nginx").stdout.split()
    user = next((name for name in workers if name != "root"), None)
    assert user, f"no nginx worker runs: {workers}"
    marker = f"tierwall-error-log-check-{uuid.uuid4().hex}"
    sent = _log_to(edge, user, sock, f"[crit] 1#1: *1 {marker}, client: {edge.sentinel}, server: 0.0.0.0:443")
    assert sent.rc == 0, sent.stderr
    line = _logged_line(edge, "error.log", marker)
    assert line, "the line sent as nginx did not reach /var/log/nginx/error.log"
    assert f"client: {edge.sentinel.rsplit('.', 1)[0]}.0," in line, line
    assert edge.sentinel not in line, line
    forged = _log_to(edge, "nobody", sock, f"[crit] forged {marker}")
    assert forged.rc != 0, "a user other than nginx's could write into the error log"


@pytest.mark.control("RET-03")
@pytest.mark.verify_never("runs logrotate, which needs root (its state file and the logs' owners)")
def test_logs_are_deleted_within_the_retention_period(edge: Edge) -> None:
    """logrotate keeps at most 14 days of nginx logs, and no file is older than that."""
    config = edge.host.file("/etc/logrotate.d/nginx").content_string
    rotate = [int(v) for v in re.findall(r"^\s*rotate\s+(\d+)", config, re.M)]
    maxage = [int(v) for v in re.findall(r"^\s*maxage\s+(\d+)", config, re.M)]
    assert rotate, config
    assert max(rotate) <= 14, config
    assert maxage, config
    assert max(maxage) <= 14, config
    assert re.search(r"^\s*daily\s*$", config, re.M), "rotation must be daily for rotate to count days"
    assert edge.host.run("logrotate --debug /etc/logrotate.d/nginx").rc == 0
    old = edge.host.run("find /var/log/nginx -type f -mtime +14")
    assert old.stdout.strip() == "", f"log files older than 14 days:\n{old.stdout}"


@pytest.mark.control("RET-03")
def test_a_query_string_never_reaches_a_log(edge: Edge) -> None:
    """A live request carrying a query string is logged by its path alone: the query's value is in
    no log file of the proxy, rotated ones included."""
    marker = f"/tierwall-edge-query-check-{uuid.uuid4().hex}"
    secret = f"client-{uuid.uuid4().hex}"
    edge.curl(f"https://{edge.domain}{marker}?client={secret}")
    for _ in range(10):  # nginx writes the line after the response
        if edge.host.run("grep -F -q -- %s /var/log/nginx/access.log", marker).rc == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the request was not logged")
    leaked = edge.host.run("zgrep -F -l -- %s /var/log/nginx/*", secret)
    assert leaked.rc == 1, f"the query string reached a log: {leaked.stdout}"


@pytest.mark.control("RET-03")
@pytest.mark.disruptive  # rotates the proxy's logs under the other tests' feet
def test_a_real_rotation_deletes_logs_past_the_retention(edge: Edge) -> None:
    """logrotate itself, run now as its daily timer would, removes a rotated log older than the
    retention period; none older than 14 days is left."""
    planted = "/var/log/nginx/access.log.3.gz"
    made = edge.host.run("printf 'x' | gzip > %s && touch -d '20 days ago' %s", planted, planted)
    assert made.rc == 0, made.stderr
    rotated = edge.host.run("logrotate --force /etc/logrotate.d/nginx")
    assert rotated.rc == 0, rotated.stderr
    left = edge.host.run("find /var/log/nginx -type f -mtime +14").stdout.split()
    assert left == [], f"log files older than 14 days after a rotation: {left}"


# -- AVL-01: the edge refuses what the app would refuse ----------------------------------------------


def _app_body_limit(inventory: Any) -> int:
    """TIERWALL_MAX_BODY_BYTES of the running app service on the first app server."""
    from conftest import connect

    app = connect(inventory, inventory.first("app"))
    shown = app.run("systemctl show -p Environment --value tierwall-notes.service")
    assert shown.rc == 0, shown.stderr
    found = re.search(r"(?:^|\s)TIERWALL_MAX_BODY_BYTES=(\d+)", shown.stdout)
    assert found, f"the app service has no TIERWALL_MAX_BODY_BYTES: {shown.stdout}"
    return int(found.group(1))


@pytest.mark.control("AVL-01")
def test_the_edge_refuses_a_body_larger_than_the_app_accepts(
    edge: Edge, inventory: Any, tmp_path: Path
) -> None:
    """nginx loads the app's own limit; one byte more is refused at the edge with 413 before any of it
    reaches an app server, a body of exactly the limit is passed on (the app answers, not nginx)."""
    limit = _app_body_limit(inventory)
    assert re.findall(r"^\s*client_max_body_size\s+(\S+);", edge.live_config(), re.M) == [str(limit)]
    statuses = {}
    for size in (limit + 1, limit):
        body = tmp_path / f"body-{size}"
        body.write_bytes(b"x" * size)
        _, status, _ = edge.curl(f"https://{edge.domain}/client/notes", "-X", "POST",
                                 "-H", "Content-Type: application/json", "--data-binary", f"@{body}")
        statuses[size] = status
    assert statuses[limit + 1] == 413, statuses
    assert statuses[limit] not in (None, 413), statuses


# -- RATE-01: per-client rate limit (last: it spends the sentinel's allowance) --------------------


@pytest.mark.control("RATE-01")
@pytest.mark.disruptive  # the sentinel is rate-limited for a while afterwards
def test_rate_limit_answers_429_after_the_burst(edge: Edge) -> None:
    """A client that sends more than its burst at once gets 429 for the excess, and is served
    up to the burst. The requests go out in parallel (HTTP/2 streams on one connection): sent one
    by one, each waits for the app, and the bucket refills as fast as it drains."""
    config = edge.live_config()
    burst = int(re.search(r"limit_req\s+zone=\S+\s+burst=(\d+)", config).group(1))
    rate, unit = re.search(r"limit_req_zone\s+\S+\s+zone=\S+\s+rate=(\d+)r/([sm])", config).groups()
    per_second = int(rate) / (60 if unit == "m" else 1)
    time.sleep(min(30.0, burst / per_second + 1))  # let the bucket refill after the other checks
    url = f"https://{edge.domain}/tierwall-edge-rate-check"
    count = 2 * burst + 20  # bounded
    argv = [
        "curl", "--silent", "--max-time", "30", "--write-out", "%{http_code}\\n",
        "--parallel", "--parallel-immediate", "--parallel-max", str(count),
        "--resolve", f"{edge.domain}:443:{edge.public_address}", *edge.ca_args("--cacert"),
    ]  # fmt: skip
    for _ in range(count):
        argv += ["--output", "/dev/null", url]
    codes = edge.client(argv, timeout=60).stdout.split()
    assert len(codes) == count, codes
    assert "429" in codes, f"no 429 in {count} simultaneous requests (burst {burst}): {codes}"
    served = [c for c in codes if c != "429"]
    assert served, f"every request was refused: {codes}"
    time.sleep(min(30.0, burst / per_second + 1))  # leave the proxy as we found it

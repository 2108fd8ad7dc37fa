"""The edge's nginx configuration, rendered and checked without a running nginx.

The templates in templates/nginx are rendered with Ansible's own templating engine (the same
filters, the same trust rules as the nginx role) from the role's defaults and a topology with
one and with three app servers. The rendered tree then passes `nginx -t` in a temporary prefix
with throw-away certificates: no nginx process is started and no socket is opened.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import playbook_run
import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tierwall.paths import REPO
from tierwall.topology import build_topology

TEMPLATES = REPO / "templates" / "nginx"
ROLE = REPO / "ansible" / "roles" / "nginx"
DOMAIN = "notes.example.test"
# The one value both the edge and the app take their body limit from (the playbooks' group_vars).
GROUP_VARS_ALL = REPO / "ansible" / "playbooks" / "group_vars" / "all.yml"
REQUEST_BODY_MAX_BYTES = yaml.safe_load(GROUP_VARS_ALL.read_text())["tierwall_request_body_max_bytes"]

# Installed path (relative to the nginx config directory) -> template, as the role installs them.
FILES = {
    "nginx.conf": "nginx.conf.j2",
    "conf.d/tierwall-tls.conf": "conf.d/tierwall-tls.conf.j2",
    "conf.d/tierwall-logging.conf": "conf.d/tierwall-logging.conf.j2",
    "conf.d/tierwall-limits.conf": "conf.d/tierwall-limits.conf.j2",
    "conf.d/tierwall-upstream.conf": "conf.d/tierwall-upstream.conf.j2",
    "snippets/tierwall-headers.conf": "snippets/tierwall-headers.conf.j2",
    "snippets/tierwall-proxy.conf": "snippets/tierwall-proxy.conf.j2",
    "sites-enabled/tierwall-default.conf": "sites/tierwall-default.conf.j2",
    "sites-enabled/tierwall-site.conf": "sites/tierwall-site.conf.j2",
}


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        pytest.fail(
            "nginx is not installed: the rendered configuration is checked with `nginx -t`. "
            "Install it with `apt-get install nginx-light` (no service needs to run)."
        )
    return path


@functools.cache
def installed_nginx_version() -> str:
    """major.minor of this machine's nginx: the templates are rendered for the nginx that checks them."""
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"nginx/(\d+\.\d+)", done.stderr)
    assert match, f"nginx -v: {done.stderr}"
    return match.group(1)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _crl(directory: Path, ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
    """An empty CRL of the throw-away CA, in DER (served) and PEM (proxy_ssl_crl), as the pki role
    installs them."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der, pem = directory / "tierwall-ca.crl", directory / "tierwall-ca.crl.pem"
    der.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return der, pem


def render_tree(prefix: Path, app_count: int, **overrides: Any) -> dict[str, str]:
    """Render every template as the role would, into ``prefix/conf``; return path -> text."""
    conf, logs, tls = prefix / "conf", prefix / "logs", prefix / "tls"
    for directory in (conf, logs, tls):
        directory.mkdir(parents=True, exist_ok=True)
    site_cert, site_key = _self_signed(tls, DOMAIN)
    ca_cert, ca_key = _self_signed(tls, "ca.tierwall.internal")
    crl_der, crl_pem = _crl(tls, ca_cert, ca_key)
    loader = DataLoader()
    variables: dict[str, Any] = dict(
        loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True)
    )
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables.update(
        {
            "ansible_managed": "Ansible managed: do not edit",
            "role_path": str(ROLE),
            "inventory_hostname": "proxy-1",
            "tierwall_domain": DOMAIN,
            "tierwall_topology": build_topology(app_count=app_count).as_dict(),
            "tierwall_request_body_max_bytes": REQUEST_BODY_MAX_BYTES,
            "nginx_version": installed_nginx_version(),
            # Paths the role points at the host; here they point into the temporary prefix.
            "nginx_log_dir": str(logs),
            "nginx_pid_file": str(prefix / "nginx.pid"),
            "nginx_upstream_ca_file": str(ca_cert),
            "nginx_upstream_crl_file": str(crl_pem),
            "nginx_crl_file": str(crl_der),
            "__nginx_tls_certificate": str(site_cert),
            "__nginx_tls_key": str(site_key),
            "__nginx_tls_chain": str(ca_cert),
        }
    )
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    rendered = {}
    for target, source in FILES.items():
        text = templar.template(trust_as_template((TEMPLATES / source).read_text()))
        path = conf / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        rendered[target] = text
    (conf / "mime.types").write_text("types {\n    text/html html;\n}\n")
    (conf / "modules-enabled").mkdir(exist_ok=True)
    return rendered


def nginx_test(prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(prefix), "-c", str(prefix / "conf" / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def directives(text: str, name: str) -> list[str]:
    """The arguments of every ``name ...;`` directive in ``text`` (comments ignored)."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(name + " ") and line.endswith(";"):
            found.append(line[len(name) :].strip().rstrip(";").strip())
    return found


@pytest.fixture(params=[1, 3], ids=["1-app", "3-apps"])
def app_count(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def tree(tmp_path: Path, app_count: int) -> tuple[Path, dict[str, str]]:
    return tmp_path, render_tree(tmp_path, app_count)


# -- the whole configuration is valid nginx --------------------------------------------------------


def test_nginx_binary_is_installed() -> None:
    assert Path(nginx_binary()).exists()


def test_rendered_configuration_passes_nginx_t(tree: tuple[Path, dict[str, str]]) -> None:
    prefix, _ = tree
    result = nginx_test(prefix)
    assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}"
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_the_role_expects_the_nginx_this_release_ships() -> None:
    """nginx_version, derived from this machine's Debian release as on a host, is the installed nginx's."""
    release = re.search(r'^VERSION_ID="?(\d+)', Path("/etc/os-release").read_text(), re.M)
    assert release, "/etc/os-release has no VERSION_ID: this is not a Debian release the role knows"
    loader = DataLoader()
    variables = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables["ansible_facts"] = {"distribution_major_version": release.group(1)}
    expected = Templar(loader=loader, variables=variables).template(trust_as_template("{{ nginx_version }}"))
    assert expected == installed_nginx_version(), f"Debian {release.group(1)}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"nginx_certificate_source": "acme"},
        {"nginx_certificate_source": "acme", "nginx_ocsp_stapling": True, "nginx_resolvers": ["127.0.0.1"]},
        {"nginx_certificate_source": "path", "nginx_listen_ipv6": False},
        {"nginx_hsts_include_subdomains": False, "nginx_rate_limit_rate": "30r/m"},
        {"nginx_upstream_crl_file": "", "nginx_crl_file": ""},
    ],
    ids=["acme", "acme-ocsp", "path-ipv4-only", "variants", "no-crl"],
)
def test_variants_pass_nginx_t(tmp_path: Path, overrides: dict[str, Any]) -> None:
    render_tree(tmp_path, 2, **overrides)
    result = nginx_test(tmp_path)
    assert result.returncode == 0, f"nginx -t failed for {overrides}:\n{result.stderr}"


def test_a_broken_file_fails_nginx_t(tmp_path: Path) -> None:
    """The check is real: a configuration with an error is refused."""
    render_tree(tmp_path, 1)
    site = tmp_path / "conf" / "sites-enabled" / "tierwall-site.conf"
    site.write_text(site.read_text().replace("proxy_pass https://tierwall_app;", "proxy_pass;"))
    assert nginx_test(tmp_path).returncode != 0


def test_every_include_is_relative(tree: tuple[Path, dict[str, str]]) -> None:
    """The role validates a candidate inside a copy of /etc/nginx: absolute includes would
    make it check the live files instead."""
    _, files = tree
    for path, text in files.items():
        for argument in directives(text, "include"):
            assert not argument.startswith("/"), f"{path}: include {argument} must be relative"


def test_every_file_carries_the_ansible_managed_header(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    for path, text in files.items():
        assert text.startswith("#\n# Ansible managed"), f"{path} lacks the ansible_managed header"


# -- TLS (TLS-01, TLS-02) --------------------------------------------------------------------------


@pytest.mark.control("TLS-01")
def test_only_tls_1_2_and_1_3(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    everything = "\n".join(files.values())
    assert directives(everything, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directives(everything, "proxy_ssl_protocols") == ["TLSv1.2 TLSv1.3"]


@pytest.mark.control("TLS-01")
def test_only_aead_ciphers(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    (ciphers,) = directives(files["conf.d/tierwall-tls.conf"], "ssl_ciphers")
    for cipher in ciphers.split(":"):
        assert cipher.startswith("ECDHE-"), f"{cipher}: forward secrecy requires ECDHE"
        assert cipher.endswith(("-GCM-SHA256", "-GCM-SHA384", "-CHACHA20-POLY1305")), f"{cipher} is not AEAD"
    assert directives(files["conf.d/tierwall-tls.conf"], "ssl_session_tickets") == ["off"]


@pytest.mark.control("TLS-01")
def test_openssl_expands_the_cipher_list_to_aead_only(tree: tuple[Path, dict[str, str]]) -> None:
    """What OpenSSL makes of the string, not only what it says."""
    _, files = tree
    (ciphers,) = directives(files["conf.d/tierwall-tls.conf"], "ssl_ciphers")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed; the cipher string itself is checked above")
    result = subprocess.run(
        [openssl, "ciphers", "-v", "-tls1_2", ciphers], capture_output=True, text=True, check=True
    )
    for line in result.stdout.splitlines():
        name, *_, encryption, mac = line.split()
        assert mac == "Mac=AEAD", f"{name} ({encryption}) is not AEAD"


@pytest.mark.control("TLS-02")
def test_http_redirects_and_hsts_is_sent(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    site = files["sites-enabled/tierwall-site.conf"]
    assert f"return 301 https://{DOMAIN}$request_uri;" in site
    hsts = [h for h in directives(files["snippets/tierwall-headers.conf"], "add_header") if "Strict" in h]
    assert hsts == ['Strict-Transport-Security "max-age=63072000; includeSubDomains" always']


@pytest.mark.control("TLS-02")
def test_unknown_host_names_get_nothing(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    default = files["sites-enabled/tierwall-default.conf"]
    assert default.count("default_server;") == 4
    assert directives(default, "return") == ["444", "444"]
    assert directives(default, "ssl_reject_handshake") == ["on"]
    assert "ssl_certificate" not in default


def test_acme_challenges_are_the_only_plain_http_content(tmp_path: Path) -> None:
    acme = render_tree(tmp_path / "acme", 1, nginx_certificate_source="acme")
    lab = render_tree(tmp_path / "lab", 1)
    assert "location ^~ /.well-known/acme-challenge/" in acme["sites-enabled/tierwall-site.conf"]
    assert "acme-challenge" not in lab["sites-enabled/tierwall-site.conf"]
    assert "ssl_stapling" not in acme["sites-enabled/tierwall-site.conf"]


def _server_blocks(text: str) -> list[str]:
    """The top-level ``server { ... }`` blocks of a site file, comments removed."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    blocks, depth, start = [], 0, None
    for match in re.finditer(r"\bserver\s*\{|[{}]", text):
        token = match.group(0)
        if token.startswith("server") and depth == 0:
            start = match.start()
        if token.endswith("{"):
            depth += 1
        else:
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start : match.end()])
                start = None
    return blocks


def _locations(server: str) -> dict[str, str]:
    """location argument -> its body, for the locations of one server block."""
    return {
        match.group(1).strip(): match.group(2)
        for match in re.finditer(r"^\s*location\s+([^{]+)\{(.*?)^\s*\}", server, re.M | re.S)
    }


@pytest.mark.control("TLS-02")
def test_port_80_serves_the_crl_and_redirects_everything_else(tree: tuple[Path, dict[str, str]]) -> None:
    """With the internal CA, port 80 answers the CRL distribution point (exact match) with the
    DER CRL as application/pkix-crl; every other URI still gets the 301. HTTPS has no such location."""
    prefix, files = tree
    http, https = _server_blocks(files["sites-enabled/tierwall-site.conf"])
    assert "listen 80;" in http
    assert re.search(r"^\s*listen 443 ssl[ ;]", https, re.M), https
    locations = _locations(http)
    assert set(locations) == {"= /tierwall-ca.crl", "/"}
    crl = locations["= /tierwall-ca.crl"]
    assert directives(crl, "alias") == [str(prefix / "tls" / "tierwall-ca.crl")]
    assert directives(crl, "default_type") == ["application/pkix-crl"]
    assert re.search(r"^\s*types\s*\{\s*\}", crl, re.M), "the mime map must not override the CRL type"
    assert directives(crl, "limit_req") == ["zone=tierwall_req_per_client burst=20 nodelay"]
    assert directives(locations["/"], "return") == [f"301 https://{DOMAIN}$request_uri"]
    assert set(_locations(https)) == {"/"}


@pytest.mark.parametrize(
    "overrides",
    [{"nginx_certificate_source": "acme"}, {"nginx_certificate_source": "path"}, {"nginx_crl_file": ""}],
    ids=["acme", "path", "no-crl-file"],
)
def test_the_crl_is_served_only_with_the_internal_ca(tmp_path: Path, overrides: dict[str, Any]) -> None:
    files = render_tree(tmp_path, 1, **overrides)
    http, _ = _server_blocks(files["sites-enabled/tierwall-site.conf"])
    assert "tierwall-ca.crl" not in http
    assert directives(_locations(http)["/"], "return") == [f"301 https://{DOMAIN}$request_uri"]


@pytest.mark.control("TLS-03")
def test_proxy_checks_app_certificates_against_the_crl(tmp_path: Path) -> None:
    checked = render_tree(tmp_path / "crl", 1)
    assert directives(checked["snippets/tierwall-proxy.conf"], "proxy_ssl_crl") == [
        str(tmp_path / "crl" / "tls" / "tierwall-ca.crl.pem")
    ]
    unchecked = render_tree(tmp_path / "none", 1, nginx_upstream_crl_file="")
    assert directives(unchecked["snippets/tierwall-proxy.conf"], "proxy_ssl_crl") == []


def test_nginx_t_loads_the_crl(tmp_path: Path) -> None:
    """nginx -t parses proxy_ssl_crl's file: a file that is not a PEM CRL is refused."""
    render_tree(tmp_path, 1)
    (tmp_path / "tls" / "tierwall-ca.crl.pem").write_text("not a CRL\n")
    result = nginx_test(tmp_path)
    assert result.returncode != 0
    assert "tierwall-ca.crl.pem" in result.stderr


# -- headers (HDR-01) ------------------------------------------------------------------------------


@pytest.mark.control("HDR-01")
def test_every_security_header_is_added_always(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    headers = directives(files["snippets/tierwall-headers.conf"], "add_header")
    names = {h.split()[0] for h in headers}
    assert {
        "Strict-Transport-Security",
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Permissions-Policy",
    } <= names
    assert all(h.endswith(" always") for h in headers), "every header must be sent on errors too"
    csp = next(h for h in headers if h.startswith("Content-Security-Policy"))
    assert "frame-ancestors 'none'" in csp
    assert directives(files["nginx.conf"], "server_tokens") == ["off"]


@pytest.mark.control("HDR-01")
def test_headers_reach_every_server_and_no_location_overrides_them(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    site = files["sites-enabled/tierwall-site.conf"]
    assert site.count("include snippets/tierwall-headers.conf;") == 2
    for path, text in files.items():
        if path != "snippets/tierwall-headers.conf":
            assert not directives(text, "add_header"), f"{path}: add_header would drop the snippet's headers"
    hidden = directives(files["snippets/tierwall-proxy.conf"], "proxy_hide_header")
    assert {"X-Powered-By", "Server"} <= set(hidden)


# -- limits (RATE-01) ------------------------------------------------------------------------------


@pytest.mark.control("RATE-01")
def test_per_client_limits_answer_429(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    limits = files["conf.d/tierwall-limits.conf"]
    assert directives(limits, "limit_req_status") == ["429"]
    assert directives(limits, "limit_conn_status") == ["429"]
    assert directives(limits, "limit_req_zone") == [
        "$binary_remote_addr zone=tierwall_req_per_client:10m rate=10r/s"
    ]
    site = files["sites-enabled/tierwall-site.conf"]
    https = site[site.index("listen 443") :]
    assert directives(https, "limit_req") == ["zone=tierwall_req_per_client burst=20 nodelay"]
    assert directives(https, "limit_conn") == ["tierwall_conn_per_client 20"]


@pytest.mark.control("AVL-01")
def test_the_edge_refuses_bodies_the_app_would_refuse(tree: tuple[Path, dict[str, str]]) -> None:
    """client_max_body_size is the app's limit, from the one value the app role hands the app."""
    _, files = tree
    limits = files["conf.d/tierwall-limits.conf"]
    assert directives(limits, "client_max_body_size") == [str(REQUEST_BODY_MAX_BYTES)]
    assert REQUEST_BODY_MAX_BYTES == 256 * 1024
    everything = "\n".join(files.values())
    assert len(re.findall(r"^\s*client_max_body_size\s", everything, re.M)) == 1, "set in one place only"


# -- upstream (TLS-03) -----------------------------------------------------------------------------


@pytest.mark.control("TLS-03")
def test_upstream_lists_every_app_server(tree: tuple[Path, dict[str, str]], app_count: int) -> None:
    _, files = tree
    topology = build_topology(app_count=app_count)
    servers = [s.split()[0] for s in directives(files["conf.d/tierwall-upstream.conf"], "server")]
    expected = [f"{h.address('frontend')}:{topology.ports.app}" for h in topology.hosts_in("app")]
    assert servers == expected
    assert len(servers) == app_count
    assert directives(files["conf.d/tierwall-upstream.conf"], "keepalive") == ["16"]


@pytest.mark.control("TLS-03")
def test_proxy_verifies_the_app_servers_certificates(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    proxy = files["snippets/tierwall-proxy.conf"]
    assert directives(proxy, "proxy_ssl_verify") == ["on"]
    assert directives(proxy, "proxy_ssl_server_name") == ["on"]
    assert directives(proxy, "proxy_ssl_name") == ["app.tierwall.internal"]
    assert len(directives(proxy, "proxy_ssl_trusted_certificate")) == 1
    assert directives(files["sites-enabled/tierwall-site.conf"], "proxy_pass") == ["https://tierwall_app"]


@pytest.mark.control("RET-03")
def test_bodies_never_reach_the_proxys_disk(tree: tuple[Path, dict[str, str]]) -> None:
    """Notes pass through the proxy: a request body above client_body_buffer_size would be written
    to a temp file on its disk, and so would a large response. Both stream through memory."""
    _, files = tree
    proxy = files["snippets/tierwall-proxy.conf"]
    assert directives(proxy, "proxy_request_buffering") == ["off"]
    assert directives(proxy, "proxy_max_temp_file_size") == ["0"]
    everything = "\n".join(files.values())
    assert not re.search(r"^\s*client_body_in_file_only\s+(on|clean)", everything, re.M)


# -- logs (RET-03) ---------------------------------------------------------------------------------


def _log_format(files: dict[str, str]) -> str:
    text = files["conf.d/tierwall-logging.conf"]
    match = re.search(r"^log_format\s+tierwall_anonymised\s+escape=default\s+(.*?);", text, re.M | re.S)
    assert match, "log_format tierwall_anonymised not found"
    return match.group(1)


@pytest.mark.control("RET-03")
def test_log_format_holds_no_full_address_query_or_body(tree: tuple[Path, dict[str, str]]) -> None:
    _, files = tree
    log_format = _log_format(files)
    variables = set(re.findall(r"\$([a-z_0-9]+)", log_format))
    forbidden = {
        "remote_addr", "binary_remote_addr", "realip_remote_addr", "http_x_forwarded_for",
        "proxy_add_x_forwarded_for", "request", "request_uri", "args", "query_string",
        "request_body", "http_referer", "http_user_agent", "http_cookie", "http_authorization",
    }  # fmt: skip
    assert not variables & forbidden, f"log_format logs {sorted(variables & forbidden)}"
    assert not any(v.startswith(("arg_", "cookie_", "sent_http_set_cookie")) for v in variables)
    assert {
        "tierwall_client",
        "request_method",
        "uri",
        "status",
        "body_bytes_sent",
        "request_time",
    } <= variables
    everything = "\n".join(files.values())
    assert directives(everything, "access_log") == [f"{tree[0] / 'logs'}/access.log tierwall_anonymised"]
    # nginx never writes the error log itself: rsyslog anonymises it (test_nginx_error_log.py).
    assert directives(files["nginx.conf"], "error_log") == [
        "syslog:server=unix:/run/tierwall-nginx-log/error.sock,tag=nginx,nohostname crit",
        "stderr emerg",
    ]


def _anonymiser(files: dict[str, str]):
    """The map's regexes, applied as nginx applies them: first match wins, default "-"."""
    text = files["conf.d/tierwall-logging.conf"]
    body = re.search(r"map \$remote_addr \$tierwall_client \{(.*?)\n\}", text, re.S).group(1)
    rules = []
    for line in body.splitlines():
        match = re.match(r'\s*"(~\*?)(.*)"\s+"(.*)";', line)
        if match:
            flags = re.I if match.group(1) == "~*" else 0
            rules.append((re.compile(match.group(2), flags), match.group(3)))
    assert len(rules) == 4

    def anonymise(address: str) -> str:
        for pattern, value in rules:
            found = pattern.search(address)
            if found:
                return found.expand(re.sub(r"\$(\d)", r"\\g<\1>", value))
        return "-"

    return anonymise


@pytest.mark.control("RET-03")
@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.10.1.10", "10.10.1.0"),
        ("::ffff:198.51.100.9", "::ffff:198.51.100.0"),
        ("2001:db8:1234:5678:9abc:def0:1:2", "2001:db8:1234::"),
        ("2001:DB8:AB::1", "2001:DB8:AB::"),
        ("2001:db8::1", "2001:db8::"),
        ("2001::5:6:7:8:9:10", "2001::"),
        ("::1", "::"),
        ("unix:", "-"),
    ],
)
def test_client_addresses_are_anonymised(tmp_path: Path, address: str, expected: str) -> None:
    anonymise = _anonymiser(render_tree(tmp_path, 1))
    result = anonymise(address)
    assert result == expected
    if result != "-":
        kept = ipaddress.ip_address(result.replace("::ffff:", "") if "." in result else result)
        original = ipaddress.ip_address(address.replace("::ffff:", "") if "." in address else address)
        bits = 24 if original.version == 4 else 48
        mask = int(ipaddress.ip_network(f"{original}/{bits}", strict=False).netmask)
        # Nothing beyond the prefix survives, and what survives is the original's (an address
        # with "::" early may keep fewer than 48 bits: more anonymous, never less).
        assert int(kept) & ~mask == 0, f"{result} keeps more than /{bits} of {address}"
        assert int(kept) & ~int(original) == 0, f"{result} is not a truncation of {address}"


# -- the role's own installation path: validate with a copy, converge twice ------------------------


def _render_checker(tmp_path: Path, conf_dir: Path) -> Path:
    loader = DataLoader()
    templar = Templar(
        loader=loader, variables={"ansible_managed": "Ansible managed", "__nginx_conf_dir": str(conf_dir)}
    )
    checker = tmp_path / "tierwall-nginx-check"
    source = (ROLE / "templates" / "tierwall-nginx-check.j2").read_text()
    checker.write_text(templar.template(trust_as_template(source)))
    checker.chmod(0o755)
    return checker


def test_the_validate_helper_checks_a_candidate_in_a_copy(tmp_path: Path) -> None:
    """tierwall-nginx-check accepts a good candidate, refuses a broken one, and never touches
    the live tree (here: the rendered tree in the temporary prefix)."""
    nginx_binary()
    render_tree(tmp_path, 3)
    conf = tmp_path / "conf"
    checker = _render_checker(tmp_path, conf)
    live_site = conf / "sites-enabled" / "tierwall-site.conf"
    before = live_site.read_text()
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text(before)
    bad.write_text(before.replace("limit_req zone=tierwall_req_per_client", "limit_req zone=no_such_zone"))

    ok = subprocess.run([checker, live_site, good], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [checker, live_site, bad], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode != 0
    assert "no_such_zone" in refused.stderr
    assert live_site.read_text() == before
    outside = subprocess.run([checker, "/etc/passwd", good], capture_output=True, text=True, check=False)
    assert outside.returncode == 2


def _prepare_prefix(tmp_path: Path, app_count: int) -> None:
    """Certificates and the directories Debian's package ships, without the role's files."""
    conf = tmp_path / "prefix" / "conf"
    render_tree(tmp_path / "prefix", app_count)
    for path in FILES:
        (conf / path).unlink()


def _converge_config(tmp_path: Path, app_count: int) -> tuple[int, str]:
    """Run the role's config.yml with Ansible itself, every path pointed into ``tmp_path``."""
    prefix = tmp_path / "prefix"
    conf = prefix / "conf"
    tls = prefix / "tls"
    extra = {
        "__nginx_conf_dir": str(conf),
        "__nginx_check_command": str(tmp_path / "tierwall-nginx-check"),
        "nginx_log_dir": str(prefix / "logs"),
        "nginx_pid_file": str(prefix / "nginx.pid"),
        "nginx_upstream_ca_file": str(tls / "ca.tierwall.internal.crt"),
        "nginx_upstream_crl_file": str(tls / "tierwall-ca.crl.pem"),
        "nginx_crl_file": str(tls / "tierwall-ca.crl"),
        "__nginx_tls_certificate": str(tls / f"{DOMAIN}.crt"),
        "__nginx_tls_key": str(tls / f"{DOMAIN}.key"),
        "__nginx_tls_chain": str(tls / "ca.tierwall.internal.crt"),
        "tierwall_domain": DOMAIN,
        "tierwall_topology": build_topology(app_count=app_count).as_dict(),
        "tierwall_request_body_max_bytes": REQUEST_BODY_MAX_BYTES,
        "nginx_version": installed_nginx_version(),
    }
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    (tmp_path / "inventory.ini").write_text(
        f"proxy-1 ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    # end_play: the handlers (nginx -t on /etc/nginx, systemctl reload) are for a real host.
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: nginx, tasks_from: config.yml}\n"
        "    - ansible.builtin.meta: end_play\n"
    )
    return playbook_run.converge(
        tmp_path, "proxy-1", "-i", tmp_path / "inventory.ini", "-e", f"@{tmp_path / 'extra.json'}",
        tmp_path / "play.yml",
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="the role installs files owned by root: run as root")
def test_the_role_installs_a_valid_tree_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    nginx_binary()
    _prepare_prefix(tmp_path, 3)
    first, output = _converge_config(tmp_path, 3)
    assert first > 0, output
    assert all((tmp_path / "prefix" / "conf" / path).is_file() for path in FILES), output
    second, output = _converge_config(tmp_path, 3)
    assert second == 0, f"second converge changed {second} file(s):\n{output}"
    assert nginx_test(tmp_path / "prefix").returncode == 0

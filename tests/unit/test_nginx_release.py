"""The nginx role renders HTTP/2 the way the host's nginx spells it.

nginx 1.25.1 turned HTTP/2 into a server directive (`http2 on;`) and deprecated the listen
parameter (`listen 443 ssl http2`), with a warning at every start and reload. The role derives
the version from the host's Debian release (12: nginx 1.22, 13: nginx 1.26), as the postgresql
role derives PostgreSQL's, and the site files follow it. Both forms are rendered here from the
role's own files; `nginx -t` checks them on this machine's nginx
(tests/integration/test_nginx_templates.py) and on Debian 13's (test_trixie_configs.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tierwall.paths import REPO
from tierwall.topology import build_topology

ROLE = REPO / "ansible" / "roles" / "nginx"
SITES = REPO / "templates" / "nginx" / "sites"


def _templar(**overrides: Any) -> Templar:
    loader = DataLoader()
    variables = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables.update(
        ansible_managed="Ansible managed",
        role_path=str(ROLE),
        inventory_hostname="proxy-1",
        tierwall_domain="notes.example.test",
        tierwall_topology=build_topology(app_count=1).as_dict(),
        __nginx_tls_certificate="/etc/ssl/site.crt",
        __nginx_tls_key="/etc/ssl/site.key",
        __nginx_tls_chain="/etc/ssl/chain.crt",
    )
    variables.update(overrides)
    return Templar(loader=loader, variables=variables)


def _value(expression: str, **overrides: Any) -> Any:
    return _templar(**overrides).template(trust_as_template(expression))


def _https_servers(text: str) -> list[list[str]]:
    """The directives (comments removed, one per line) of each top-level server block listening on 443."""
    servers: list[list[str]] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if depth == 0 and line.startswith("server") and line.endswith("{"):
            servers.append([])
        elif depth == 1 and line.endswith(";"):
            servers[-1].append(line)
        depth += line.count("{") - line.count("}")
    return [s for s in servers if any(re.match(r"listen (\[::\]:)?443 ", d) for d in s)]


@pytest.mark.parametrize(("release", "version", "directive"), [("12", "1.22", False), ("13", "1.26", True)])
def test_the_nginx_version_follows_the_release(release: str, version: str, directive: bool) -> None:
    facts = {"distribution_major_version": release}
    assert _value("{{ nginx_version }}", ansible_facts=facts) == version
    assert _value("{{ __nginx_http2_directive }}", ansible_facts=facts) is directive


def test_an_unknown_release_gets_no_version_which_preflight_refuses() -> None:
    assert _value("{{ nginx_version }}", ansible_facts={"distribution_major_version": "14"}) == ""
    tasks = yaml.safe_load((ROLE / "tasks" / "preflight.yml").read_text())
    (check,) = [t for t in tasks if t["name"].startswith("Check that the nginx version is known")]
    (condition,) = check["ansible.builtin.assert"]["that"]
    assert _value("{{ " + condition + " }}", nginx_version="") is False
    assert _value("{{ " + condition + " }}", nginx_version="1.26") is True


@pytest.mark.parametrize(
    ("version", "directive"), [("1.22", False), ("1.25.0", False), ("1.25.1", True), ("1.26", True)]
)
@pytest.mark.parametrize("site", ["tierwall-site.conf.j2", "tierwall-default.conf.j2"])
def test_every_https_server_speaks_http2_as_its_nginx_spells_it(
    site: str, version: str, directive: bool
) -> None:
    text = _templar(nginx_version=version).template(trust_as_template((SITES / site).read_text()))
    servers = _https_servers(text)
    assert servers, text
    for server in servers:
        listens = [d for d in server if d.startswith("listen ")]
        assert len(listens) == 2, server  # IPv4 and IPv6
        if directive:
            assert "http2 on;" in server, server
            assert not any(" http2" in d for d in listens), server
        else:
            assert not any(d.startswith("http2 ") for d in server), server
            assert all(re.match(r"listen \S+ ssl http2( default_server)?;$", d) for d in listens), server

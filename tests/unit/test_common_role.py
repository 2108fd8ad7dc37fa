"""What the common role writes on each tier, rendered as on a host: sshd's host key, forwarding and
limits. The live suites (tests/testinfra/test_base.py, test_ssh_forwarding.py) read the same
settings back from the running hosts."""

from __future__ import annotations

import pytest
import yaml
from role_render import ROLES, directives, inventory, render, value

from tierwall.topology import build_topology

HOSTS = {"proxy": "proxy-1", "app": "app-1", "db": "db-1"}


def _sshd(host: str, **kwargs) -> list[tuple[str, str]]:
    return directives(render("common", "sshd-tierwall.conf.j2", host, **kwargs))


def _values(host: str, keyword: str, **kwargs) -> list[str]:
    return [rest for key, rest in _sshd(host, **kwargs) if key == keyword]


def _next_hops(tier: str, app_count: int) -> list[str]:
    """The SSH flows of the matrix from ``tier``: HOST:22 of every host they reach, on the flow's network."""
    topology = build_topology(app_count=app_count)
    return [
        f"{host.address(flow.network)}:{flow.port}"
        for flow in topology.flows_from(tier)
        if flow.port == topology.ports.ssh and flow.protocol == "tcp"
        for host in topology.hosts_in(flow.destination)
    ]


@pytest.mark.control("AC-03")
@pytest.mark.parametrize("tier", HOSTS)
def test_sshd_offers_the_ed25519_host_key_only(tier: str) -> None:
    """One HostKey, Ed25519, offered as ssh-ed25519 alone: an auditor's client finds no NIST-curve
    or RSA host key to choose."""
    assert _values(HOSTS[tier], "HostKey") == ["/etc/ssh/ssh_host_ed25519_key"]
    assert _values(HOSTS[tier], "HostKeyAlgorithms") == ["ssh-ed25519"]


@pytest.mark.control("AC-03")
@pytest.mark.parametrize("app_count", [1, 3])
@pytest.mark.parametrize("tier", HOSTS)
def test_forwards_reach_only_the_next_hops_sshd(tier: str, app_count: int) -> None:
    """The proxy forwards to the apps' frontend :22, the app to the db's backend :22, from the
    topology's SSH flows; the db forwards nothing."""
    host = HOSTS[tier]
    forwarding = _values(host, "AllowTcpForwarding", app_count=app_count)
    permit_open = _values(host, "PermitOpen", app_count=app_count)
    expected = _next_hops(tier, app_count)
    if tier == "db":
        assert (forwarding, permit_open, expected) == (["no"], ["none"], [])
    else:
        assert forwarding == ["local"]
        assert permit_open[0].split() == expected
        assert len(expected) == (app_count if tier == "proxy" else 1)


def test_the_next_hops_are_the_inventory_chains_hops() -> None:
    """What PermitOpen allows is what the inventory's ProxyCommand chain asks for (ssh -W to the
    next host's ansible_host:22): app from the proxy, db from the first app."""
    groups = inventory(2)["all"]["children"].values()
    hosts = {name: h for group in groups for name, h in group["hosts"].items()}
    from_proxy = value("common", "common_sshd_permit_open", "proxy-1")
    from_app = value("common", "common_sshd_permit_open", "app-1")
    assert {f"{hosts[a]['ansible_host']}:22" for a in ("app-1", "app-2")} == set(from_proxy)
    assert from_app == [f"{hosts['db-1']['ansible_host']}:22"]


@pytest.mark.control("AC-03")
def test_unauthenticated_connections_are_bounded() -> None:
    """MaxStartups 10:30:60: pre-auth connections are dropped at random from 10 and all from 60."""
    assert _values("proxy-1", "MaxStartups") == ["10:30:60"]
    assert _values("proxy-1", "TCPKeepAlive") == ["no"]


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, True),
        ({"common_sshd_permit_open": []}, False),
        ({"common_sshd_permit_open": ["any"]}, False),
        ({"common_sshd_permit_open": ["10.10.1.20:22", "10.10.1.21 22"]}, False),
        ({"common_sshd_allow_tcp_forwarding": "no", "common_sshd_permit_open": []}, True),
        ({"common_sshd_max_startups": "10:30"}, False),
        ({"common_sshd_max_startups": "20"}, True),
    ],
)
def test_validate_refuses_forwarding_without_a_next_hop(overrides: dict, valid: bool) -> None:
    """validate.yml's conditions, evaluated as the role does, refuse what sshd would misread."""
    tasks = yaml.safe_load((ROLES / "common" / "tasks" / "validate.yml").read_text())
    checks = [t for t in tasks if t["name"] in ("SSH forwards reach the next hop of the jump chain only",
                                                 "MaxStartups has sshd's form")]  # fmt: skip
    assert len(checks) == 2
    conditions = [c for task in checks for c in task["ansible.builtin.assert"]["that"]]
    results = [value("common", f"({c}) | bool", "proxy-1", **overrides) for c in conditions]
    assert all(results) is valid, dict(zip(conditions, results, strict=True))

"""The segregation matrix, proved live: every ordered pair of lab endpoints, every port.

From inside each source's network namespace (so the source host's own nftables output chain
applies, as for its own processes) a TCP connection is attempted to every address of every
other endpoint on every port any endpoint listens on, plus the fixed probe list. The outcome is
compared with the flow matrix and written to ``.lab/reports/segregation.json`` for the audit
report. The operator is probed as a source only: it is not a server.
"""

from __future__ import annotations

import pytest

from tierwall.lab.addressing import OPERATOR, SENTINEL, SENTINEL_NS, SENTINEL_PORTS
from tierwall.paths import LAB_DIR
from tierwall.segregation import BLOCKED, CONNECTED, Endpoint, Matrix, outside_roles, probe_matrix
from tierwall.topology import PROXY, PUBLIC

pytestmark = pytest.mark.lab
EVIDENCE = LAB_DIR / "reports" / "segregation.json"


def endpoints(lab) -> tuple[list[Endpoint], list[Endpoint]]:
    """(sources, destinations)."""
    hosts = []
    for host in lab.topology.hosts:
        addresses = [(i.network, str(i.address)) for i in host.interfaces]
        if host.tier == PROXY:
            addresses.insert(0, (PUBLIC, lab.hosts[host.name]["tierwall_public_address"]))
        namespace = lab.vars["tierwall_lab_namespaces"][host.name]
        hosts.append(Endpoint(host.name, (host.tier,), tuple(addresses), namespace))
    sentinel = Endpoint(
        "sentinel",
        outside_roles(False),
        ((PUBLIC, str(SENTINEL)),),
        SENTINEL_NS,
        serves=frozenset((port, "tcp") for port in SENTINEL_PORTS),
    )
    operator = Endpoint("operator", outside_roles(True), ((PUBLIC, str(OPERATOR)),), None)
    return [operator, sentinel, *hosts], [sentinel, *hosts]


_PROBED: list[Matrix] = []


@pytest.fixture(scope="module")
def matrix(lab) -> Matrix:
    """Probed once per test process: a parallel worker may tear module fixtures down between two
    tests of the module, and the whole matrix costs thousands of connection attempts."""
    if not _PROBED:
        sources, destinations = endpoints(lab)
        result = probe_matrix(lab.topology, sources, destinations)
        result.write(EVIDENCE)
        _PROBED.append(result)
    return _PROBED[0]


@pytest.mark.control("NET-05")
@pytest.mark.control("FW-01")
def test_no_undeclared_connection_passes(matrix: Matrix) -> None:
    """Everything the flow matrix does not declare is blocked: no connection, not even a RST."""
    leaks = [
        f"{p.source} -> {p.destination} {p.address}:{p.port}/{p.protocol} {p.outcome}"
        for p in matrix.probes
        if not p.declared and p.violation
    ]
    assert not leaks, f"undeclared connections got through ({len(leaks)}): {leaks[:20]}"


@pytest.mark.control("NET-05")
def test_every_declared_flow_connects(matrix: Matrix) -> None:
    """Each declared flow connects end to end (TCP handshake, or an NTP answer for udp/123):
    segregation must not break the architecture, and every declared service is really there.
    The sentinel serves TCP 80/443 only: a declared flow to "the internet" on another port (the
    proxy's NTP) is proved by getting through the proxy's firewall (a refusal comes back)."""
    missing = [
        f"{p.source} -> {p.destination} {p.address}:{p.port}/{p.protocol} {p.outcome} ({p.purpose})"
        for p in matrix.probes
        if p.declared and p.violation
    ]
    assert not missing, f"declared flows that did not connect: {missing}"


def test_udp_services_are_probed(matrix: Matrix) -> None:
    """The NTP chain (proxy -> app -> db) is part of the matrix: its UDP flows were tried too."""
    udp = {(p.source, p.destination, p.port) for p in matrix.probes if p.protocol == "udp" and p.declared}
    assert any(port == 123 for *_, port in udp), sorted(udp)


@pytest.mark.control("NET-05")
def test_proxy_cannot_reach_the_db_on_any_port(matrix: Matrix) -> None:
    """The policy's core promise: the database is reachable only from the application server."""
    reached = [p for p in matrix.probes if p.destination.startswith("db-") and p.outcome != BLOCKED
               and not p.source.startswith("app-")]
    assert not reached, reached
    assert any(p.destination.startswith("db-") and p.source.startswith("proxy-") for p in matrix.probes)


def test_matrix_covers_every_pair(matrix: Matrix, lab) -> None:
    sources, destinations = endpoints(lab)
    pairs = {(p.source, p.destination) for p in matrix.probes}
    outside = {"operator", "sentinel"}
    expected = {
        (s.name, d.name) for s in sources for d in destinations
        if s.name != d.name and not {s.name, d.name} <= outside
    }
    assert pairs == expected
    assert any(p.outcome == CONNECTED for p in matrix.probes)

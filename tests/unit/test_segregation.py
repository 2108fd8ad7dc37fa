"""The segregation prober's verdicts, with a fake network: what counts as a leak, what as proof."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from tierwall.segregation import BLOCKED, CONNECTED, REFUSED, Endpoint, probe_matrix
from tierwall.topology import APP, DB, PROXY, PUBLIC, build_topology

TOPOLOGY = build_topology(app_count=1)
PROXY_1 = Endpoint("proxy-1", (PROXY,), ((PUBLIC, "203.0.113.10"), ("frontend", "10.10.1.10")), "ns-proxy")
APP_1 = Endpoint("app-1", (APP,), (("frontend", "10.10.1.20"), ("backend", "10.10.2.20")), "ns-app")
DB_1 = Endpoint("db-1", (DB,), (("backend", "10.10.2.30"),), "ns-db")
SENTINEL = Endpoint("sentinel", ("internet",), ((PUBLIC, "203.0.113.50"),), "ns-sentinel",
                    serves=frozenset({(80, "tcp"), (443, "tcp")}))  # fmt: skip


OPERATOR = Endpoint("operator", ("admin", "internet"), ((PUBLIC, "203.0.113.1"),), None)


def fake_network(
    open_ports: dict[tuple[str, str, int, str], str], tcp: dict | None = None, udp: dict | None = None
):
    """A runner answering `ss` from ``tcp``/``udp`` (namespace -> lines) and probes from
    ``open_ports`` ((source, address, port, protocol) -> outcome; anything else is blocked)."""
    namespaces = {e.namespace: e.name for e in (PROXY_1, APP_1, DB_1, SENTINEL, OPERATOR)}
    listening = {"-Hltn": tcp or {}, "-Hlun": udp or {}}

    def runner(namespace: str | None, argv: Sequence[str]) -> str:
        if argv[0] == "ss":
            return listening[argv[1]].get(namespace, "")
        source = namespaces[namespace]
        return json.dumps(
            [
                [a, p, proto, open_ports.get((source, a, p, proto), BLOCKED)]
                for a, p, proto in json.loads(argv[3])
            ]
        )

    return runner


def test_listening_ports_join_the_probe_list() -> None:
    runner = fake_network({}, tcp={"ns-db": "LISTEN 0 128 10.10.2.30:9999 0.0.0.0:*\n"})
    matrix = probe_matrix(TOPOLOGY, [APP_1], [DB_1], runner=runner)
    assert {p.port for p in matrix.probes} >= {9999, 5432, 22}


def test_a_declared_flow_that_connects_is_proof_and_a_blocked_one_a_violation() -> None:
    runner = fake_network({("app-1", "10.10.2.30", 5432, "tcp"): CONNECTED})
    probes = {(p.address, p.port): p for p in probe_matrix(TOPOLOGY, [APP_1], [DB_1], runner=runner).probes}
    assert probes[("10.10.2.30", 5432)].declared
    assert probes[("10.10.2.30", 5432)].violation is None
    assert probes[("10.10.2.30", 22)].violation == "declared flow blocked"


def test_an_undeclared_refusal_is_a_leak() -> None:
    """A RST means the packet passed every firewall: not declared, so a violation."""
    runner = fake_network({("proxy-1", "10.10.1.20", 5432, "tcp"): REFUSED})
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [APP_1], runner=runner)
    leak = next(p for p in matrix.probes if (p.address, p.port) == ("10.10.1.20", 5432))
    assert not leak.declared
    assert leak.violation == "undeclared connection refused"


def test_a_flow_on_the_wrong_network_is_not_declared() -> None:
    """app -> db is declared on the backend; the same port on another address is not."""
    runner = fake_network({("proxy-1", "10.10.1.20", 8443, "tcp"): CONNECTED})
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [APP_1], runner=runner)
    by_address = {(p.address, p.port): p for p in matrix.probes}
    assert by_address[("10.10.1.20", 8443)].declared
    assert not by_address[("10.10.2.20", 8443)].declared


@pytest.mark.parametrize(("outcome", "violation"), [(REFUSED, None), (BLOCKED, "declared flow blocked")])
def test_the_sentinel_proves_unserved_declared_ports_by_a_refusal(
    outcome: str, violation: str | None
) -> None:
    """The sentinel serves TCP 80/443 only; the proxy's declared NTP to "the internet" is proved
    by getting through the proxy's firewall (a refusal), and fails when blocked."""
    runner = fake_network(
        {("proxy-1", "203.0.113.50", 123, "udp"): outcome, ("proxy-1", "203.0.113.50", 80, "tcp"): CONNECTED},
        udp={"ns-app": "UNCONN 0 0 10.10.2.20:123 0.0.0.0:*\n"},
    )
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [SENTINEL, APP_1], runner=runner)
    to_sentinel = {(p.port, p.protocol): p for p in matrix.probes if p.destination == "sentinel"}
    assert to_sentinel[(80, "tcp")].violation is None
    assert to_sentinel[(123, "udp")].declared
    assert to_sentinel[(123, "udp")].violation == violation


def test_outside_endpoints_are_not_probed_against_each_other() -> None:
    matrix = probe_matrix(TOPOLOGY, [OPERATOR], [SENTINEL, PROXY_1], runner=fake_network({}))
    assert {p.destination for p in matrix.probes} == {"proxy-1"}

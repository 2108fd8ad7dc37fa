"""The segregation prober's verdicts, with a fake network: what counts as a leak, what as proof."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from tierwall.audit.report import load_segregation
from tierwall.segregation import (
    BLOCKED,
    CONNECTED,
    DELIVERED,
    ICMP,
    NOT_APPLICABLE,
    NOT_PROBED,
    OPEN_SILENT,
    PROBED,
    REFUSED,
    SILENT,
    Endpoint,
    _checksum,
    _echo_request,
    _witness_key,
    probe_matrix,
    resolve,
)
from tierwall.topology import APP, DB, MGMT, PROXY, PUBLIC, build_topology

TOPOLOGY = build_topology(app_count=1)
PROXY_1 = Endpoint("proxy-1", (PROXY,), ((PUBLIC, "203.0.113.10"), ("frontend", "10.10.1.10")), "ns-proxy")
APP_1 = Endpoint("app-1", (APP,), (("frontend", "10.10.1.20"), ("backend", "10.10.2.20")), "ns-app")
DB_1 = Endpoint("db-1", (DB,), (("backend", "10.10.2.30"),), "ns-db")
MGMT_1 = Endpoint("mgmt-1", (MGMT,), (("frontend", "10.10.1.40"),), "ns-mgmt")
SENTINEL = Endpoint("sentinel", ("internet",), ((PUBLIC, "203.0.113.50"),), "ns-sentinel",
                    serves=frozenset({(80, "tcp"), (443, "tcp")}))  # fmt: skip


OPERATOR = Endpoint("operator", ("admin", "internet"), ((PUBLIC, "203.0.113.1"),), None)


def fake_network(
    open_ports: dict[tuple[str, str, int, str], str],
    tcp: dict | None = None,
    udp: dict | None = None,
    sweeps: dict[tuple[str, str], dict[int, str]] | None = None,
):
    """A runner answering `ss` from ``tcp``/``udp`` (namespace -> lines), probes from
    ``open_ports`` ((source, address, port, protocol) -> the probe program's answer; anything
    else is blocked) and sweeps from ``sweeps`` ((source, address) -> ports not blocked)."""
    namespaces = {e.namespace: e.name for e in (PROXY_1, APP_1, DB_1, MGMT_1, SENTINEL, OPERATOR)}
    listening = {"-Hltn": tcp or {}, "-Hlun": udp or {}}
    RUNS.clear()

    def runner(namespace: str | None, argv: Sequence[str]) -> str:
        if argv[0] == "ss":
            return listening[argv[1]].get(namespace, "")
        source = namespaces[namespace]
        spec = json.loads(argv[-1])
        RUNS.append((source, spec))
        targets = [
            [a, p, proto, open_ports.get((source, a, p, proto), BLOCKED)]
            for a, p, proto, _ in spec["targets"]
        ]
        done = []
        for address, first, last in spec["sweeps"]:
            passed = (sweeps or {}).get((source, address), {})
            done.append({"address": address, "first": first, "last": last, "seconds": 0.1,
                         "blocked": last - first + 1 - len(passed), "passed": passed})  # fmt: skip
        return json.dumps({"targets": targets, "sweeps": done})

    return runner


RUNS: list[tuple[str, dict]] = []


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


# -- every declared flow probed ------------------------------------------------------------------


def test_declared_dns_is_tried_even_where_nothing_listens() -> None:
    """No sentinel serves DNS, yet the proxy's declared 53/udp and 53/tcp must be attempted."""
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [SENTINEL], runner=fake_network({}))
    tried = {(p.port, p.protocol) for p in matrix.probes if p.destination == "sentinel"}
    assert {(53, "udp"), (53, "tcp"), (123, "udp")} <= tried
    dns = {(c.flow.port, c.flow.protocol): c.status for c in matrix.coverage if c.flow.port == 53}
    assert dns == {(53, "udp"): PROBED, (53, "tcp"): PROBED}


def test_a_declared_flow_without_its_source_is_reported_not_probed() -> None:
    """Without the operator nobody in the admin CIDRs tries SSH to the bastion: not proved."""
    hosts = [PROXY_1, APP_1, DB_1, MGMT_1]
    matrix = probe_matrix(TOPOLOGY, [*hosts, SENTINEL], [SENTINEL, *hosts], runner=fake_network({}))
    unprobed = [c.flow for c in matrix.not_probed]
    assert [(f.source, f.destination, f.port) for f in unprobed] == [("admin", "proxy", 22)]
    assert len(matrix.coverage) == len(TOPOLOGY.flows)


def test_a_host_left_out_leaves_every_flow_of_its_tier_not_probed() -> None:
    """A management host nobody probes from or to proves none of its flows: each is reported."""
    endpoints = [OPERATOR, SENTINEL, PROXY_1, APP_1, DB_1]
    matrix = probe_matrix(TOPOLOGY, endpoints, endpoints[1:], runner=fake_network({}))
    unprobed = {c.flow.key for c in matrix.not_probed}
    assert unprobed == {f.key for f in TOPOLOGY.flows if MGMT in (f.source, f.destination)}
    assert len(unprobed) == 5


def test_with_every_endpoint_every_declared_flow_is_probed() -> None:
    endpoints = [OPERATOR, SENTINEL, PROXY_1, APP_1, DB_1, MGMT_1]
    matrix = probe_matrix(TOPOLOGY, endpoints, endpoints[1:], runner=fake_network({}))
    assert matrix.not_probed == []
    assert {c.status for c in matrix.coverage} == {PROBED}


# -- ICMP ------------------------------------------------------------------------------------------


def test_every_address_gets_an_echo_probe_and_an_answer_is_a_violation() -> None:
    runner = fake_network({("proxy-1", "10.10.1.20", 0, ICMP): CONNECTED})
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [APP_1], runner=runner)
    echoes = {p.address: p for p in matrix.probes if p.protocol == ICMP}
    assert set(echoes) == {"10.10.1.20", "10.10.2.20"}
    assert echoes["10.10.1.20"].violation == "undeclared connection connected"
    assert echoes["10.10.2.20"].violation is None


def test_an_echo_that_got_through_unanswered_is_a_violation_too() -> None:
    runner = fake_network({("proxy-1", "10.10.1.20", 0, ICMP): DELIVERED})
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [APP_1], runner=runner)
    (echo,) = [p for p in matrix.probes if p.protocol == ICMP and p.address == "10.10.1.20"]
    assert echo.outcome == OPEN_SILENT
    assert echo.violation == "undeclared connection open-silent"


# -- UDP silence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "listener", "outcome"),
    [
        (DELIVERED, True, OPEN_SILENT),  # through the firewall, the listener kept silent
        (DELIVERED, False, REFUSED),  # through the firewall, port-unreachable lost to the rate limit
        (SILENT, True, OPEN_SILENT),  # unwitnessed silence in front of a listener proves no drop
        (SILENT, False, BLOCKED),  # an accepting firewall would have let port-unreachable out
        (BLOCKED, True, BLOCKED),
        (CONNECTED, False, CONNECTED),
    ],
)
def test_silence_is_read_with_the_witness_and_the_listeners(
    answer: str, listener: bool, outcome: str
) -> None:
    assert resolve(answer, listener) == outcome


def test_an_undeclared_silent_udp_listener_that_got_the_datagram_is_a_violation() -> None:
    runner = fake_network(
        {("proxy-1", "10.10.1.20", 5353, "udp"): DELIVERED},
        udp={"ns-app": "UNCONN 0 0 0.0.0.0:5353 0.0.0.0:*\nUNCONN 0 0 127.0.0.1:323 0.0.0.0:*\n"},
    )
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [APP_1], runner=runner)
    probes = {(p.address, p.port): p for p in matrix.probes if p.protocol == "udp"}
    assert probes[("10.10.1.20", 5353)].listener
    assert probes[("10.10.1.20", 5353)].violation == "undeclared connection open-silent"
    # Only on loopback: not a listener for the host's own addresses.
    assert not probes[("10.10.1.20", 323)].listener


def test_a_declared_ntp_flow_that_got_through_to_a_silent_server_is_not_proof() -> None:
    """app -> proxy 123/udp is declared and chrony should answer: silence is a broken flow."""
    runner = fake_network(
        {("app-1", "10.10.1.10", 123, "udp"): DELIVERED},
        udp={"ns-proxy": "UNCONN 0 0 0.0.0.0:123 0.0.0.0:*\n"},
    )
    matrix = probe_matrix(TOPOLOGY, [APP_1], [PROXY_1], runner=runner)
    (ntp,) = [p for p in matrix.probes if (p.address, p.port, p.protocol) == ("10.10.1.10", 123, "udp")]
    assert ntp.declared
    assert ntp.violation == "declared flow open-silent"


def test_every_destination_namespace_is_witnessed() -> None:
    probe_matrix(TOPOLOGY, [PROXY_1], [APP_1, SENTINEL], runner=fake_network({}))
    ((_, spec),) = RUNS
    assert spec["witness"] == ["/run/netns/ns-app", "/run/netns/ns-sentinel"]
    assert {index for *_, index in spec["targets"]} == {0, 1}


def test_the_witness_reads_the_keys_the_probes_carry() -> None:
    udp = _ipv4(17, "10.10.1.10", "10.10.1.20") + struct.pack("!HHHH", 40000, 5353, 8, 0)
    assert _witness_key(udp) == ("udp", "10.10.1.10", "10.10.1.20", 40000, 5353)
    echo = _ipv4(1, "10.10.1.10", "10.10.1.20") + _echo_request(4, 77, 3)
    assert _witness_key(echo) == ("icmp", "10.10.1.20", 77, 3)
    assert _checksum(_echo_request(4, 77, 3)) == 0  # a valid ICMP checksum sums to zero


def _ipv4(protocol: int, src: str, dst: str) -> bytes:
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 0, 0, 0, 64, protocol, 0)
        + socket.inet_aton(src)
        + socket.inet_aton(dst)
    )


# -- the full TCP range proxy -> db ----------------------------------------------------------------


def test_the_proxy_sweeps_every_tcp_port_of_every_db_address_and_no_other_pair() -> None:
    endpoints = [PROXY_1, APP_1, DB_1]
    matrix = probe_matrix(TOPOLOGY, endpoints, endpoints, runner=fake_network({}))
    assert [(s.source, s.destination, s.address, s.first, s.last) for s in matrix.sweeps] == [
        ("proxy-1", "db-1", "10.10.2.30", 1, 65535)
    ]
    (sweep,) = matrix.sweeps
    assert sweep.complete
    assert sweep.blocked == 65535
    assert sweep.violations == []


def test_one_port_through_in_the_sweep_is_a_violation() -> None:
    runner = fake_network({}, sweeps={("proxy-1", "10.10.2.30"): {"31337": REFUSED}})
    (sweep,) = probe_matrix(TOPOLOGY, [PROXY_1], [DB_1], runner=runner).sweeps
    assert sweep.blocked == 65534
    assert sweep.violations == ["31337/tcp undeclared connection refused"]


# -- IPv6 on the public side -----------------------------------------------------------------------


def test_a_proxy_without_public_ipv6_is_recorded_not_applicable_with_the_reason() -> None:
    matrix = probe_matrix(
        TOPOLOGY, [SENTINEL], [PROXY_1], runner=fake_network({}), no_ipv6_reason="lab is IPv4"
    )
    assert matrix.ipv6 == [{"endpoint": "proxy-1", "addresses": [], "status": NOT_APPLICABLE,
                            "reason": "lab is IPv4"}]  # fmt: skip


def test_a_public_ipv6_address_is_probed_like_any_other() -> None:
    proxy = Endpoint("proxy-1", (PROXY,), ((PUBLIC, "203.0.113.10"), (PUBLIC, "2001:db8::10")), "ns-proxy")
    runner = fake_network({("sentinel", "2001:db8::10", 443, "tcp"): CONNECTED})
    matrix = probe_matrix(TOPOLOGY, [SENTINEL], [proxy], runner=runner)
    https6 = [p for p in matrix.probes if (p.address, p.port) == ("2001:db8::10", 443)]
    assert [(p.declared, p.violation) for p in https6] == [(True, None)]
    assert matrix.ipv6[0]["status"] == PROBED


# -- evidence for the audit ------------------------------------------------------------------------


def test_the_evidence_carries_sweeps_coverage_and_ipv6_and_the_report_counts_them(tmp_path: Path) -> None:
    runner = fake_network({}, sweeps={("proxy-1", "10.10.2.30"): {"5432": CONNECTED}})
    matrix = probe_matrix(TOPOLOGY, [PROXY_1], [DB_1, PROXY_1], runner=runner)
    evidence = json.loads(matrix.write(tmp_path / "segregation.json").read_text())
    assert {"probes", "sweeps", "coverage", "ipv6", "generated"} <= set(evidence)
    assert evidence["sweeps"][0]["violations"] == ["5432/tcp undeclared connection connected"]
    summary = load_segregation(tmp_path / "segregation.json")
    assert summary is not None
    not_probed = sum(1 for c in evidence["coverage"] if c["status"] == NOT_PROBED)
    assert not_probed == len(TOPOLOGY.flows)  # the proxy probed only the db: no flow of the matrix
    assert summary["violations"] == 1 + not_probed
    assert summary["sweeps"] == ["proxy-1 -> db-1 10.10.2.30 tcp 1-65535: 65534 of 65535 blocked in 0.1 s"]

"""The segregation prober for real: its probe program between throw-away network namespaces.

A "proxy" namespace is joined by one veth each to two hosts of its own (addresses only inside
these namespaces, nothing reaches this machine's other interfaces):

* ``db``: nftables drops every packet on input; a UDP socket listens on 5353 behind it. Every
  one of the 65535 TCP ports must come back blocked within the sweep's budget, echo and UDP too,
  even the port where a socket listens (the witness proves the drop).
* ``app``: no firewall; a TCP listener on the app port (connected), a UDP socket on 5353 that
  never answers (open-silent, not blocked), the kernel answering echo (connected: a violation,
  since the flow matrix declares no ICMP) and closed UDP ports (refused).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tierwall.segregation import (
    BLOCKED,
    CONNECTED,
    ICMP,
    OPEN_SILENT,
    REFUSED,
    Endpoint,
    Matrix,
    probe_matrix,
    run_in_namespace,
)
from tierwall.topology import APP, BACKEND, DB, FRONTEND, PROXY, build_topology

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="namespaces, veths and nftables need root, ip and nft",
)

TOPOLOGY = build_topology(app_count=1)
PREFIX = f"twtest-seg{os.getpid()}"
SOURCE_NS, DB_NS, APP_NS = f"{PREFIX}-p", f"{PREFIX}-d", f"{PREFIX}-a"
# Private addresses that exist only inside the namespaces of this test.
SOURCE_TO_DB, DB_ADDRESS = "10.250.2.10", "10.250.2.30"
SOURCE_TO_APP, APP_ADDRESS = "10.250.1.10", "10.250.1.20"
SILENT_UDP = 5353
# The whole sweep of 65535 dropped SYNs, on the 2-core development machine: 4.8 s measured.
SWEEP_BUDGET = 15.0

LISTEN_TCP = "import socket,time; s=socket.create_server(('{a}',{p})); time.sleep(600)"
# Bound and never read: a service that ignores what it is sent.
LISTEN_UDP_SILENT = (
    "import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
    "s.bind(('{a}',{p})); time.sleep(600)"
)
DROP_ALL = "add table inet t; add chain inet t input { type filter hook input priority filter; policy drop; }"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def link(namespace: str, mine: str, peer_ns: str, peer: str, name: str) -> None:
    """A veth from the source namespace to ``peer_ns``, a /24 inside the two namespaces only."""
    sh("ip", "link", "add", f"{name}s", "netns", SOURCE_NS, "type", "veth", "peer", "name", f"{name}d",
       "netns", peer_ns)  # fmt: skip
    for ns, dev, address in ((SOURCE_NS, f"{name}s", mine), (peer_ns, f"{name}d", peer)):
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")


def background(namespace: str, code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", code])


def wait_listening(namespace: str, flag: str, port: int) -> None:
    for _ in range(100):
        out = subprocess.run(["ip", "netns", "exec", namespace, "ss", flag], capture_output=True, text=True)
        if f":{port} " in out.stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} in {namespace}")


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (SOURCE_NS, DB_NS, APP_NS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        link(SOURCE_NS, SOURCE_TO_DB, DB_NS, DB_ADDRESS, f"{PREFIX[-8:]}b")
        link(SOURCE_NS, SOURCE_TO_APP, APP_NS, APP_ADDRESS, f"{PREFIX[-8:]}f")
        sh("ip", "netns", "exec", DB_NS, "nft", DROP_ALL)
        processes.append(background(DB_NS, LISTEN_UDP_SILENT.format(a=DB_ADDRESS, p=SILENT_UDP)))
        processes.append(background(APP_NS, LISTEN_UDP_SILENT.format(a=APP_ADDRESS, p=SILENT_UDP)))
        processes.append(background(APP_NS, LISTEN_TCP.format(a=APP_ADDRESS, p=TOPOLOGY.ports.app)))
        wait_listening(DB_NS, "-Hlun", SILENT_UDP)
        wait_listening(APP_NS, "-Hlun", SILENT_UDP)
        wait_listening(APP_NS, "-Hltn", TOPOLOGY.ports.app)
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for ns in (SOURCE_NS, DB_NS, APP_NS):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


_PROBED: list[Matrix] = []


@pytest.fixture
def matrix(network: None) -> Matrix:
    if not _PROBED:
        proxy = Endpoint("proxy-1", (PROXY,), ((FRONTEND, SOURCE_TO_APP),), SOURCE_NS)
        app = Endpoint("app-1", (APP,), ((FRONTEND, APP_ADDRESS),), APP_NS)
        db = Endpoint("db-1", (DB,), ((BACKEND, DB_ADDRESS),), DB_NS)
        _PROBED.append(probe_matrix(TOPOLOGY, [proxy], [app, db]))
    return _PROBED[0]


def outcome(matrix: Matrix, destination: str, port: int, protocol: str) -> str:
    (probe,) = [
        p for p in matrix.probes if (p.destination, p.port, p.protocol) == (destination, port, protocol)
    ]
    return probe.outcome


def test_the_full_tcp_range_to_a_dropping_host_is_blocked_within_budget(matrix: Matrix) -> None:
    (sweep,) = matrix.sweeps
    print(f"full-range sweep of {sweep.ports} dropped SYNs: {sweep.seconds:.2f} s")
    assert (sweep.source, sweep.destination, sweep.address) == ("proxy-1", "db-1", DB_ADDRESS)
    assert sweep.complete
    assert sweep.blocked == 65535
    assert sweep.violations == []
    assert sweep.seconds < SWEEP_BUDGET


def test_a_silent_udp_listener_behind_an_accepting_firewall_is_open_silent(matrix: Matrix) -> None:
    assert outcome(matrix, "app-1", SILENT_UDP, "udp") == OPEN_SILENT


def test_a_silent_udp_listener_behind_a_dropping_firewall_is_blocked(matrix: Matrix) -> None:
    """The same silence, told apart by the witness in the destination's namespace."""
    assert outcome(matrix, "db-1", SILENT_UDP, "udp") == BLOCKED


def test_a_closed_udp_port_behind_no_firewall_is_refused(matrix: Matrix) -> None:
    assert outcome(matrix, "app-1", TOPOLOGY.ports.dns, "udp") == REFUSED


def test_a_tcp_listener_connects_and_a_declared_flow_is_proved(matrix: Matrix) -> None:
    (probe,) = [p for p in matrix.probes if (p.destination, p.port, p.protocol) == ("app-1", 8443, "tcp")]
    assert probe.outcome == CONNECTED
    assert probe.declared
    assert probe.violation is None


def test_echo_is_answered_by_an_open_host_and_counts_as_a_violation(matrix: Matrix) -> None:
    assert outcome(matrix, "app-1", 0, ICMP) == CONNECTED
    assert outcome(matrix, "db-1", 0, ICMP) == BLOCKED
    (echo,) = [p for p in matrix.probes if p.destination == "app-1" and p.protocol == ICMP]
    assert echo.violation == "undeclared connection connected"


def test_every_attempt_to_the_dropping_host_is_blocked(matrix: Matrix) -> None:
    to_db = [p for p in matrix.probes if p.destination == "db-1"]
    assert to_db
    assert {p.outcome for p in to_db} == {BLOCKED}


def test_a_sweep_of_an_open_host_sees_every_answer_within_its_timeout(network: None) -> None:
    """The other side of the budget: 65534 refusals and one connection, each batch of thousands
    of SYNs answered before the sweep's timeout, so a short timeout never hides a way in."""
    code = (
        "import json; from tierwall.segregation import sweep; "
        f"print(json.dumps(sweep('{APP_ADDRESS}', 1, 65535, 0.5)))"
    )
    result = json.loads(run_in_namespace(SOURCE_NS, [sys.executable, "-c", code]))
    print(f"full-range sweep of an open host: {result['seconds']:.2f} s")
    assert result["blocked"] == 0
    outcomes = Counter(result["passed"].values())
    assert outcomes == {REFUSED: 65534, CONNECTED: 1}
    assert result["passed"][str(TOPOLOGY.ports.app)] == CONNECTED

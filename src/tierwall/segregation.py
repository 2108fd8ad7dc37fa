"""The segregation matrix: try every connection between every pair of endpoints, compare with the flows.

For each ordered pair of endpoints (operator, sentinel, each proxy, each app, the db), every
address of the destination and every TCP and UDP port that any destination listens on
(discovered live) plus a fixed TCP probe list, a connection is attempted from inside the
source's network namespace, so the source host's own firewall (its output chain) applies
exactly as for its own processes.

Outcomes: ``connected`` (handshake completed), ``refused`` (a RST: the packet passed every
firewall but nothing listens), ``blocked`` (timeout, unreachable, no route). A declared flow
must connect; any other attempt must be blocked — ``refused`` on an undeclared port is a
violation too, because the packet got through.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tierwall.topology import ADMIN, INTERNET, PUBLIC, Topology

CONNECTED, REFUSED, BLOCKED = "connected", "refused", "blocked"

# Ports probed even when nothing listens on them: every service the architecture knows of,
# so a service that should not exist on a host, or a firewall hole, shows up.
def fixed_probe_ports(topology: Topology) -> tuple[int, ...]:
    p = topology.ports
    return tuple(sorted({p.ssh, p.http, p.https, p.postgres, p.squid, p.apt_cacher, p.app}))


# Runs inside the source namespace with the host's python3: standard library only.
_PROBE = r"""
import json, socket, sys, concurrent.futures as cf
targets = json.loads(sys.argv[1]); timeout = float(sys.argv[2])
# An NTP client request: the only UDP service the architecture runs (chrony) answers it.
NTP = b"\x1b" + 47 * b"\0"
def tcp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(timeout)
    try:
        s.connect((addr, port)); return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "blocked"
    finally:
        s.close()
def udp(addr, port):
    # A reply is "connected", an ICMP port-unreachable "refused" (the datagram got through);
    # silence is "blocked" (a silent service and a drop look alike: only NTP is expected to answer).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
    try:
        s.connect((addr, port)); s.send(NTP if port == 123 else b"\0"); s.recv(512); return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "blocked"
    finally:
        s.close()
def probe(t):
    addr, port, proto = t
    return [addr, port, proto, (tcp if proto == "tcp" else udp)(addr, port)]
with cf.ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""

@dataclass(frozen=True)
class Endpoint:
    """Something that opens or accepts connections: a host, the operator, the sentinel."""

    name: str
    roles: tuple[str, ...]  # a tier, or internet/admin for outside endpoints
    addresses: tuple[tuple[str, str], ...]  # (network, address); network "public" for outside
    namespace: str | None  # network namespace to run probes in; None = this (root) namespace
    # The (port, protocol) pairs an outside stand-in really serves (the sentinel: TCP 80/443).
    # None: every declared flow to it must connect. Otherwise a declared flow to a port it does
    # not serve is proved by getting through the source's firewall (a refusal comes back).
    serves: frozenset[tuple[int, str]] | None = None


@dataclass(frozen=True)
class Probe:
    source: str
    destination: str
    address: str
    network: str
    port: int
    protocol: str
    declared: bool
    outcome: str
    purpose: str = ""
    served: bool = True  # the destination runs a service there (see Endpoint.serves)

    @property
    def connected(self) -> bool:
        return self.outcome == CONNECTED

    @property
    def violation(self) -> str | None:
        if self.declared and self.outcome == BLOCKED:
            return "declared flow blocked"
        if self.declared and self.served and self.outcome != CONNECTED:
            return f"declared flow {self.outcome}"
        if not self.declared and self.outcome != BLOCKED:
            return f"undeclared connection {self.outcome}"
        return None


@dataclass
class Matrix:
    probes: list[Probe] = field(default_factory=list)
    generated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def violations(self) -> list[Probe]:
        return [p for p in self.probes if p.violation]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        probes = [{**asdict(p), "connected": p.connected, "violation": p.violation} for p in self.probes]
        path.write_text(json.dumps({"generated": self.generated, "probes": probes}, indent=1))
        return path


def declared_flow(
    topology: Topology, source: Endpoint, destination: Endpoint, network: str, port: int, protocol: str
) -> str | None:
    """The purpose of the flow allowing this attempt, or None when the matrix does not declare it."""
    for flow in topology.flows:
        if (flow.port, flow.protocol, flow.network) != (port, protocol, network):
            continue
        if flow.source in source.roles and flow.destination in destination.roles:
            return flow.purpose
    return None


Runner = Callable[[str | None, Sequence[str]], str]


def run_in_namespace(namespace: str | None, argv: Sequence[str]) -> str:
    command = list(argv) if namespace is None else ["ip", "netns", "exec", namespace, *argv]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout


def listening_ports(endpoint: Endpoint, runner: Runner = run_in_namespace) -> set[tuple[int, str]]:
    """(port, protocol) pairs the endpoint listens on, from ss inside its namespace."""
    ports: set[tuple[int, str]] = set()
    for protocol, flag in (("tcp", "-Hltn"), ("udp", "-Hlun")):
        for line in runner(endpoint.namespace, ["ss", flag]).splitlines():
            fields = line.split()
            if len(fields) >= 4:
                ports.add((int(fields[3].rsplit(":", 1)[1]), protocol))
    return ports


def probe_matrix(
    topology: Topology,
    sources: Sequence[Endpoint],
    destinations: Sequence[Endpoint],
    extra_ports: Iterable[int] = (),
    timeout: float = 1.5,
    runner: Runner = run_in_namespace,
) -> Matrix:
    """Probe every (source, destination) pair but a host with itself and outside with outside
    (the lab's internet is not ours to segregate)."""
    ports = {(port, "tcp") for port in (*fixed_probe_ports(topology), *extra_ports)}
    for endpoint in destinations:
        ports |= listening_ports(endpoint, runner)
    matrix = Matrix()
    for source in sources:
        plan: list[tuple[Endpoint, str, str, tuple[int, str]]] = []
        for destination in destinations:
            if destination.name == source.name or (_outside(source) and _outside(destination)):
                continue
            for network, address in destination.addresses:
                plan.extend((destination, network, address, port) for port in sorted(ports))
        if not plan:
            continue
        targets = [[address, port, protocol] for _, _, address, (port, protocol) in plan]
        out = runner(source.namespace, ["python3", "-c", _PROBE, json.dumps(targets), str(timeout)])
        outcomes = {(a, p, proto): o for a, p, proto, o in json.loads(out)}
        for destination, network, address, (port, protocol) in plan:
            purpose = declared_flow(topology, source, destination, network, port, protocol)
            matrix.probes.append(
                Probe(
                    source=source.name,
                    destination=destination.name,
                    address=address,
                    network=network,
                    port=port,
                    protocol=protocol,
                    declared=purpose is not None,
                    outcome=outcomes[(address, port, protocol)],
                    purpose=purpose or "",
                    served=destination.serves is None or (port, protocol) in destination.serves,
                )
            )
    return matrix


def _outside(endpoint: Endpoint) -> bool:
    return set(endpoint.roles) <= {ADMIN, INTERNET}


def outside_roles(is_operator: bool) -> tuple[str, ...]:
    """The operator is on the internet and in the admin CIDRs; the sentinel only on the internet."""
    return (ADMIN, INTERNET) if is_operator else (INTERNET,)


__all__ = ["BLOCKED", "CONNECTED", "PUBLIC", "REFUSED", "Endpoint", "Matrix", "Probe", "probe_matrix"]

"""The segregation matrix: try every connection between every pair of endpoints, compare with the flows.

For each ordered pair of endpoints (operator, sentinel, each proxy, each app, the db, the management
host), every address of the destination is tried from inside the source's network namespace, so the
source host's own firewall (its output chain) applies exactly as for its own processes:

* every TCP and UDP port any destination listens on (discovered live with ``ss``), every port
  and protocol the flow matrix declares (so DNS and NTP are tried even where nothing listens),
  and a fixed TCP list of every service the architecture knows of;
* an ICMP echo request: the flow matrix declares no ICMP, so any echo answered between two
  endpoints is a violation;
* for the tier pairs the policy separates most strictly (proxy -> db), every TCP port 1-65535
  (a *sweep*): "the proxy cannot reach the db on any port" is proved on every port, not on a list.

Outcomes: ``connected`` (handshake, UDP reply or echo reply), ``refused`` (a RST or an ICMP
port-unreachable: the packet passed every firewall but nothing listens), ``open-silent`` (the
packet passed every firewall and a listener, or the kernel for echo, stayed silent), ``blocked``
(a firewall dropped it, or no route). A declared flow must connect; any other attempt must be
blocked.

UDP and ICMP silence is ambiguous: a firewall drop and a listener that ignores the datagram look
alike from the source. So while a source probes, the probe program holds a *witness* in each
destination's namespace: raw IPv4 sockets, which the kernel hands a copy of every UDP datagram and
ICMP message after the input hook has accepted it. Silence the witness saw is a packet that got
through; silence it did not see is a drop. A datagram that got through to a port nothing listens
on counts as refused (its port-unreachable was only lost to the kernel's ICMP rate limit).

The probe program is this module itself (``python -m tierwall.segregation SPEC``), run in the
source's namespace with this interpreter; its side uses the standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierwall.topology import ADMIN, DB, INTERNET, PROXY, PUBLIC, Flow, Topology

CONNECTED, REFUSED, BLOCKED, OPEN_SILENT = "connected", "refused", "blocked", "open-silent"
# What the probe program answers for UDP/ICMP silence; the controller decides with ss's listeners.
DELIVERED = "delivered"  # silent, but the destination's witness saw the packet pass its firewall
SILENT = "silent"  # silent, and no witness could watch (an IPv6 address)
ICMP = "icmp"
ECHO = 0  # ICMP has no port: an echo probe carries port 0
TCP_RANGE = (1, 65535)
PROBED, NOT_PROBED, NOT_APPLICABLE = "probed", "not probed", "not applicable in the lab"
# Tier pairs swept over every TCP port: the policy's core promise (VII.3) is about proxy -> db.
FULL_RANGE_PAIRS: tuple[tuple[str, str], ...] = ((PROXY, DB),)


# Ports probed even when nothing listens on them: every service the architecture knows of,
# so a service that should not exist on a host, or a firewall hole, shows up.
def fixed_probe_ports(topology: Topology) -> tuple[int, ...]:
    p = topology.ports
    return tuple(sorted({p.ssh, p.http, p.https, p.postgres, p.squid, p.apt_cacher, p.app, p.log_archive}))


def probe_ports(topology: Topology, extra_tcp: Iterable[int] = ()) -> set[tuple[int, str]]:
    """The fixed TCP list and every (port, protocol) of the flow matrix: a declared flow to a
    destination where nothing listens (DNS to the sentinel) is still tried."""
    ports = {(port, "tcp") for port in (*fixed_probe_ports(topology), *extra_tcp)}
    return ports | {(flow.port, flow.protocol) for flow in topology.flows}


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
    listener: bool = False  # ss showed a socket bound to this address and port at the destination

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


@dataclass(frozen=True)
class Sweep:
    """Every TCP port of a range tried from one source to one address."""

    source: str
    destination: str
    address: str
    network: str
    first: int
    last: int
    blocked: int
    passed: dict[int, str]  # port -> outcome, for every port that was not blocked
    seconds: float
    declared: tuple[int, ...] = ()  # ports of the range the flow matrix declares for this pair
    protocol: str = "tcp"

    @property
    def ports(self) -> int:
        return self.last - self.first + 1

    @property
    def complete(self) -> bool:
        """Every port of the range has an outcome: none was skipped."""
        return self.blocked + len(self.passed) == self.ports

    @property
    def violations(self) -> list[str]:
        return [
            f"{port}/{self.protocol} undeclared connection {outcome}"
            for port, outcome in sorted(self.passed.items())
            if port not in self.declared
        ]


@dataclass(frozen=True)
class Coverage:
    """One declared flow and how many attempts of the matrix tested it."""

    flow: Flow
    probes: int

    @property
    def status(self) -> str:
        return PROBED if self.probes else NOT_PROBED


@dataclass
class Matrix:
    probes: list[Probe] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    # Per endpoint with a public side: its IPv6 addresses probed, or why it has none.
    ipv6: list[dict[str, Any]] = field(default_factory=list)
    generated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def violations(self) -> list[Probe]:
        return [p for p in self.probes if p.violation]

    @property
    def not_probed(self) -> list[Coverage]:
        return [c for c in self.coverage if c.status == NOT_PROBED]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        probes = [{**asdict(p), "connected": p.connected, "violation": p.violation} for p in self.probes]
        sweeps = [
            {**asdict(s), "ports": s.ports, "complete": s.complete, "violations": s.violations}
            for s in self.sweeps
        ]
        coverage = [{**asdict(c.flow), "probes": c.probes, "status": c.status} for c in self.coverage]
        document = {
            "generated": self.generated,
            "probes": probes,
            "sweeps": sweeps,
            "coverage": coverage,
            "ipv6": self.ipv6,
        }
        path.write_text(json.dumps(document, indent=1))
        return path


def matching_flow(
    topology: Topology, source: Endpoint, destination: Endpoint, network: str, port: int, protocol: str
) -> Flow | None:
    """The flow of the matrix allowing this attempt, or None when the matrix does not declare it."""
    for flow in topology.flows:
        if (flow.port, flow.protocol, flow.network) != (port, protocol, network):
            continue
        if flow.source in source.roles and flow.destination in destination.roles:
            return flow
    return None


def declared_flow(
    topology: Topology, source: Endpoint, destination: Endpoint, network: str, port: int, protocol: str
) -> str | None:
    """The purpose of the flow allowing this attempt, or None when the matrix does not declare it."""
    flow = matching_flow(topology, source, destination, network, port, protocol)
    return flow.purpose if flow else None


Runner = Callable[[str | None, Sequence[str]], str]


def run_in_namespace(namespace: str | None, argv: Sequence[str]) -> str:
    command = list(argv) if namespace is None else ["ip", "netns", "exec", namespace, *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:6]} failed in namespace {namespace}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def listeners(endpoint: Endpoint, runner: Runner = run_in_namespace) -> set[tuple[str, int, str]]:
    """(bound address, port, protocol) of every listening socket, from ss inside its namespace."""
    found: set[tuple[str, int, str]] = set()
    for protocol, flag in (("tcp", "-Hltn"), ("udp", "-Hlun")):
        for line in runner(endpoint.namespace, ["ss", flag]).splitlines():
            fields = line.split()
            if len(fields) >= 4:
                host, port = fields[3].rsplit(":", 1)
                found.add((host.strip("[]").split("%")[0], int(port), protocol))
    return found


def listening_ports(endpoint: Endpoint, runner: Runner = run_in_namespace) -> set[tuple[int, str]]:
    """(port, protocol) pairs the endpoint listens on, from ss inside its namespace."""
    return {(port, protocol) for _, port, protocol in listeners(endpoint, runner)}


def listens_on(bound: set[tuple[str, int, str]], address: str, port: int, protocol: str) -> bool:
    """A socket that would receive a datagram for address:port (its own address or a wildcard)."""
    return any((host, port, protocol) in bound for host in (address, "0.0.0.0", "*", "::"))


def resolve(answer: str, listener: bool) -> str:
    """The outcome of one attempt from the probe program's answer and the destination's listeners."""
    if answer == DELIVERED:
        # Through every firewall: a listener kept silent, or nothing listened and the kernel's
        # port-unreachable fell to its ICMP rate limit (the same fact as a refusal).
        return OPEN_SILENT if listener else REFUSED
    if answer == SILENT:
        # Unwitnessed: an accepting firewall in front of a closed port answers port-unreachable,
        # so silence there is a drop; in front of a listener silence proves nothing: not blocked.
        return OPEN_SILENT if listener else BLOCKED
    return answer


@dataclass(frozen=True)
class _Attempt:
    destination: Endpoint
    network: str
    address: str
    port: int
    protocol: str


def probe_matrix(
    topology: Topology,
    sources: Sequence[Endpoint],
    destinations: Sequence[Endpoint],
    extra_ports: Iterable[int] = (),
    timeout: float = 1.5,
    runner: Runner = run_in_namespace,
    full_range: Iterable[tuple[str, str]] = FULL_RANGE_PAIRS,
    sweep_timeout: float = 0.5,
    no_ipv6_reason: str = "no IPv6 address on the public side",
    before_each: Callable[[], None] | None = None,
) -> Matrix:
    """Probe every (source, destination) pair but a host with itself and outside with outside
    (the lab's internet is not ours to segregate). ``before_each`` runs right before each source
    sends anything (the lab re-checks its containment there)."""
    bound = {e.name: listeners(e, runner) for e in destinations}
    ports = probe_ports(topology, extra_ports)
    for found in bound.values():
        ports |= {(port, protocol) for _, port, protocol in found}
    pairs = tuple(full_range)
    matrix, tested = Matrix(), Counter[Flow]()
    for source in sources:
        plan = _plan(source, destinations, ports)
        if not plan:
            continue
        sweeps = _sweep_plan(source, destinations, pairs)
        if before_each is not None:
            before_each()
        spec = _spec(plan, sweeps, destinations, timeout, sweep_timeout, topology.ports.ntp)
        answer = json.loads(runner(source.namespace, [sys.executable, "-m", __name__, json.dumps(spec)]))
        for attempt, (*_, raw) in zip(plan, answer["targets"], strict=True):
            probe, flow = _probe(topology, source, attempt, raw, bound[attempt.destination.name])
            matrix.probes.append(probe)
            if flow is not None:
                tested[flow] += 1
        for attempt, result in zip(sweeps, answer["sweeps"], strict=True):
            matrix.sweeps.append(_sweep(topology, source, attempt, result))
    matrix.coverage = [Coverage(f, tested[f]) for f in topology.flows]
    matrix.ipv6 = public_ipv6(destinations, no_ipv6_reason)
    return matrix


def _plan(source: Endpoint, destinations: Sequence[Endpoint], ports: set[tuple[int, str]]) -> list[_Attempt]:
    plan: list[_Attempt] = []
    for destination in destinations:
        if destination.name == source.name or (_outside(source) and _outside(destination)):
            continue
        for network, address in destination.addresses:
            plan.extend(_Attempt(destination, network, address, p, proto) for p, proto in sorted(ports))
            plan.append(_Attempt(destination, network, address, ECHO, ICMP))
    return plan


def _sweep_plan(
    source: Endpoint, destinations: Sequence[Endpoint], pairs: tuple[tuple[str, str], ...]
) -> list[_Attempt]:
    return [
        _Attempt(destination, network, address, 0, "tcp")
        for destination in destinations
        if destination.name != source.name
        and any(s in source.roles and d in destination.roles for s, d in pairs)
        for network, address in destination.addresses
    ]


def _netns_path(namespace: str | None) -> str:
    return "/proc/1/ns/net" if namespace is None else f"/run/netns/{namespace}"


def _spec(
    plan: list[_Attempt],
    sweeps: list[_Attempt],
    destinations: Sequence[Endpoint],
    timeout: float,
    sweep_timeout: float,
    ntp: int,
) -> dict[str, Any]:
    witnessed = [d for d in destinations if any(a.destination is d for a in plan)]
    index = {d.name: i for i, d in enumerate(witnessed)}
    return {
        "timeout": timeout,
        "sweep_timeout": sweep_timeout,
        "ntp": ntp,
        "witness": [_netns_path(d.namespace) for d in witnessed],
        "targets": [[a.address, a.port, a.protocol, index[a.destination.name]] for a in plan],
        "sweeps": [[a.address, *TCP_RANGE] for a in sweeps],
    }


def _probe(
    topology: Topology, source: Endpoint, attempt: _Attempt, raw: str, bound: set[tuple[str, int, str]]
) -> tuple[Probe, Flow | None]:
    destination = attempt.destination
    flow = matching_flow(topology, source, destination, attempt.network, attempt.port, attempt.protocol)
    # For echo the kernel itself is the listener: a delivered, unanswered echo got through.
    listener = attempt.protocol == ICMP or listens_on(bound, attempt.address, attempt.port, attempt.protocol)
    probe = Probe(
        source=source.name,
        destination=destination.name,
        address=attempt.address,
        network=attempt.network,
        port=attempt.port,
        protocol=attempt.protocol,
        declared=flow is not None,
        outcome=resolve(raw, listener),
        purpose=flow.purpose if flow else "",
        served=destination.serves is None or (attempt.port, attempt.protocol) in destination.serves,
        listener=listener and attempt.protocol != ICMP,
    )
    return probe, flow


def _sweep(topology: Topology, source: Endpoint, attempt: _Attempt, result: dict[str, Any]) -> Sweep:
    first, last = int(result["first"]), int(result["last"])
    declared = tuple(
        port
        for port in sorted({f.port for f in topology.flows if f.protocol == "tcp"})
        if first <= port <= last
        and matching_flow(topology, source, attempt.destination, attempt.network, port, "tcp")
    )
    return Sweep(
        source=source.name,
        destination=attempt.destination.name,
        address=attempt.address,
        network=attempt.network,
        first=first,
        last=last,
        blocked=int(result["blocked"]),
        passed={int(port): outcome for port, outcome in result["passed"].items()},
        seconds=float(result["seconds"]),
        declared=declared,
    )


def public_ipv6(endpoints: Sequence[Endpoint], reason: str) -> list[dict[str, Any]]:
    """Each inside endpoint with a public side: its IPv6 addresses (probed like any other), or
    an explicit "not applicable" with the reason, never a silent gap."""
    rows = []
    for endpoint in endpoints:
        public = [address for network, address in endpoint.addresses if network == PUBLIC]
        if not public or _outside(endpoint):
            continue
        v6 = [a for a in public if ipaddress.ip_address(a).version == 6]
        status = PROBED if v6 else NOT_APPLICABLE
        reason_given = "" if v6 else reason
        rows.append({"endpoint": endpoint.name, "addresses": v6, "status": status, "reason": reason_given})
    return rows


def _outside(endpoint: Endpoint) -> bool:
    return set(endpoint.roles) <= {ADMIN, INTERNET}


def outside_roles(is_operator: bool) -> tuple[str, ...]:
    """The operator is on the internet and in the admin CIDRs; the sentinel only on the internet."""
    return (ADMIN, INTERNET) if is_operator else (INTERNET,)


# -- the probe program: runs in the source's namespace, standard library only ----------------------

CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33  # Linux; Python's socket module does not name it
# Sockets connecting at once in a sweep: 4 rounds cover 65535 ports, each ending sweep_timeout
# after its last SYN, so a range where every SYN is dropped (the worst case) costs about 4
# timeouts plus the sending (65535 dropped SYNs: 4.8 s at 0.5 s on the 2-core machine). Answers
# over a veth or bridge come back in microseconds: 0.5 s is ample, and the integration test
# proves a whole batch of refusals and a connection arrive within it.
SWEEP_BATCH = 16384
# An NTP client request: the only UDP service the architecture runs (chrony) answers it.
NTP_REQUEST = b"\x1b" + 47 * b"\0"


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


class Witness:
    """Raw UDP and ICMP sockets opened in another namespace: the kernel delivers a copy of every
    datagram and ICMP message to them only after that namespace's input hook accepted it."""

    def __init__(self, path: str) -> None:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
            self.sockets = [socket.socket(socket.AF_INET, socket.SOCK_RAW, p)
                            for p in (socket.IPPROTO_UDP, socket.IPPROTO_ICMP)]  # fmt: skip
        finally:
            _setns(home)
            os.close(target)
            os.close(home)
        for sock in self.sockets:
            # Room for every datagram of a source's whole probe run until it is drained.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            sock.setblocking(False)

    def drain(self) -> set[tuple]:
        seen: set[tuple] = set()
        for sock in self.sockets:
            while True:
                try:
                    packet = sock.recv(65535)
                except BlockingIOError:
                    break
                key = _witness_key(packet)
                if key:
                    seen.add(key)
            sock.close()
        return seen


def _witness_key(packet: bytes) -> tuple | None:
    """The key a probe of ours would have: UDP (src, dst, sport, dport), echo (dst, id, seq)."""
    ihl = (packet[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    if packet[9] == socket.IPPROTO_UDP:
        sport, dport = struct.unpack("!HH", packet[ihl : ihl + 4])
        return ("udp", src, dst, sport, dport)
    if packet[9] == socket.IPPROTO_ICMP and packet[ihl] == 8:
        ident, seq = struct.unpack("!HH", packet[ihl + 4 : ihl + 8])
        return ("icmp", dst, ident, seq)
    return None


def _tcp_outcome(code: int) -> str:
    if code == 0:
        return CONNECTED
    return REFUSED if code == errno.ECONNREFUSED else BLOCKED


def _tcp(address: str, port: int, timeout: float) -> tuple[str, tuple | None]:
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        return _tcp_outcome(sock.connect_ex((address, port))), None
    except OSError:  # the timeout itself: a dropped SYN
        return BLOCKED, None
    finally:
        sock.close()


def _udp(address: str, port: int, timeout: float, payload: bytes) -> tuple[str, tuple | None]:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    key = None
    try:
        sock.connect((address, port))
        local = sock.getsockname()
        key = ("udp", local[0], address, local[1], port)
        sock.send(payload)
        sock.recv(512)
        return CONNECTED, None
    except ConnectionRefusedError:
        return REFUSED, None
    except TimeoutError:
        return SILENT, key
    except OSError:  # EPERM from the source's own output chain, or an ICMP unreachable
        return BLOCKED, None
    finally:
        sock.close()


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _echo_request(version: int, ident: int, seq: int) -> bytes:
    if version == 6:  # the kernel fills in the ICMPv6 checksum (it covers a pseudo-header)
        return struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"tierwall"
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tierwall"
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def _echo_reply(version: int, packet: bytes, ident: int) -> int | None:
    """The sequence number of an echo reply to us, or None."""
    offset = (packet[0] & 0x0F) * 4 if version == 4 else 0
    kind, _, _, their_ident, seq = struct.unpack("!BBHHH", packet[offset : offset + 8])
    return seq if kind == (0 if version == 4 else 129) and their_ident == ident else None


def _echo_all(addresses: list[str], timeout: float) -> list[tuple[str, tuple | None]]:
    """Echo every address at once, then collect replies until the timeout."""
    ident = os.getpid() & 0xFFFF
    sockets = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
               6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)}  # fmt: skip
    results: list[tuple[str, tuple | None]] = []
    for seq, address in enumerate(addresses):
        version = ipaddress.ip_address(address).version
        try:
            sockets[version].sendto(_echo_request(version, ident, seq), (address, 0))
            results.append((SILENT, ("icmp", address, ident, seq)))
        except OSError:
            results.append((BLOCKED, None))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and any(r[0] == SILENT for r in results):
        ready, _, _ = select.select(list(sockets.values()), [], [], left)
        for sock in ready:
            packet, sender = sock.recvfrom(65535)
            replied = _echo_reply(4 if sock is sockets[4] else 6, packet, ident)
            if replied is not None and replied < len(addresses) and _same(sender[0], addresses[replied]):
                results[replied] = (CONNECTED, None)
    for sock in sockets.values():
        sock.close()
    return results


def _same(a: str, b: str) -> bool:
    return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b)


def _usable_batch(wanted: int) -> int:
    """Raise the open-file limit as far as allowed; a batch must fit under it (some sandboxes
    refuse even root a higher hard limit, so the hard limit is the ceiling)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ceiling = wanted if hard == resource.RLIM_INFINITY else hard - 256
    return max(1, min(wanted, ceiling))


def _connect_batch(address: str, ports: range, timeout: float) -> dict[int, str]:
    """Non-blocking connects to every port at once; what has not answered ``timeout`` after the
    last SYN went out was dropped."""
    outcomes: dict[int, str] = {}
    pending: dict[int, tuple[int, socket.socket]] = {}
    poller = select.epoll()
    try:
        for port in ports:
            sock = socket.socket(_family(address), socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            # A connected probe ends with a RST: no lingering close, no TIME_WAIT per port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            code = sock.connect_ex((address, port))
            if code == errno.EINPROGRESS:
                pending[sock.fileno()] = (port, sock)
                poller.register(sock.fileno(), select.EPOLLOUT)
            else:
                outcomes[port] = _tcp_outcome(code)
                sock.close()
        deadline = time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left):
                port, sock = pending.pop(fd)
                poller.unregister(fd)
                outcomes[port] = _tcp_outcome(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                sock.close()
    finally:
        for port, sock in pending.values():
            outcomes[port] = BLOCKED
            sock.close()
        poller.close()
    return outcomes


def sweep(address: str, first: int, last: int, timeout: float, batch: int = SWEEP_BATCH) -> dict[str, Any]:
    """Every TCP port first..last of ``address``: how many were blocked, and the others' outcomes."""
    batch = _usable_batch(batch)
    started = time.monotonic()
    blocked, passed = 0, {}
    for start in range(first, last + 1, batch):
        ports = range(start, min(start + batch, last + 1))
        for port, outcome in _connect_batch(address, ports, timeout).items():
            if outcome == BLOCKED:
                blocked += 1
            else:
                passed[port] = outcome
    seconds = round(time.monotonic() - started, 3)
    return {"address": address, "first": first, "last": last, "blocked": blocked, "passed": passed,
            "seconds": seconds}  # fmt: skip


def run_probes(spec: dict[str, Any]) -> dict[str, Any]:
    """The probe program's whole job: every target, then every sweep (see the module docstring)."""
    timeout, targets = float(spec["timeout"]), spec["targets"]
    witnesses = [Witness(path) for path in spec["witness"]]

    def port_probe(target: list) -> tuple[str, tuple | None]:
        address, port, protocol, _ = target
        if protocol == "tcp":
            return _tcp(address, port, timeout)
        return _udp(address, port, timeout, NTP_REQUEST if port == spec["ntp"] else b"\0")

    ports = [i for i, t in enumerate(targets) if t[2] != ICMP]
    echoes = [i for i, t in enumerate(targets) if t[2] == ICMP]
    answers: dict[int, tuple[str, tuple | None]] = {}
    with ThreadPoolExecutor(64) as pool:
        # Echo waits out its timeout in parallel with the port probes, not after them.
        echoed = pool.submit(_echo_all, [targets[i][0] for i in echoes], timeout)
        answers |= zip(ports, pool.map(lambda i: port_probe(targets[i]), ports), strict=True)
        answers |= zip(echoes, echoed.result(), strict=True)
    seen = set().union(*(w.drain() for w in witnesses))
    results = []
    for i, target in enumerate(targets):
        answer, key = answers[i]
        if key is not None and _family(target[0]) == socket.AF_INET:  # witnesses watch IPv4
            answer = DELIVERED if key in seen else BLOCKED
        results.append([*target[:3], answer])
    sweeps = [sweep(a, first, last, float(spec["sweep_timeout"])) for a, first, last in spec["sweeps"]]
    return {"targets": results, "sweeps": sweeps}


def main(argv: Sequence[str] | None = None) -> int:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    print(json.dumps(run_probes(spec)))
    return 0


__all__ = [
    "BLOCKED", "CONNECTED", "ICMP", "NOT_APPLICABLE", "NOT_PROBED", "OPEN_SILENT", "PROBED", "PUBLIC",
    "REFUSED", "Coverage", "Endpoint", "Matrix", "Probe", "Sweep", "probe_matrix",
]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())

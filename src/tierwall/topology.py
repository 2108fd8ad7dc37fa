"""The topology model: networks, hosts, addresses and the flow matrix.

This module is the single source of truth for the three-tier architecture and its management
host. The Pulumi program, the lab, the Ansible inventory (and through it the host firewalls), the
test suites and the audit report all read it. It imports nothing from Pulumi or Ansible.

Everything that is not a :class:`Flow` of the matrix is denied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Tiers, in the order traffic flows from the internet inwards, then the management host that
# keeps the audit trail off the tiers it records (it processes no personal data).
PROXY, APP, DB, MGMT = "proxy", "app", "db", "mgmt"
TIERS: tuple[str, ...] = (PROXY, APP, DB, MGMT)

# Endpoints outside the private networks. "internet" is anybody; "admin" is the operators'
# CIDRs (the lab's operator is the machine's root namespace).
INTERNET, ADMIN = "internet", "admin"
EXTERNAL_ENDPOINTS: tuple[str, ...] = (INTERNET, ADMIN)

FRONTEND, BACKEND = "frontend", "backend"
# "public" is not a private network: it stands for a host's public interface.
PUBLIC = "public"

# Which private networks each tier is attached to. The app tier is the only one on both. The
# management host sits on the frontend: the proxy and the app reach it there, and the db, alone
# with the app on the backend, sends its trail through the app's relay instead of sharing its
# network with a fourth host.
TIER_NETWORKS: dict[str, tuple[str, ...]] = {
    PROXY: (FRONTEND,),
    APP: (FRONTEND, BACKEND),
    DB: (BACKEND,),
    MGMT: (FRONTEND,),
}
# Host addresses are derived from the network CIDR: host N of a tier gets
# network_address + offset + N - 1. Hetzner keeps the first address (.1) as the gateway.
HOST_OFFSETS: dict[str, int] = {PROXY: 10, APP: 20, DB: 30, MGMT: 40}
MAX_HOSTS_PER_TIER = 9
DB_COUNT = 1
MGMT_COUNT = 1

# The private ranges every tierwall network must lie in (Hetzner private networks are RFC 1918).
RFC1918 = tuple(ipaddress.IPv4Network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def subnet_of(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    other: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    """``network.subnet_of(other)`` for two networks of the same IP version, False across versions
    (where ``subnet_of`` itself raises TypeError)."""
    if isinstance(network, ipaddress.IPv4Network) and isinstance(other, ipaddress.IPv4Network):
        return network.subnet_of(other)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(other, ipaddress.IPv6Network):
        return network.subnet_of(other)
    return False


class TopologyError(ValueError):
    """An invariant of the architecture does not hold. The message names what and how to fix it."""


@dataclass(frozen=True)
class Ports:
    """Every TCP/UDP port the architecture uses. Change one here and every reader follows."""

    ssh: int = 22
    http: int = 80
    https: int = 443
    app: int = 8443
    postgres: int = 5432
    squid: int = 3128
    apt_cacher: int = 3142
    # The relays that carry the db's backups out, hop by hop (db -> app -> proxy -> repository).
    backup_relay: int = 8543
    # Every host's audit trail, over RELP inside mutual TLS (the archive, and the app's relay for
    # the db's trail).
    log_archive: int = 6514
    ntp: int = 123
    dns: int = 53

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise TopologyError(f"port '{name}' must be an integer 1-65535, got {value!r}")
            # ntp and dns are UDP services on other hosts; the TCP services must not collide.
            if name not in ("ntp", "dns") and value in seen:
                raise TopologyError(
                    f"port '{name}' ({value}) collides with port '{seen[value]}': choose another"
                )
            seen[value] = name


@dataclass(frozen=True)
class Network:
    name: str
    cidr: ipaddress.IPv4Network

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """Hetzner's (and the lab's) gateway: the network's first usable address."""
        return self.cidr.network_address + 1


@dataclass(frozen=True)
class Interface:
    network: str
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class Host:
    name: str
    tier: str
    interfaces: tuple[Interface, ...]

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(i.network for i in self.interfaces)

    def address(self, network: str) -> ipaddress.IPv4Address:
        for interface in self.interfaces:
            if interface.network == network:
                return interface.address
        raise KeyError(f"host {self.name} is not attached to network {network!r}")

    @property
    def has_public_address(self) -> bool:
        return self.tier == PROXY


@dataclass(frozen=True)
class Flow:
    """One allowed connection: ``source`` may open ``protocol``/``port`` on ``destination``.

    Source and destination are tier names or external endpoints (internet, admin).
    ``network`` is the network the flow crosses ("public" for the internet side).
    """

    source: str
    destination: str
    port: int
    protocol: str
    network: str
    purpose: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.source, self.destination, self.port, self.protocol)


@dataclass(frozen=True)
class Topology:
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...]
    flows: tuple[Flow, ...]
    ports: Ports = field(default_factory=Ports)

    def __post_init__(self) -> None:
        _check_networks(self.networks)
        _check_hosts(self.networks, self.hosts)
        _check_flows(self.networks, self.hosts, self.flows)

    # -- lookups -------------------------------------------------------------------------------
    def network(self, name: str) -> Network:
        for network in self.networks:
            if network.name == name:
                return network
        raise KeyError(f"no network named {name!r}")

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host named {name!r}")

    def hosts_in(self, tier: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.tier == tier)

    def hosts_on(self, network: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if network in h.networks)

    def flows_from(self, endpoint: str) -> tuple[Flow, ...]:
        return tuple(f for f in self.flows if f.source == endpoint)

    def flows_to(self, endpoint: str) -> tuple[Flow, ...]:
        return tuple(f for f in self.flows if f.destination == endpoint)

    def allows(self, source: str, destination: str, port: int, protocol: str = "tcp") -> bool:
        """True when the flow matrix declares ``source -> destination:port/protocol``.

        ``source`` and ``destination`` may be tiers, external endpoints or host names.
        """
        src = self._endpoint_of(source)
        dst = self._endpoint_of(destination)
        return any(f.key == (src, dst, port, protocol) for f in self.flows)

    def _endpoint_of(self, name: str) -> str:
        if name in TIERS or name in EXTERNAL_ENDPOINTS:
            return name
        return self.host(name).tier

    def as_dict(self) -> dict:
        """A plain-data view (for the Ansible inventory, the report and JSON output)."""
        return {
            "networks": {n.name: {"cidr": str(n.cidr), "gateway": str(n.gateway)} for n in self.networks},
            "hosts": {
                h.name: {
                    "tier": h.tier,
                    "addresses": {i.network: str(i.address) for i in h.interfaces},
                }
                for h in self.hosts
            },
            "flows": [
                {
                    "source": f.source,
                    "destination": f.destination,
                    "port": f.port,
                    "protocol": f.protocol,
                    "network": f.network,
                    "purpose": f.purpose,
                }
                for f in self.flows
            ],
            "ports": dict(vars(self.ports)),
        }


# -- construction ---------------------------------------------------------------------------------


def build_topology(
    frontend_cidr: str = "10.10.1.0/24",
    backend_cidr: str = "10.10.2.0/24",
    proxy_count: int = 1,
    app_count: int = 1,
    ports: Ports | None = None,
) -> Topology:
    """Derive the whole topology (hosts, addresses, flow matrix) from a few parameters."""
    ports = ports or Ports()
    networks = (
        Network(FRONTEND, _parse_cidr(FRONTEND, frontend_cidr)),
        Network(BACKEND, _parse_cidr(BACKEND, backend_cidr)),
    )
    counts = {PROXY: proxy_count, APP: app_count, DB: DB_COUNT, MGMT: MGMT_COUNT}
    for tier, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise TopologyError(f"{tier} count must be an integer, got {count!r}")
        if not 1 <= count <= MAX_HOSTS_PER_TIER:
            raise TopologyError(f"{tier} count must be between 1 and {MAX_HOSTS_PER_TIER}, got {count}")
    by_name = {n.name: n for n in networks}
    hosts = []
    for tier in TIERS:
        for index in range(1, counts[tier] + 1):
            interfaces = tuple(
                Interface(net, by_name[net].cidr.network_address + HOST_OFFSETS[tier] + index - 1)
                for net in TIER_NETWORKS[tier]
            )
            hosts.append(Host(f"{tier}-{index}", tier, interfaces))
    return Topology(networks, tuple(hosts), flow_matrix(ports), ports)


def flow_matrix(ports: Ports) -> tuple[Flow, ...]:
    """Every connection the architecture allows. Anything else is denied, everywhere."""
    p = ports
    return (
        # The internet meets the proxy, and only the proxy.
        Flow(INTERNET, PROXY, p.http, "tcp", PUBLIC, "HTTP, redirected to HTTPS"),
        Flow(INTERNET, PROXY, p.https, "tcp", PUBLIC, "HTTPS for patients and psychologists"),
        Flow(ADMIN, PROXY, p.ssh, "tcp", PUBLIC, "operator SSH to the bastion (admin CIDRs only)"),
        # Proxy -> app over the frontend network.
        Flow(PROXY, APP, p.app, "tcp", FRONTEND, "reverse proxy to the application (TLS)"),
        Flow(PROXY, APP, p.ssh, "tcp", FRONTEND, "operator SSH jump to the app servers"),
        Flow(PROXY, MGMT, p.ssh, "tcp", FRONTEND, "operator SSH jump to the management host"),
        # Every host's audit trail to the archive; nothing on the management host opens a
        # connection to a tier host but for its own packages and time.
        Flow(PROXY, MGMT, p.log_archive, "tcp", FRONTEND, "audit trail to the archive (RELP, mutual TLS)"),
        Flow(APP, MGMT, p.log_archive, "tcp", FRONTEND, "audit trail, the db's relayed, to the archive"),
        Flow(MGMT, PROXY, p.squid, "tcp", FRONTEND, "forward proxy (allow-listed egress: apt)"),
        Flow(MGMT, PROXY, p.ntp, "udp", FRONTEND, "time sync from the proxy"),
        # App -> proxy: the app's only way out is the filtering forward proxy.
        Flow(APP, PROXY, p.squid, "tcp", FRONTEND, "forward proxy (allow-listed egress: apt, pip)"),
        Flow(APP, PROXY, p.ntp, "udp", FRONTEND, "time sync from the proxy"),
        Flow(APP, PROXY, p.backup_relay, "tcp", FRONTEND, "backup relay to the off-site repositories (TLS)"),
        # App -> db over the backend network.
        Flow(APP, DB, p.postgres, "tcp", BACKEND, "PostgreSQL over TLS (verify-full)"),
        Flow(APP, DB, p.ssh, "tcp", BACKEND, "operator SSH jump to the database server"),
        # Db -> app: packages through the apt proxy, time from the app, and the backups the db
        # pushes (the db opens every connection its data leaves by). Nothing else leaves db.
        Flow(DB, APP, p.apt_cacher, "tcp", BACKEND, "apt proxy (Debian archive only)"),
        Flow(DB, APP, p.ntp, "udp", BACKEND, "time sync from the app server"),
        Flow(DB, APP, p.backup_relay, "tcp", BACKEND, "backups and WAL pushed to the backup relay (TLS)"),
        Flow(DB, APP, p.log_archive, "tcp", BACKEND, "audit trail to the app's relay (RELP, mutual TLS)"),
        # The proxy's own egress: the forward proxy's upstreams, DNS and time.
        Flow(PROXY, INTERNET, p.http, "tcp", PUBLIC, "egress to allow-listed registries"),
        Flow(PROXY, INTERNET, p.https, "tcp", PUBLIC, "egress: allow-listed registries, backup repositories"),
        Flow(PROXY, INTERNET, p.dns, "udp", PUBLIC, "DNS resolution"),
        Flow(PROXY, INTERNET, p.dns, "tcp", PUBLIC, "DNS resolution (TCP fallback)"),
        Flow(PROXY, INTERNET, p.ntp, "udp", PUBLIC, "time sync"),
    )


# -- invariants -----------------------------------------------------------------------------------


def _parse_cidr(name: str, value: object) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise TopologyError(
            f"{name} CIDR {value!r} is not a valid network ({exc}); write it as e.g. 10.10.1.0/24"
        ) from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise TopologyError(f"{name} CIDR {value} must be IPv4 (Hetzner private networks are IPv4)")
    return network


def _check_networks(networks: Iterable[Network]) -> None:
    networks = tuple(networks)
    names = [n.name for n in networks]
    if sorted(names) != sorted((FRONTEND, BACKEND)):
        raise TopologyError(f"exactly the networks {FRONTEND!r} and {BACKEND!r} are required, got {names}")
    for network in networks:
        if not any(network.cidr.subnet_of(r) for r in RFC1918):
            raise TopologyError(
                f"{network.name} CIDR {network.cidr} is not private: use a range inside "
                "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918)"
            )
        if network.cidr.prefixlen > 26:
            raise TopologyError(
                f"{network.name} CIDR {network.cidr} is too small: use a /26 or larger "
                "(hosts are numbered from .10 to .40)"
            )
    for a, b in _pairs(networks):
        if a.cidr.overlaps(b.cidr):
            raise TopologyError(
                f"{a.name} CIDR {a.cidr} overlaps {b.name} CIDR {b.cidr}: the tiers' networks "
                "must be disjoint, choose non-overlapping ranges"
            )


def _check_hosts(networks: tuple[Network, ...], hosts: tuple[Host, ...]) -> None:
    by_name = {n.name: n for n in networks}
    names: set[str] = set()
    addresses: dict[ipaddress.IPv4Address, str] = {}
    for host in hosts:
        if host.tier not in TIERS:
            raise TopologyError(f"host {host.name}: unknown tier {host.tier!r}, expected one of {TIERS}")
        if host.name in names:
            raise TopologyError(f"host name {host.name} is used twice")
        names.add(host.name)
        expected = TIER_NETWORKS[host.tier]
        if tuple(sorted(host.networks)) != tuple(sorted(expected)):
            raise TopologyError(
                f"host {host.name} ({host.tier}) is attached to {list(host.networks)}; "
                f"a {host.tier} host must be attached to exactly {list(expected)}"
            )
        for interface in host.interfaces:
            network = by_name[interface.network]
            if interface.address not in network.cidr:
                raise TopologyError(
                    f"host {host.name}: address {interface.address} is outside {network.name} {network.cidr}"
                )
            if interface.address in (network.cidr.network_address, network.cidr.broadcast_address):
                raise TopologyError(
                    f"host {host.name}: address {interface.address} is the network or broadcast "
                    f"address of {network.name}"
                )
            if interface.address == network.gateway:
                raise TopologyError(
                    f"host {host.name}: address {interface.address} is {network.name}'s gateway "
                    "(Hetzner reserves the first address)"
                )
            if interface.address in addresses:
                raise TopologyError(
                    f"host {host.name}: address {interface.address} is already used by "
                    f"{addresses[interface.address]}"
                )
            addresses[interface.address] = host.name
    for tier in TIERS:
        count = sum(1 for h in hosts if h.tier == tier)
        if count < 1:
            raise TopologyError(f"the topology needs at least one {tier} host")
    if sum(1 for h in hosts if h.tier == DB) != DB_COUNT:
        raise TopologyError(f"exactly {DB_COUNT} db host is supported")
    if sum(1 for h in hosts if h.tier == MGMT) != MGMT_COUNT:
        raise TopologyError(f"exactly {MGMT_COUNT} management host is supported")


def _check_flows(networks: tuple[Network, ...], hosts: tuple[Host, ...], flows: tuple[Flow, ...]) -> None:
    endpoints = set(TIERS) | set(EXTERNAL_ENDPOINTS)
    seen: set[tuple[str, str, int, str]] = set()
    for flow in flows:
        where = f"flow {flow.source} -> {flow.destination}:{flow.port}/{flow.protocol}"
        if flow.source not in endpoints or flow.destination not in endpoints:
            raise TopologyError(f"{where}: endpoints must be among {sorted(endpoints)}")
        if flow.source == flow.destination:
            raise TopologyError(f"{where}: a flow must join two different endpoints")
        if flow.protocol not in ("tcp", "udp"):
            raise TopologyError(f"{where}: protocol must be tcp or udp")
        if flow.key in seen:
            raise TopologyError(f"{where}: declared twice")
        seen.add(flow.key)
        external = flow.source in EXTERNAL_ENDPOINTS or flow.destination in EXTERNAL_ENDPOINTS
        if external:
            inner = flow.destination if flow.source in EXTERNAL_ENDPOINTS else flow.source
            if inner != PROXY:
                raise TopologyError(
                    f"{where}: only the proxy tier may talk to the internet or the admin CIDRs"
                )
            if flow.network != PUBLIC:
                raise TopologyError(f"{where}: an external flow crosses the public network")
            continue
        shared = set(TIER_NETWORKS[flow.source]) & set(TIER_NETWORKS[flow.destination])
        if flow.network not in shared:
            raise TopologyError(
                f"{where}: {flow.source} and {flow.destination} share {sorted(shared) or 'no network'}, "
                f"not {flow.network!r}"
            )
    # The architecture's core promise, checked on the matrix itself.
    for flow in flows:
        if DB in (flow.source, flow.destination) and {flow.source, flow.destination} - {DB, APP}:
            raise TopologyError(
                f"flow {flow.source} -> {flow.destination}:{flow.port}: the db talks to the app tier only"
            )


def _pairs(items: tuple) -> Iterator[tuple]:
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            yield a, b


def topology_from_dict(data: dict) -> Topology:
    """Rebuild (and so re-validate) a topology from :meth:`Topology.as_dict` output, e.g. the
    ``tierwall_topology`` inventory variable the live suites read."""
    tiers = [h["tier"] for h in data["hosts"].values()]
    topology = build_topology(
        frontend_cidr=data["networks"][FRONTEND]["cidr"],
        backend_cidr=data["networks"][BACKEND]["cidr"],
        proxy_count=tiers.count(PROXY),
        app_count=tiers.count(APP),
        ports=Ports(**data["ports"]),
    )
    if topology.as_dict() != data:
        raise TopologyError("the topology given differs from the one its parameters derive: regenerate it")
    return topology

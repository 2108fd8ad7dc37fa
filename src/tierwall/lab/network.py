"""Namespaces, bridges, veths, routes and the containment rules of the lab.

* Root namespace: bridge ``tw-internet`` with the operator's 203.0.113.1/24; an
  ``unreachable`` route for each private CIDR of the topology (so nothing addressed to a lab
  private address can leave through the uplink); the nftables table ``inet tierwall_lab``
  forwarding from the lab's public range only DNS to this machine's resolvers and TCP 80/443,
  masqueraded out of the uplink; ``net.ipv4.ip_forward=1`` (the previous value is restored).
* ``tw-switch``: the frontend/backend bridges, so the root namespace has no interface there.
* ``tw-<host>``: one veth per network of the host, addresses from the topology; proxies get a
  default route via the operator, the other tiers no default route at all.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tierwall.lab.addressing import (
    IFACE,
    INTERNET_BRIDGE,
    INTERNET_CIDR,
    MIRROR,
    NFT_TABLE,
    OFFSITE,
    OFFSITE_NS,
    OPERATOR,
    ROOT_VETH_PREFIX,
    SENTINEL,
    SENTINEL_NS,
    SWITCH_NS,
    SWITCH_PREFIX,
    netns,
    proxy_public,
    switch_bridge,
)
from tierwall.lab.state import State
from tierwall.lab.system import LabError, ok, run
from tierwall.topology import PROXY, Topology

SYSCTL_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


# -- discovery ----------------------------------------------------------------------------------


def uplink() -> tuple[str, list[ipaddress.IPv4Network]]:
    """The default route's device and the IPv4 networks on it."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "default"]).stdout or "[]")
    if not routes:
        raise LabError("this machine has no IPv4 default route: the proxy's NAT to the registries needs one")
    dev = routes[0]["dev"]
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show", "dev", dev]).stdout or "[]")
    nets = [
        ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)  # `ip -4`: IPv4 only
        for entry in addrs
        for a in entry.get("addr_info", [])
    ]
    return dev, nets


def resolvers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    found = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback:
                found.append(str(address))
    return found


def outside_addresses() -> dict[str, ipaddress.IPv4Address]:
    """Addresses the lab must reach through the uplink: the resolvers and the Debian mirror."""
    found = {f"resolver {a}": ipaddress.IPv4Address(a) for a in resolvers()}  # resolvers(): IPv4 only
    mirror = urlsplit(MIRROR).hostname or ""
    try:
        for info in socket.getaddrinfo(mirror, 80, socket.AF_INET, socket.SOCK_STREAM):
            found[f"mirror {mirror}"] = ipaddress.IPv4Address(info[4][0])  # AF_INET
    except OSError:
        pass  # no DNS: debootstrap will say so
    return found


def check_ranges(topology: Topology) -> None:
    """No lab network may overlap a network this machine uses or hold an address it must reach."""
    _, uplink_nets = uplink()
    lab_nets = [INTERNET_CIDR, *(n.cidr for n in topology.networks)]
    for what, address in outside_addresses().items():
        for net in lab_nets:
            if address in net:
                raise LabError(
                    f"lab network {net} holds the {what} ({address}), which the lab must reach through "
                    "the uplink: choose other lab ranges (tierwall/lab/addressing.py, lab/stack.yaml)"
                )
    existing = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "main"]).stdout or "[]")
    for net in lab_nets:
        for up in uplink_nets:
            if net.overlaps(up):
                raise LabError(f"lab network {net} overlaps this machine's uplink {up}: choose another range")
        for route in existing:
            dst = route.get("dst")
            if dst in (None, "default") or route.get("type") == "unreachable":
                continue
            if route.get("dev") == INTERNET_BRIDGE:
                continue
            if ipaddress.ip_network(dst if "/" in dst else f"{dst}/32").overlaps(net):
                raise LabError(
                    f"lab network {net} overlaps the route {dst} dev {route.get('dev')} on this machine"
                )


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(name: str, ns: str | None = None) -> bool:
    argv = ["ip", *(["-n", ns] if ns else []), "link", "show", "dev", name]
    return ok(argv)


def listening(ns: str, addresses: Sequence[str], timeout: float) -> bool:
    """Whether TCP listeners on every ``address:port`` of ``addresses`` appear in namespace ``ns``
    within ``timeout`` seconds (the lab's own services on its "internet": the sentinel, the store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bound = run(["ip", "netns", "exec", ns, "ss", "-Hltn"]).stdout
        if all(f"{address} " in bound for address in addresses):
            return True
        time.sleep(0.1)
    return False


# -- building -----------------------------------------------------------------------------------


def _add_netns(state: State, name: str) -> None:
    if state.run_netns_mount is None:
        # `ip netns add` makes /run/netns a mount point the first time: undo that on down.
        state.run_netns_mount = not ok(["mountpoint", "-q", "/run/netns"])
        state.save()
    if name not in state.netns:
        state.netns.append(name)
        state.save()
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    # No IPv6 inside the lab: Hetzner's private networks are IPv4 and the lab's "internet" too.
    run(
        [
            "ip",
            "netns",
            "exec",
            name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]
    )


def _root_link(state: State, name: str) -> None:
    if name not in state.root_links:
        state.root_links.append(name)
        state.save()


def build_network(state: State, topology: Topology) -> None:
    check_ranges(topology)
    dev, uplink_nets = uplink()
    dns = resolvers()

    # The "internet" bridge in the root namespace.
    _root_link(state, INTERNET_BRIDGE)
    if not link_exists(INTERNET_BRIDGE):
        run(["ip", "link", "add", INTERNET_BRIDGE, "type", "bridge"])
    run(["sysctl", "-qw", f"net.ipv6.conf.{INTERNET_BRIDGE}.disable_ipv6=1"])
    run(["ip", "addr", "replace", f"{OPERATOR}/{INTERNET_CIDR.prefixlen}", "dev", INTERNET_BRIDGE])
    run(["ip", "link", "set", INTERNET_BRIDGE, "up"])

    # Containment first: unreachable routes for every private CIDR, then the forward/NAT table.
    for network in topology.networks:
        route = f"unreachable {network.cidr}"
        if route not in state.routes:
            state.routes.append(route)
            state.save()
        run(["ip", "route", "replace", "unreachable", str(network.cidr)])
    install_nft(state, dev, dns, uplink_nets)

    # The private switch.
    _add_netns(state, SWITCH_NS)
    for network in topology.networks:
        bridge = switch_bridge(network.name)
        if not link_exists(bridge, SWITCH_NS):
            run(["ip", "-n", SWITCH_NS, "link", "add", bridge, "type", "bridge"])
        run(["ip", "-n", SWITCH_NS, "link", "set", bridge, "up"])

    # Sentinel.
    _add_netns(state, SENTINEL_NS)
    _public_veth(state, SENTINEL_NS, "sentinel", f"{SENTINEL}/{INTERNET_CIDR.prefixlen}", gateway=False)

    # The off-site backup store, another host of the lab's "internet".
    _add_netns(state, OFFSITE_NS)
    _public_veth(state, OFFSITE_NS, "offsite", f"{OFFSITE}/{INTERNET_CIDR.prefixlen}", gateway=False)

    # Machines.
    for host in topology.hosts:
        ns = netns(host.name)
        _add_netns(state, ns)
        if host.tier == PROXY:
            index = int(host.name.rsplit("-", 1)[1])
            _public_veth(
                state, ns, host.name, f"{proxy_public(index)}/{INTERNET_CIDR.prefixlen}", gateway=True
            )
        for interface in host.interfaces:
            network = topology.network(interface.network)
            inner = IFACE[interface.network]
            outer = SWITCH_PREFIX[interface.network] + host.name
            if not link_exists(inner, ns):
                if link_exists(outer, SWITCH_NS):
                    run(["ip", "-n", SWITCH_NS, "link", "del", outer])
                run(
                    [
                        "ip",
                        "link",
                        "add",
                        "name",
                        outer,
                        "netns",
                        SWITCH_NS,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        inner,
                        "netns",
                        ns,
                    ]
                )
            run(["ip", "-n", SWITCH_NS, "link", "set", outer, "master", switch_bridge(network.name), "up"])
            run(
                [
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "replace",
                    f"{interface.address}/{network.cidr.prefixlen}",
                    "dev",
                    inner,
                ]
            )
            run(["ip", "-n", ns, "link", "set", inner, "up"])
    enable_forwarding(state)


def _public_veth(state: State, ns: str, name: str, address: str, gateway: bool) -> None:
    outer = ROOT_VETH_PREFIX + name
    inner = IFACE["public"]
    _root_link(state, outer)
    if not link_exists(inner, ns):
        if link_exists(outer):
            run(["ip", "link", "del", outer])
        run(["ip", "link", "add", "name", outer, "type", "veth", "peer", "name", inner, "netns", ns])
    run(["sysctl", "-qw", f"net.ipv6.conf.{outer}.disable_ipv6=1"])
    run(["ip", "link", "set", outer, "master", INTERNET_BRIDGE, "up"])
    run(["ip", "-n", ns, "addr", "replace", address, "dev", inner])
    run(["ip", "-n", ns, "link", "set", inner, "up"])
    if gateway:
        run(["ip", "-n", ns, "route", "replace", "default", "via", str(OPERATOR), "dev", inner])


NOT_INTERNET = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


def nft_ruleset(
    uplink_dev: str,
    dns: list[str],
    forward_was_off: bool,
    uplink_nets: Sequence[ipaddress.IPv4Network] = (),
    mirrors: Sequence[str] = (),
) -> str:
    """The lab's table: from the lab's public range only DNS to the resolvers and TCP 80/443 to
    public addresses (never this machine's own uplink network) leave, masqueraded."""
    lab = str(INTERNET_CIDR)
    excluded = "{ " + ", ".join(sorted({*NOT_INTERNET, *(str(n) for n in uplink_nets)})) + " }"
    br = INTERNET_BRIDGE
    lines = [
        f"table inet {NFT_TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        # br_netfilter: frames bridged between ports of tw-internet (proxy <-> sentinel) pass here.
        f'    iifname "{br}" oifname "{br}" accept',
        f'    oifname "{br}" ct state established,related accept',
    ]
    if dns:
        resolvers_set = "{ " + ", ".join(dns) + " }"
        lines += [
            f'    iifname "{br}" oifname "{uplink_dev}" ip saddr {lab} '
            f"ip daddr {resolvers_set} {proto} dport 53 accept"
            for proto in ("udp", "tcp")
        ]
    if mirrors:  # the Debian mirror, even where it has a private address (a local mirror)
        lines.append(
            f'    iifname "{br}" oifname "{uplink_dev}" ip saddr {lab} ip daddr '
            f"{{ {', '.join(mirrors)} }} tcp dport {{ 80, 443 }} accept"
        )
    lines += [
        f'    iifname "{br}" oifname "{uplink_dev}" ip saddr {lab} ip daddr != {excluded} '
        "tcp dport { 80, 443 } accept",
        f'    iifname "{br}" counter drop',
        f'    oifname "{br}" counter drop',
    ]
    if forward_was_off:
        # Before the lab, this machine forwarded nothing routed: keep it that way for the uplink.
        lines.append(f'    iifname "{uplink_dev}" oifname "{uplink_dev}" drop')
    lines += [
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat - 10; policy accept;",
        f'    oifname "{uplink_dev}" ip saddr {lab} masquerade',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def install_nft(
    state: State, uplink_dev: str, dns: list[str], uplink_nets: Sequence[ipaddress.IPv4Network] = ()
) -> None:
    mirrors = sorted({str(a) for what, a in outside_addresses().items() if what.startswith("mirror")})
    if state.ip_forward_before is None:
        state.ip_forward_before = SYSCTL_FORWARD.read_text().strip()
    state.nft_table = NFT_TABLE
    state.save()
    forward_was_off = state.ip_forward_before == "0"
    ruleset = nft_ruleset(uplink_dev, dns, forward_was_off, uplink_nets, mirrors)
    if ok(["nft", "list", "table", "inet", NFT_TABLE]):
        run(["nft", "delete", "table", "inet", NFT_TABLE])
    run(["nft", "-f", "-"], input=ruleset)


def enable_forwarding(state: State) -> None:
    if state.ip_forward_before is None:
        state.ip_forward_before = SYSCTL_FORWARD.read_text().strip()
        state.save()
    SYSCTL_FORWARD.write_text("1\n")


# -- checks -------------------------------------------------------------------------------------


def network_healthy(state: State, topology: Topology) -> list[str]:
    problems = []
    for ns in state.netns:
        if not netns_exists(ns):
            problems.append(f"namespace {ns} is missing")
    for link in state.root_links:
        if not link_exists(link):
            problems.append(f"link {link} is missing")
    have = run(["ip", "route", "show", "type", "unreachable"]).stdout
    for network in topology.networks:
        if str(network.cidr) not in have:
            problems.append(f"unreachable route for {network.cidr} is missing")
    if not ok(["nft", "list", "table", "inet", NFT_TABLE]):
        problems.append(f"nftables table inet {NFT_TABLE} is missing")
    if SYSCTL_FORWARD.read_text().strip() != "1":
        problems.append("net.ipv4.ip_forward is off")
    return problems


# -- teardown -----------------------------------------------------------------------------------


def teardown_network(state: State, extra_netns: Sequence[str] = ()) -> None:
    """Remove what ``state`` records (and the stable names in ``extra_netns``), nothing else."""
    for ns in [*state.netns, *extra_netns]:
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)
    for link in state.root_links:
        if link_exists(link):
            run(["ip", "link", "del", link], check=False)
    for route in state.routes:
        run(["ip", "route", "del", *route.split()], check=False)
    if state.nft_table and ok(["nft", "list", "table", "inet", state.nft_table]):
        run(["nft", "delete", "table", "inet", state.nft_table])
    if state.ip_forward_before is not None:
        SYSCTL_FORWARD.write_text(state.ip_forward_before + "\n")
    if state.run_netns_mount and not run(["ip", "netns", "list"]).stdout.strip():
        while ok(["mountpoint", "-q", "/run/netns"]):
            run(["umount", "/run/netns"])

"""Read a live (or freshly loaded) nftables ruleset back into flows of the matrix.

Both the unit test of the firewall template (which loads the rendered file into a throw-away
network namespace) and the testinfra suites (which read `nft -j list ruleset` on a host) use this
to answer one question: which (source, destination, port, protocol) flows does this host's
firewall accept? Every accept rule must be either infrastructure of a known, narrow shape
(loopback, established/related, on-link ICMPv6 neighbour discovery, DHCP) or exactly one flow:
the whole set of a tier's addresses on one network, this host's own address, one port.
Anything else is reported as a problem, so a hand-added hole cannot hide.

Standard library only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

INTERNET, ADMIN, PUBLIC = "internet", "admin", "public"
TABLE = ("inet", "tierwall")
FlowKey = tuple[str, str, int, str]


@dataclass(frozen=True)
class Rule:
    """One rule of a chain, reduced to the matches a flow rule may use."""

    chain: str
    verdict: str | None  # accept, drop, reject or None (counter/log only)
    matches: dict[str, Any]  # e.g. {"iifname": "eth0", "ip saddr": frozenset(...), "tcp dport": 22}
    comment: str = ""


@dataclass
class Reading:
    """What a ruleset accepts, in terms of the flow matrix, and what it does not explain."""

    policies: dict[str, str] = field(default_factory=dict)  # chain -> policy, for the base chains
    flows: set[FlowKey] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def _value(right: Any) -> Any:
    """An nft JSON right-hand side as a hashable Python value (sets become frozensets)."""
    if isinstance(right, Mapping):
        if "set" in right:
            return frozenset(_scalar(v) for v in right["set"])
        if "prefix" in right:
            return _scalar(right)
        if "range" in right:
            return tuple(right["range"])
    if isinstance(right, list):
        return frozenset(_scalar(v) for v in right)
    return _scalar(right)


def _scalar(value: Any) -> Any:
    if isinstance(value, Mapping) and "prefix" in value:
        prefix = value["prefix"]
        return str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
    return value


def _left_key(left: Mapping[str, Any]) -> str:
    if "meta" in left:
        return str(left["meta"]["key"])
    if "payload" in left:
        return f"{left['payload']['protocol']} {left['payload']['field']}"
    if "ct" in left:
        return f"ct {left['ct']['key']}"
    return repr(left)


def rules_of(
    ruleset: Mapping[str, Any], table: tuple[str, str] = TABLE
) -> tuple[dict[str, dict], list[Rule]]:
    """Chains (with hook and policy) and rules of ``table`` in an `nft -j list ruleset` document."""
    family, name = table
    chains: dict[str, dict] = {}
    rules: list[Rule] = []
    for item in ruleset.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            if (chain["family"], chain["table"]) == (family, name):
                chains[chain["name"]] = chain
        elif "rule" in item:
            rule = item["rule"]
            if (rule["family"], rule["table"]) != (family, name):
                continue
            matches: dict[str, Any] = {}
            verdict = None
            for expr in rule.get("expr", []):
                if "match" in expr:
                    key = _left_key(expr["match"]["left"])
                    matches[key] = _value(expr["match"]["right"])
                for word in ("accept", "drop", "reject"):
                    if word in expr:
                        verdict = word
            rules.append(Rule(rule["chain"], verdict, matches, str(rule.get("comment", ""))))
    return chains, rules


def _as_set(value: Any) -> frozenset:
    if value is None:
        return frozenset()
    return value if isinstance(value, frozenset) else frozenset([value])


def _normalise(addresses: Iterable[str]) -> frozenset[str]:
    """Addresses and CIDRs in one canonical spelling (a /32 written as the bare address)."""
    out = set()
    for a in addresses:
        net = ipaddress.ip_network(str(a), strict=False)
        full = net.prefixlen == net.max_prefixlen
        out.add(str(net.network_address) if full else str(net))
    return frozenset(out)


_INFRA_SHAPES: tuple[frozenset[str], ...] = (
    frozenset({"iif"}),
    frozenset({"oif"}),
    frozenset({"ct state"}),
    frozenset({"icmpv6 type", "ip6 hoplimit"}),
    frozenset({"udp sport", "udp dport"}),
)


def _infrastructure(rule: Rule) -> str | None:
    """Why an accept rule that is not a flow is acceptable, or None when it is not."""
    keys = frozenset(rule.matches)
    if keys not in _INFRA_SHAPES:
        return None
    m = rule.matches
    if keys in (frozenset({"iif"}), frozenset({"oif"})):
        return "loopback" if m.get("iif", m.get("oif")) == "lo" else None
    if keys == frozenset({"ct state"}):
        return "established" if _as_set(m["ct state"]) <= {"established", "related"} else None
    if keys == frozenset({"icmpv6 type", "ip6 hoplimit"}):
        nd = {"nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "nd-router-solicit"}
        return "neighbour discovery" if m["ip6 hoplimit"] == 255 and _as_set(m["icmpv6 type"]) <= nd else None
    ports = (m["udp sport"], m["udp dport"])
    return "dhcp" if ports in ((67, 68), (68, 67)) else None


def read_flows(
    ruleset: Mapping[str, Any],
    topology: Mapping[str, Any],
    tier: str,
    addresses: Mapping[str, str],
    interfaces: Mapping[str, str],
    public_address: str | None = None,
    admin_cidrs: Iterable[str] = (),
) -> Reading:
    """Translate the accept rules of the tierwall table back into flow-matrix keys.

    ``addresses`` are this host's private addresses by network, ``interfaces`` the interface
    holding each (network name or "public" -> interface name), as found on the host.
    """
    reading = Reading()
    chains, rules = rules_of(ruleset)
    for chain in chains.values():
        if "hook" in chain:
            reading.policies[chain["hook"]] = chain.get("policy", "accept")
    by_iface = {iface: network for network, iface in interfaces.items()}
    mine = dict(addresses)
    if public_address:
        mine[PUBLIC] = public_address
    tier_sets: dict[tuple[str, str], frozenset[str]] = {}
    for host in topology["hosts"].values():
        for network, address in host["addresses"].items():
            key = (host["tier"], network)
            tier_sets[key] = tier_sets.get(key, frozenset()) | {str(address)}
    admin = _normalise(admin_cidrs)

    def peer_of(network: str, peers: frozenset, family: str) -> str | None:
        if network == PUBLIC:
            if not peers:
                return INTERNET
            version = 6 if family == "ip6" else 4
            same_family = {a for a in admin if ipaddress.ip_network(a).version == version}
            return ADMIN if _normalise(peers) == same_family else None
        for (peer_tier, peer_network), members in tier_sets.items():
            if peer_network == network and members == peers:
                return peer_tier
        return None

    for rule in rules:
        if rule.verdict != "accept":
            continue
        where = f"{rule.chain} rule {dict(rule.matches)} ({rule.comment!r})"
        if _infrastructure(rule):
            continue
        incoming = rule.chain == "input"
        if rule.chain not in ("input", "output"):
            reading.problems.append(f"{where}: accepts in a chain that must only drop")
            continue
        iface = rule.matches.get("iifname" if incoming else "oifname")
        network = by_iface.get(iface)
        if network is None:
            reading.problems.append(f"{where}: interface {iface!r} holds none of this host's addresses")
            continue
        family = "ip6" if any(k.startswith("ip6 ") for k in rule.matches) else "ip"
        local_key, remote_key = (f"{family} daddr", f"{family} saddr")
        if not incoming:
            local_key, remote_key = remote_key, local_key
        local = _as_set(rule.matches.get(local_key))
        remote = _as_set(rule.matches.get(remote_key))
        if family == "ip" and local != {mine.get(network)}:
            reading.problems.append(f"{where}: this end is {set(local)}, not this host's {network} address")
            continue
        protocols = [k.split()[0] for k in rule.matches if k.endswith(" dport")]
        port_key = f"{protocols[0]} dport" if protocols else ""
        extra = set(rule.matches) - {"iifname", "oifname", local_key, remote_key, "meta nfproto", port_key}
        if len(protocols) != 1 or not isinstance(rule.matches[port_key], int) or extra:
            reading.problems.append(f"{where}: not one flow (one protocol, one port, addresses only)")
            continue
        peer = peer_of(network, remote, family)
        if peer is None:
            reading.problems.append(
                f"{where}: {set(remote)} is not exactly one tier's addresses on {network}"
            )
            continue
        port = rule.matches[port_key]
        key = (peer, tier, port, protocols[0]) if incoming else (tier, peer, port, protocols[0])
        reading.flows.add(key)
    return reading


def matrix_flows(topology: Mapping[str, Any], tier: str) -> set[FlowKey]:
    """The flows of the matrix that a host of ``tier`` takes part in."""
    return {
        (f["source"], f["destination"], int(f["port"]), f["protocol"])
        for f in topology["flows"]
        if tier in (f["source"], f["destination"])
    }

"""Flow matrix -> nftables rules for one host: the firewall role's logic, in plain Python.

The inventory carries the whole topology (``tierwall_topology`` = ``Topology.as_dict()``). For the
tier of the host being configured, every flow of the matrix becomes exactly one accept rule
(two when an admin CIDR list mixes IPv4 and IPv6):

* the host is the flow's destination -> an ``input`` rule on the interface holding the host's
  address on the flow's network, from exactly the source tier's addresses on that network, to
  the host's own address and port. ``internet`` sources: the public interface, from anywhere,
  to the public address. ``admin`` sources: the public interface, from the admin CIDRs only.
* the host is the flow's source -> the mirror ``output`` rule: out of that interface, from the
  host's address, to exactly the destination tier's addresses. ``internet`` destinations: out of
  the public interface, to anywhere.

Nothing else is accepted (the template adds only loopback, established/related and the ICMP
machinery that IP itself needs). Interface names come from the host's facts, matched by
address: Hetzner names its NICs differently per server type (eth0, enp7s0, ens10...).

The unit tests import this file directly (tests/unit/test_firewall_render.py); it depends on
nothing but the standard library (and Ansible's error class when Ansible is present).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

try:  # under Ansible, errors must be AnsibleFilterError to be reported with the task
    from ansible.errors import AnsibleFilterError as _FilterError
except ImportError:  # pragma: no cover - the unit tests run with Ansible installed
    _FilterError = ValueError  # type: ignore[misc,assignment]

INTERNET, ADMIN, PUBLIC = "internet", "admin", "public"
EXTERNAL = (INTERNET, ADMIN)
# nftables refuses comments longer than 128 bytes.
_COMMENT_MAX = 120


class FirewallError(_FilterError):  # type: ignore[misc,valid-type]
    """The topology, the host's addresses or its facts do not fit together."""


def _addresses_of(facts: Mapping[str, Any], ifname: str) -> set[str]:
    """Every IPv4 address Ansible reports on ``ifname`` (primary and secondaries)."""
    data = facts.get(ifname.replace("-", "_"), facts.get(ifname)) or {}
    found = set()
    primary = data.get("ipv4") or {}
    if isinstance(primary, Mapping) and primary.get("address"):
        found.add(str(primary["address"]))
    for extra in data.get("ipv4_secondaries") or []:
        if extra.get("address"):
            found.add(str(extra["address"]))
    return found


def firewall_interfaces(
    facts: Mapping[str, Any], addresses: Mapping[str, str], public_address: str | None = None
) -> dict[str, str]:
    """Map each network of the host (and ``public``) to the interface that holds its address.

    ``facts`` is ``ansible_facts`` (or the same shape: ``interfaces`` plus one entry per
    interface with ``ipv4.address``). Fails, naming the address, when no interface holds it:
    a firewall for the wrong interface would lock out the operator or open the wrong door.
    """
    wanted = dict(addresses)
    if public_address:
        wanted[PUBLIC] = public_address
    names = [str(n) for n in facts.get("interfaces") or []]
    result: dict[str, str] = {}
    for network, address in wanted.items():
        holders = sorted(n for n in names if n != "lo" and str(address) in _addresses_of(facts, n))
        if len(holders) != 1:
            where = "no interface" if not holders else f"several interfaces ({', '.join(holders)})"
            raise FirewallError(
                f"firewall: {where} holds this host's {network} address {address} "
                f"(interfaces seen: {', '.join(names) or 'none'}); check tierwall_addresses / "
                "tierwall_public_address in the inventory against the host's real addresses"
            )
        result[network] = holders[0]
    return result


def _hosts_of(topology: Mapping[str, Any], tier: str, network: str) -> list[str]:
    hosts = topology["hosts"]
    found = [
        str(h["addresses"][network])
        for _, h in sorted(hosts.items())
        if h["tier"] == tier and network in h["addresses"]
    ]
    if not found:
        raise FirewallError(f"firewall: the topology has no {tier} host on network {network!r}")
    return found


def _split_families(cidrs: Iterable[str]) -> dict[str, list[str]]:
    families: dict[str, list[str]] = {"ip": [], "ip6": []}
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            raise FirewallError(f"firewall: admin CIDR {cidr!r} is not a network address") from None
        families["ip" if network.version == 4 else "ip6"].append(str(network))
    return families


def _comment(flow: Mapping[str, Any]) -> str:
    text = (
        f"flow {flow['source']}->{flow['destination']} {flow['port']}/{flow['protocol']}: "
        f"{flow.get('purpose', '')}"
    )
    text = text.replace('"', "'")
    return text if len(text) <= _COMMENT_MAX else text[: _COMMENT_MAX - 3] + "..."


def firewall_rules(
    topology: Mapping[str, Any],
    tier: str,
    addresses: Mapping[str, str],
    interfaces: Mapping[str, str],
    public_address: str | None = None,
    admin_cidrs: Iterable[str] = (),
    public_address6: str | None = None,
) -> list[dict[str, Any]]:
    """The accept rules of ``tier``'s hosts, one per flow (see the module docstring).

    Each rule is a dict: chain (input/output), iface, family (ip/ip6), saddr and daddr (lists,
    or None for "any"), protocol, port, comment, flow (the source, destination, port, protocol).
    """
    rules: list[dict[str, Any]] = []
    for flow in topology["flows"]:
        source, destination = flow["source"], flow["destination"]
        if tier not in (source, destination):
            continue
        port, protocol, network = int(flow["port"]), str(flow["protocol"]), str(flow["network"])
        key = (source, destination, port, protocol)
        base = {"protocol": protocol, "port": port, "comment": _comment(flow), "flow": list(key)}
        incoming = destination == tier
        peer = source if incoming else destination
        if peer in EXTERNAL or network == PUBLIC:
            if not public_address:
                raise FirewallError(
                    f"firewall: flow {source}->{destination}:{port}/{protocol} crosses the public "
                    f"network but this {tier} host has no tierwall_public_address"
                )
            iface = interfaces[PUBLIC]
            if incoming:
                if peer == ADMIN:
                    families = _split_families(admin_cidrs)
                    if not families["ip"] and not families["ip6"]:
                        raise FirewallError(
                            "firewall: tierwall_admin_cidrs is empty: nobody could reach SSH on the "
                            "bastion; set the operators' CIDRs"
                        )
                    if families["ip"]:
                        rules.append(
                            {**base, "chain": "input", "iface": iface, "family": "ip",
                             "saddr": families["ip"], "daddr": [public_address]}
                        )
                    if families["ip6"]:
                        rules.append(
                            {**base, "chain": "input", "iface": iface, "family": "ip6",
                             "saddr": families["ip6"],
                             "daddr": [public_address6] if public_address6 else None}
                        )
                else:
                    rules.append(
                        {**base, "chain": "input", "iface": iface, "family": "ip",
                         "saddr": None, "daddr": [public_address]}
                    )
                    if public_address6:
                        rules.append(
                            {**base, "chain": "input", "iface": iface, "family": "ip6",
                             "saddr": None, "daddr": [public_address6]}
                        )
            else:
                if peer != INTERNET:
                    raise FirewallError(
                        f"firewall: flow {source}->{destination}: only the internet is reached "
                        "through the public interface"
                    )
                rules.append(
                    {**base, "chain": "output", "iface": iface, "family": "ip",
                     "saddr": [public_address], "daddr": None}
                )
            continue
        if network not in addresses:
            raise FirewallError(
                f"firewall: flow {source}->{destination}:{port}/{protocol} crosses network "
                f"{network!r}, but this {tier} host has no address there (tierwall_addresses: "
                f"{dict(addresses)})"
            )
        mine = str(addresses[network])
        peers = _hosts_of(topology, peer, network)
        rules.append(
            {
                **base,
                "chain": "input" if incoming else "output",
                "iface": interfaces[network],
                "family": "ip",
                "saddr": peers if incoming else [mine],
                "daddr": [mine] if incoming else peers,
            }
        )
    return rules


def _nft_set(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def firewall_nft_rule(rule: Mapping[str, Any]) -> str:
    """One rule as an nft statement (a line inside a chain block)."""
    direction = "iifname" if rule["chain"] == "input" else "oifname"
    parts = [f'{direction} "{rule["iface"]}"']
    family = rule.get("family") or "ip"
    if rule.get("saddr"):
        parts.append(f"{family} saddr {_nft_set(list(rule['saddr']))}")
    if rule.get("daddr"):
        parts.append(f"{family} daddr {_nft_set(list(rule['daddr']))}")
    if not rule.get("saddr") and not rule.get("daddr"):
        parts.append(f"meta nfproto {'ipv4' if family == 'ip' else 'ipv6'}")
    parts.append(f"{rule['protocol']} dport {int(rule['port'])}")
    parts.append("counter accept")
    parts.append(f'comment "{rule["comment"]}"')
    return " ".join(parts)


class FilterModule:
    """Ansible entry point: the filters the firewall role's template uses."""

    def filters(self) -> dict[str, Any]:
        return {
            "firewall_interfaces": firewall_interfaces,
            "firewall_rules": firewall_rules,
            "firewall_nft_rule": firewall_nft_rule,
        }

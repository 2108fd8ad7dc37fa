"""Three tiers on two private networks, read from the running hosts' own interfaces.

The promise (privacy policy VII): the proxy sits on the frontend network only, the db on the
backend network only, the app servers on both; nothing else is on the backend network. The
topology declares it and the Pulumi program attaches it; here every host's kernel says which
addresses it really holds.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

TIER_GROUP = "all"
# What the policy promises, by tier: the private networks each tier is attached to.
NETWORKS_OF_TIER = {
    "proxy": {"frontend"}, "app": {"frontend", "backend"}, "db": {"backend"}, "mgmt": {"frontend"},
}  # fmt: skip


def _global_addresses(host: Any) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of scope global on any interface (loopback and link-local excluded)."""
    result = host.run("ip -j address show")
    assert result.rc == 0, result.stderr
    found = []
    for link in json.loads(result.stdout):
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                found.append(ipaddress.ip_address(info["local"]))
    return found


def _networks_held(addresses, networks: dict[str, Any]) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for address in addresses:
        names = [n for n, net in networks.items() if address in ipaddress.ip_network(net["cidr"])]
        held.setdefault(names[0] if names else "outside", set()).add(str(address))
    return held


@pytest.mark.control("NET-03")
def test_each_tier_is_on_its_networks_only(
    host: Any, host_name: str, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """The host holds exactly its tier's private networks, at the addresses the topology gives;
    app and db hold no other address at all (the proxy's other one is public)."""
    tier = hostvars["tierwall_tier"]
    held = _networks_held(_global_addresses(host), topology["networks"])
    outside = held.pop("outside", set())
    assert set(held) == NETWORKS_OF_TIER[tier], f"{tier} host is on {sorted(held)}: {held}"
    declared = topology["hosts"][host_name]["addresses"]
    assert held == {name: {address} for name, address in declared.items()}
    if tier != "proxy":
        assert not outside, f"{host_name} holds addresses outside its networks: {sorted(outside)}"

"""Reading the resource graph the way the policies need it: tiers, network roles, attachments.

Stack policies see each resource's outputs plus its dependencies, but no resource ids. Which network
a server sits on is therefore found through ``property_dependencies``: a server's ``networks``
depends on the subnets it names (``subnet_id=subnet.id``), a subnet's ``networkId`` on its network.
An attachment this cannot resolve (a hard-coded id) counts as unproven, never as harmless.

The label keys come from ``tierwall.labels``, as in the program.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource

from tierwall.labels import NETWORK_LABEL, TIER_LABEL
from tierwall.topology import RFC1918

BACKEND = "backend"

SERVER = "hcloud:index/server:Server"
VOLUME = "hcloud:index/volume:Volume"
VOLUME_ATTACHMENT = "hcloud:index/volumeAttachment:VolumeAttachment"
FIREWALL = "hcloud:index/firewall:Firewall"
NETWORK = "hcloud:index/network:Network"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"
ROUTE = "hcloud:index/networkRoute:NetworkRoute"
SERVER_NETWORK = "hcloud:index/serverNetwork:ServerNetwork"
LOAD_BALANCER = "hcloud:index/loadBalancer:LoadBalancer"
PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp"
FLOATING_IP = "hcloud:index/floatingIp:FloatingIp"

# The properties through which a resource names a network or a subnet.
_NETWORK_REFERENCES = ("networks", "networkId", "subnetId")


def labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return props.get("labels") or {}


def tier_of(props: Mapping[str, Any]) -> str | None:
    return labels(props).get(TIER_LABEL)


def network_role(network: PolicyResource) -> str | None:
    return labels(network.props).get(NETWORK_LABEL)


def networks_named_by(resource: PolicyResource) -> dict[str, PolicyResource]:
    """The Networks a resource references, directly or through a subnet, keyed by URN."""
    found: dict[str, PolicyResource] = {}
    pending = [d for key in _NETWORK_REFERENCES for d in resource.property_dependencies.get(key, [])]
    seen: set[str] = set()
    while pending:
        dependency = pending.pop()
        if dependency.urn in seen:
            continue
        seen.add(dependency.urn)
        if dependency.resource_type == NETWORK:
            found[dependency.urn] = dependency
        elif dependency.resource_type == SUBNET:
            pending.extend(dependency.property_dependencies.get("networkId", []))
    return found


def server_networks(resources: Iterable[PolicyResource]) -> dict[str, dict[str, PolicyResource]]:
    """Server URN -> the Networks it is attached to, inline or through ServerNetwork resources."""
    resources = list(resources)
    attached: dict[str, dict[str, PolicyResource]] = {
        r.urn: networks_named_by(r) for r in resources if r.resource_type == SERVER
    }
    for attachment in (r for r in resources if r.resource_type == SERVER_NETWORK):
        for server in attachment.property_dependencies.get("serverId", []):
            attached.setdefault(server.urn, {}).update(networks_named_by(attachment))
    return attached


def reaches_beyond_private(destination: str) -> bool:
    """True for any route destination not inside RFC 1918 (0.0.0.0/0 above all); unparsable too."""
    try:
        network = ipaddress.ip_network(str(destination), strict=False)
    except ValueError:
        return True
    # RFC1918 holds IPv4 networks only: an IPv6 destination is never inside it.
    return not any(isinstance(network, ipaddress.IPv4Network) and network.subnet_of(r) for r in RFC1918)

"""The proxy tier: the only servers with public addresses, behind the stack's only Cloud Firewall."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import child_name, child_options, component_options, host_child_name
from host_server import ServerCommon, ServerSpec, declare_server, spread_group
from stack_labels import hetzner_name, labels

from tierwall.topology import ADMIN, INTERNET, PROXY, PUBLIC, Host, Topology

ANYWHERE = ("0.0.0.0/0", "::/0")


def public_firewall_rules(topology: Topology, admin_cidrs: Sequence[str]) -> list[hcloud.FirewallRuleArgs]:
    """Inbound rules derived from the flow matrix's public flows into the proxy, nothing else.

    Hetzner Cloud Firewalls are default-deny inbound, so these rules are the whole public surface:
    80/443 from anywhere, SSH from the admin CIDRs only. (They filter public interfaces only; the
    private networks are filtered by nftables on each host.)
    """
    rules = []
    for flow in topology.flows_to(PROXY):
        if flow.network != PUBLIC or flow.source not in (INTERNET, ADMIN):
            continue
        sources = ANYWHERE if flow.source == INTERNET else tuple(admin_cidrs)
        rules.append(
            hcloud.FirewallRuleArgs(
                direction="in",
                protocol=flow.protocol,
                port=str(flow.port),
                source_ips=list(sources),
                description=flow.purpose[:255],
            )
        )
    return rules


@dataclass(frozen=True)
class ProxyTierArgs:
    hosts: Sequence[Host]
    topology: Topology
    common: ServerCommon
    server_type: str
    admin_cidrs: Sequence[str]
    subnets: Mapping[str, hcloud.NetworkSubnet]


class ProxyTier(pulumi.ComponentResource):
    TYPE = "tierwall:tier:Proxy"
    # Every type token this component had before TYPE (see component_options): none yet.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    firewall: hcloud.Firewall
    placement_group: hcloud.PlacementGroup
    servers: dict[str, hcloud.Server]

    def __init__(self, name: str, args: ProxyTierArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        stack = args.common.stack
        firewall_name = child_name(name, "public")
        self.firewall = hcloud.Firewall(
            firewall_name,
            name=hetzner_name(stack, firewall_name),
            rules=public_firewall_rules(args.topology, args.admin_cidrs),
            labels=labels(stack, tier=PROXY),
            opts=child_options(self),
        )
        self.placement_group = spread_group(name, stack, PROXY, self)
        spec = ServerSpec(
            server_type=args.server_type,
            public=True,
            placement_group=self.placement_group,
            firewall=self.firewall,
        )
        self.servers = {
            host.name: declare_server(
                host_child_name(name, host), host, args.common, spec, args.subnets, self
            )
            for host in args.hosts
        }
        self.register_outputs(
            {
                "firewall_id": self.firewall.id,
                "public_ipv4": {n: s.ipv4_address for n, s in self.servers.items()},
                "public_ipv6": {n: s.ipv6_address for n, s in self.servers.items()},
            }
        )

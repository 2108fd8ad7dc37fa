"""The two private networks, one cloud subnet each, and deliberately no routes.

Every subnet of one Hetzner Network is routed to every other, so the tiers are separated by using
two Networks (frontend: proxy <-> app, backend: app <-> db), not two subnets. No NetworkRoute is
declared at all: a 0.0.0.0/0 route on the backend would give the db a way to the internet.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import child_name, child_options, component_options
from stack_labels import hetzner_name, labels

from tierwall.config import NETWORK_ZONE
from tierwall.topology import Topology


@dataclass(frozen=True)
class NetworksArgs:
    stack: str
    topology: Topology


class Networks(pulumi.ComponentResource):
    TYPE = "tierwall:tier:Networks"
    # Every type token this component had before TYPE (see component_options): none yet.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    networks: dict[str, hcloud.Network]
    subnets: dict[str, hcloud.NetworkSubnet]

    def __init__(self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        self.networks = {}
        self.subnets = {}
        for network in args.topology.networks:
            net = _network(name, network.name, str(network.cidr), args.stack, self)
            # One "cloud" subnet spanning the whole network: the topology numbers hosts inside it.
            # eu-central also holds hel1 (Finland); Germany is enforced on each server's location.
            self.subnets[network.name] = hcloud.NetworkSubnet(
                child_name(name, f"{network.name}-subnet"),
                network_id=net.id.apply(int),
                type="cloud",
                network_zone=NETWORK_ZONE,
                ip_range=str(network.cidr),
                opts=child_options(self, aliases=[pulumi.Alias(name=f"{network.name}-subnet")]),
            )
            self.networks[network.name] = net
        self.register_outputs({"network_ids": {name: net.id for name, net in self.networks.items()}})


def _network(component: str, role: str, cidr: str, stack: str, parent: pulumi.Resource) -> hcloud.Network:
    name = child_name(component, role)
    return hcloud.Network(
        name,
        name=hetzner_name(stack, name),
        ip_range=cidr,
        labels=labels(stack, network=role),
        # Stacks deployed before children carried the component's name know this network as
        # `frontend`/`backend`; the alias keeps it (replacing it would detach every server).
        opts=child_options(parent, aliases=[pulumi.Alias(name=role)]),
    )

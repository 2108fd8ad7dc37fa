"""The two private networks, one cloud subnet each, and deliberately no routes.

Every subnet of one Hetzner Network is routed to every other, so the tiers are separated by using
two Networks (frontend: proxy <-> app, backend: app <-> db), not two subnets. No NetworkRoute is
declared at all: a 0.0.0.0/0 route on the backend would give the db a way to the internet.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from stack_labels import hetzner_name, labels

from tierwall.config import NETWORK_ZONE
from tierwall.topology import Topology


@dataclass(frozen=True)
class NetworksArgs:
    stack: str
    topology: Topology


class Networks(pulumi.ComponentResource):
    networks: dict[str, hcloud.Network]
    subnets: dict[str, hcloud.NetworkSubnet]

    def __init__(self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tierwall:tier:Networks", name, None, opts)
        self.networks = {}
        self.subnets = {}
        for network in args.topology.networks:
            cidr = str(network.cidr)
            net = hcloud.Network(
                network.name,
                name=hetzner_name(args.stack, network.name),
                ip_range=cidr,
                labels=labels(args.stack, network=network.name),
                opts=pulumi.ResourceOptions(parent=self),
            )
            # One "cloud" subnet spanning the whole network: the topology numbers hosts inside it.
            # eu-central also holds hel1 (Finland); Germany is enforced on each server's location.
            self.subnets[network.name] = hcloud.NetworkSubnet(
                f"{network.name}-subnet",
                network_id=net.id.apply(int),
                type="cloud",
                network_zone=NETWORK_ZONE,
                ip_range=cidr,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.networks[network.name] = net
        self.register_outputs({"network_ids": {name: net.id for name, net in self.networks.items()}})

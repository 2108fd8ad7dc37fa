"""The application tier: private servers on both networks, the only hosts that reach the db."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import component_options, host_child_name
from host_server import ServerCommon, ServerSpec, declare_server, spread_group

from tierwall.topology import APP, Host


@dataclass(frozen=True)
class AppTierArgs:
    hosts: Sequence[Host]
    common: ServerCommon
    server_type: str
    subnets: Mapping[str, hcloud.NetworkSubnet]


class AppTier(pulumi.ComponentResource):
    TYPE = "tierwall:tier:App"
    # Every type token this component had before TYPE (see component_options): none yet.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    placement_group: hcloud.PlacementGroup
    servers: dict[str, hcloud.Server]

    def __init__(self, name: str, args: AppTierArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        self.placement_group = spread_group(name, args.common.stack, APP, self)
        # No public address and no firewall: with public_nets disabled there is no public interface
        # for a Cloud Firewall to filter. Egress goes through the proxy's filtering forward proxy.
        spec = ServerSpec(server_type=args.server_type, public=False, placement_group=self.placement_group)
        self.servers = {
            host.name: declare_server(
                host_child_name(name, host), host, args.common, spec, args.subnets, self
            )
            for host in args.hosts
        }
        self.register_outputs({"server_ids": {n: s.id for n, s in self.servers.items()}})

"""The management host: a private server on the frontend network that keeps every host's audit
trail apart from the tiers that process the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import component_options, host_child_name
from host_server import ServerCommon, ServerSpec, declare_server

from tierwall.topology import Host


@dataclass(frozen=True)
class MgmtTierArgs:
    hosts: Sequence[Host]
    common: ServerCommon
    server_type: str
    subnets: Mapping[str, hcloud.NetworkSubnet]


class MgmtTier(pulumi.ComponentResource):
    TYPE = "tierwall:tier:Mgmt"
    # Every type token this component had before TYPE (see component_options): none yet.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    servers: dict[str, hcloud.Server]

    def __init__(self, name: str, args: MgmtTierArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        # No public address, no firewall (no public interface to filter), no placement group (one
        # host). Delete-protected like the db: the archive is the year of evidence the Swiss
        # ordinance asks for, and a `pulumi destroy` must not take it by accident.
        spec = ServerSpec(server_type=args.server_type, public=False, protected=True)
        self.servers = {
            host.name: declare_server(
                host_child_name(name, host), host, args.common, spec, args.subnets, self
            )
            for host in args.hosts
        }
        self.register_outputs({"server_ids": {n: s.id for n, s in self.servers.items()}})

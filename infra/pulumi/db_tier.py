"""The database tier: one private server on the backend network and its data volume.

The volume is created unformatted and never automounted: the db role puts LUKS2 on it, because
Hetzner does not encrypt Cloud Volumes. Server and volume are delete-protected at Hetzner, which
also guards against a deletion from the console or the API, not only from `pulumi destroy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from host_server import ServerCommon, ServerSpec, declare_server
from stack_labels import hetzner_name, labels

from tierwall.topology import DB, Host


@dataclass(frozen=True)
class DatabaseTierArgs:
    hosts: Sequence[Host]
    common: ServerCommon
    server_type: str
    volume_size: int
    subnets: Mapping[str, hcloud.NetworkSubnet]


class DatabaseTier(pulumi.ComponentResource):
    servers: dict[str, hcloud.Server]
    volume: hcloud.Volume
    volume_attachment: hcloud.VolumeAttachment

    def __init__(self, name: str, args: DatabaseTierArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tierwall:tier:Database", name, None, opts)
        if len(args.hosts) != 1:
            raise ValueError(f"the db tier supports exactly one server, got {[h.name for h in args.hosts]}")
        host = args.hosts[0]
        stack = args.common.stack
        spec = ServerSpec(server_type=args.server_type, public=False, protected=True)
        server = declare_server(host, args.common, spec, args.subnets, self)
        self.servers = {host.name: server}
        self.volume = hcloud.Volume(
            f"{host.name}-data",
            name=hetzner_name(stack, f"{host.name}-data"),
            size=args.volume_size,
            # Same location as the server (a volume attaches only there); no format, no automount.
            location=args.common.location,
            delete_protection=True,
            labels=labels(stack, tier=DB),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.volume_attachment = hcloud.VolumeAttachment(
            f"{host.name}-data",
            volume_id=self.volume.id.apply(int),
            server_id=server.id.apply(int),
            automount=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs(
            {"server_id": server.id, "volume_id": self.volume.id, "linux_device": self.volume.linux_device}
        )

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
from component_options import child_name, child_options, component_options, host_child_name
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
    TYPE = "tierwall:tier:Database"
    # Every type token this component had before TYPE, oldest first. Renaming TYPE without moving
    # the old token here changes the URNs of the server and the volume: Pulumi would then try to
    # create new ones and delete these (Hetzner's delete protection would stop the deletion, after
    # the new ones exist). infra/pulumi/README.md has the rule.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    servers: dict[str, hcloud.Server]
    volume: hcloud.Volume
    volume_attachment: hcloud.VolumeAttachment

    def __init__(self, name: str, args: DatabaseTierArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        if len(args.hosts) != 1:
            raise ValueError(f"the db tier supports exactly one server, got {[h.name for h in args.hosts]}")
        host = args.hosts[0]
        server_name = host_child_name(name, host)
        spec = ServerSpec(server_type=args.server_type, public=False, protected=True)
        server = declare_server(server_name, host, args.common, spec, args.subnets, self)
        self.servers = {host.name: server}
        self.volume = _data_volume(child_name(server_name, "data"), args, self)
        self.volume_attachment = hcloud.VolumeAttachment(
            child_name(server_name, "data"),
            volume_id=self.volume.id.apply(int),
            server_id=server.id.apply(int),
            automount=False,
            opts=child_options(self),
        )
        self.register_outputs(
            {"server_id": server.id, "volume_id": self.volume.id, "linux_device": self.volume.linux_device}
        )


def _data_volume(name: str, args: DatabaseTierArgs, parent: pulumi.Resource) -> hcloud.Volume:
    stack = args.common.stack
    return hcloud.Volume(
        name,
        name=hetzner_name(stack, name),
        size=args.volume_size,
        # Same location as the server (a volume attaches only there); no format, no automount.
        location=args.common.location,
        delete_protection=True,
        labels=labels(stack, tier=DB),
        opts=child_options(parent),
    )

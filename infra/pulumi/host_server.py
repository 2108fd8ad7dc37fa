"""One Hetzner server for one host of the topology: what every tier's servers have in common."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import child_options
from stack_labels import hetzner_name, labels

from tierwall.topology import Host

# Hetzner gives a server public IPv4 AND IPv6 whenever public_nets is omitted, so both variants
# are always spelled out: an app or db server must never depend on a default.
PUBLIC_DUAL_STACK = [hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)]
NO_PUBLIC_ADDRESS = [hcloud.ServerPublicNetArgs(ipv4_enabled=False, ipv6_enabled=False)]


@dataclass(frozen=True)
class ServerCommon:
    """The settings every server of a stack shares, whatever its tier."""

    stack: str
    location: str
    image: str
    ssh_key_ids: Sequence[pulumi.Input[str]]
    user_data: str


@dataclass(frozen=True)
class ServerSpec:
    """What differs between tiers."""

    server_type: str
    public: bool
    placement_group: hcloud.PlacementGroup | None = None
    firewall: hcloud.Firewall | None = None
    # Hetzner requires delete and rebuild protection to be equal; one switch sets both.
    protected: bool = False


def declare_server(
    name: str,
    host: Host,
    common: ServerCommon,
    spec: ServerSpec,
    subnets: Mapping[str, hcloud.NetworkSubnet],
    parent: pulumi.Resource,
) -> hcloud.Server:
    """The server for ``host``, named ``name`` in Pulumi and (with the stack prefix) at Hetzner."""
    networks = [
        # subnet_id (not network_id) makes the server wait for its subnet; alias_ips=[] stops the
        # provider from detaching and re-attaching the network on every update.
        hcloud.ServerNetworkArgs(subnet_id=subnets[i.network].id, ip=str(i.address), alias_ips=[])
        for i in host.interfaces
    ]
    return hcloud.Server(
        name,
        name=hetzner_name(common.stack, name),
        server_type=spec.server_type,
        image=common.image,
        location=common.location,
        ssh_keys=list(common.ssh_key_ids),
        user_data=common.user_data,
        labels=labels(common.stack, tier=host.tier),
        public_nets=PUBLIC_DUAL_STACK if spec.public else NO_PUBLIC_ADDRESS,
        networks=networks,
        # Attached at creation: the proxy is never on the internet without its firewall.
        firewall_ids=[spec.firewall.id.apply(int)] if spec.firewall else None,
        placement_group_id=spec.placement_group.id.apply(int) if spec.placement_group else None,
        delete_protection=spec.protected,
        rebuild_protection=spec.protected,
        opts=child_options(
            parent,
            # All three only act at first boot and force a replacement when changed. Ansible manages
            # the ops user's keys afterwards; rotating a key must not rebuild the servers (or the db).
            # A server's release moves in place (ansible/playbooks/upgrade-debian-13.yml): a new image
            # in the stack config applies to servers created later, never replaces a running one.
            ignore_changes=["user_data", "ssh_keys", "image"],
        ),
    )


def spread_group(name: str, stack: str, tier: str, parent: pulumi.Resource) -> hcloud.PlacementGroup:
    """A spread placement group: the tier's servers land on different physical hosts."""
    return hcloud.PlacementGroup(
        name,
        name=hetzner_name(stack, name),
        type="spread",
        labels=labels(stack, tier=tier),
        opts=child_options(parent),
    )

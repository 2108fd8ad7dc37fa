"""The stack outputs: the stable, snake_case contract that tierwall.inventory and Ansible read.

``pulumi stack output --json`` gives::

    stack, location, domain, admin_cidrs (list), app_port (int),
    networks: {frontend|backend: {id, cidr}},
    hosts: {<host>: {tier, private_ips: {<network>: ip}, public_ipv4, public_ipv6 (proxy only)}},
    db_volume_id, db_volume_linux_device, verify_ssh_public_key ("" when the stack has none),
    backup_repositories: [{location, endpoint, bucket, region, ca_file}] (pgBackRest's repo1, repo2...)
    backup_retention_days: days a full backup and its WAL are kept in every repository

Private addresses are the ones Hetzner reports for each server, not the ones the program asked
for, so ``tierwall inventory`` (check_outputs_match) notices a stack that drifted from the topology.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from tierwall.config import StackConfig
from tierwall.topology import PROXY, Topology


def _private_ips(attached: Any, network_ids: Mapping[str, str]) -> dict[str, str]:
    by_id = {int(net_id): name for name, net_id in network_ids.items()}
    result: dict[str, str] = {}
    # Each entry is a ServerNetwork output (a dict keyed by the snake_case field names).
    for attachment in attached or []:
        name = by_id.get(int(attachment["network_id"]))
        if name is not None:
            result[name] = attachment["ip"]
    return result


def host_output(
    tier: str, server: hcloud.Server, networks: Mapping[str, hcloud.Network]
) -> pulumi.Output[dict[str, Any]]:
    names = list(networks)

    def build(values: list[Any]) -> dict[str, Any]:
        attached, *ids = values
        return {"tier": tier, "private_ips": _private_ips(attached, dict(zip(names, ids, strict=True)))}

    output = pulumi.Output.all(server.networks, *(networks[n].id for n in names)).apply(build)
    if tier != PROXY:
        return output
    return pulumi.Output.all(output, server.ipv4_address, server.ipv6_address).apply(
        lambda v: {**v[0], "public_ipv4": v[1], "public_ipv6": v[2]}
    )


def stack_outputs(
    stack: str,
    config: StackConfig,
    topology: Topology,
    networks: Mapping[str, hcloud.Network],
    servers: Mapping[str, hcloud.Server],
    db_volume: hcloud.Volume,
) -> dict[str, Any]:
    return {
        "stack": stack,
        "location": config.location,
        "domain": config.domain,
        "admin_cidrs": list(config.admin_cidrs),
        "app_port": topology.ports.app,
        "networks": {n.name: {"id": networks[n.name].id, "cidr": str(n.cidr)} for n in topology.networks},
        "hosts": {h.name: host_output(h.tier, servers[h.name], networks) for h in topology.hosts},
        "db_volume_id": db_volume.id,
        "db_volume_linux_device": db_volume.linux_device,
        # The inventory installs it for the verify account; empty: no such account.
        "verify_ssh_public_key": config.verify_ssh_public_key,
        # Where the db's backups go: buckets are no hcloud resource, so the program creates none; the
        # stack records which ones it was deployed with, and `tierwall inventory` reads them here.
        "backup_repositories": [
            {
                "location": r.location,
                "endpoint": r.endpoint,
                "bucket": r.bucket,
                "region": r.region,
                "ca_file": r.ca_file,
            }
            for r in config.backup_repositories
        ],
        "backup_retention_days": config.backup_retention_days,
    }

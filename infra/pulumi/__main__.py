"""tierwall on Hetzner Cloud (Germany): the Nginx proxy, the app servers and the database server.

The whole ``tierwall:`` config is validated before the first resource is declared; everything else
(networks, addresses, which tier sits on which network, which ports are public) is derived from
``tierwall.topology``, the single source of truth that the lab, Ansible and the tests read too.
Run with the Pulumi CLI from the repository root (Pulumi.yaml: ``main: infra/pulumi/``).
"""

from __future__ import annotations

import pulumi
from app_tier import AppTier, AppTierArgs
from db_tier import DatabaseTier, DatabaseTierArgs
from host_server import ServerCommon
from mgmt_tier import MgmtTier, MgmtTierArgs
from network_tier import Networks, NetworksArgs
from operator_keys import OperatorKeys, OperatorKeysArgs
from program_config import load_stack_config
from proxy_tier import ProxyTier, ProxyTierArgs
from stack_outputs import stack_outputs

from tierwall.cloud_init import user_data
from tierwall.topology import APP, DB, MGMT, PROXY

stack = pulumi.get_stack()
config = load_stack_config(stack)  # raises StackConfigRefused: nothing below runs on a bad config
topology = config.topology()

# Components are named so that their children keep the names deployed stacks have: each tier after
# its tier (its servers are "<tier>-<n>"), the keys "operator" (operator-1, ...). The keys' component
# was "operators" before its children were named from it; the alias keeps that component.
keys = OperatorKeys(
    "operator",
    OperatorKeysArgs(stack=stack, public_keys=config.ssh_public_keys),
    pulumi.ResourceOptions(aliases=[pulumi.Alias(name="operators")]),
)
networks = Networks("networks", NetworksArgs(stack=stack, topology=topology))
common = ServerCommon(
    stack=stack,
    location=config.location,
    image=config.image,
    ssh_key_ids=keys.ids,
    user_data=user_data(config.ssh_public_keys),
)

proxy = ProxyTier(
    "proxy",
    ProxyTierArgs(
        hosts=topology.hosts_in(PROXY),
        topology=topology,
        common=common,
        server_type=config.server_types[PROXY],
        admin_cidrs=config.admin_cidrs,
        subnets=networks.subnets,
    ),
)
app = AppTier(
    "app",
    AppTierArgs(
        hosts=topology.hosts_in(APP),
        common=common,
        server_type=config.server_types[APP],
        subnets=networks.subnets,
    ),
)
db = DatabaseTier(
    "db",
    DatabaseTierArgs(
        hosts=topology.hosts_in(DB),
        common=common,
        server_type=config.server_types[DB],
        volume_size=config.db_volume_size,
        subnets=networks.subnets,
    ),
)
mgmt = MgmtTier(
    "mgmt",
    MgmtTierArgs(
        hosts=topology.hosts_in(MGMT),
        common=common,
        server_type=config.server_types[MGMT],
        subnets=networks.subnets,
    ),
)

outputs = stack_outputs(
    stack,
    config,
    topology,
    networks.networks,
    {**proxy.servers, **app.servers, **db.servers, **mgmt.servers},
    db.volume,
)
for output_name, value in outputs.items():
    pulumi.export(output_name, value)

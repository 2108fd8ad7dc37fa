"""Ansible inventory from the topology: the same shape for the lab and for a Hetzner stack.

Groups ``proxy``, ``app``, ``db`` and ``mgmt``. The operator reaches the proxy on its public
address, an app server and the management host through the proxy (one jump) and the db through the
proxy and then an app server (two jumps), exactly as on Hetzner, where only the proxy has a public
address.
The whole topology (networks, hosts, flow matrix) travels in ``all.vars.tierwall_topology``
so roles render host firewalls and tests check live state against the one model. The stack's
backup repositories travel in ``all.vars.tierwall_backup_repositories`` (pgBackRest's repo1,
repo2... in the stack file's order) with ``tierwall_backup_retention_days``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tierwall.config import DEFAULT_BACKUP_RETENTION_DAYS, BackupRepository
from tierwall.paths import REPO
from tierwall.topology import (
    APP,
    BACKEND,
    DB,
    FRONTEND,
    MGMT,
    PROXY,
    TIERS,
    Ports,
    Topology,
    build_topology,
)

OPS_USER = "ops"
# The scheduled production check's account: its own key, no sudo but the common role's short list
# of read-only commands (docs/operations/verification.md).
VERIFY_USER = "verify"


@dataclass(frozen=True)
class Access:
    """How the operator reaches the hosts: public proxy addresses and SSH settings."""

    proxy_public: Mapping[str, str]  # proxy host name -> public address
    admin_cidrs: tuple[str, ...]  # who may SSH to the bastion (the flow matrix's "admin")
    domain: str  # the platform's public name
    ssh_user: str = OPS_USER
    private_key_file: str | None = None
    known_hosts_file: str | None = None
    # Only the lab may relax host key checking (its keys are new on every build); production
    # inventories keep OpenSSH's default of asking.
    strict_host_key_checking: str = "yes"
    target: str = "hetzner"  # "lab" or the Pulumi stack name
    # The db's block device for its encrypted data (Hetzner: the Volume's linux_device).
    db_volume_device: str | None = None
    # A command SSH opens its first hop through (ProxyCommand, with %h and %p), instead of a
    # direct TCP connection: the lab's containment gate.
    connect_command: str | None = None
    # The verify account's public key(s), installed by the common role; empty: no such account.
    verify_keys: tuple[str, ...] = ()
    # False for the verify account's own inventory: it may not become root (sudo runs only its
    # listed commands, each named in full).
    become: bool = True
    # The stack config's backupRepositories (in pgBackRest's order) and backupRetentionDays.
    backup_repositories: tuple[BackupRepository, ...] = ()
    backup_retention_days: int = DEFAULT_BACKUP_RETENTION_DAYS


class InventoryError(ValueError):
    pass


def _ssh_options(access: Access) -> list[str]:
    options = [f"-o StrictHostKeyChecking={access.strict_host_key_checking}", "-o ConnectTimeout=10"]
    if access.known_hosts_file:
        options.append(f"-o UserKnownHostsFile={access.known_hosts_file}")
    if access.private_key_file:
        options += [f"-o IdentityFile={access.private_key_file}", "-o IdentitiesOnly=yes"]
    return options


def _first_hop_option(access: Access, nested: bool = False) -> str:
    """`` -o ProxyCommand=...`` for the connection to the bastion itself, or nothing. Spaces are
    escaped, not quoted: the option may end up two ProxyCommands deep, inside single quotes.
    ``nested``: the option sits inside a command that is itself a ProxyCommand, whose ssh expands
    %-tokens once before this one's does."""
    if not access.connect_command:
        return ""
    command = access.connect_command.replace("%", "%%") if nested else access.connect_command
    return " -o ProxyCommand=" + command.replace(" ", "\\ ")


def build_inventory(topology: Topology, access: Access) -> dict[str, Any]:
    missing = [h.name for h in topology.hosts_in(PROXY) if h.name not in access.proxy_public]
    if missing:
        raise InventoryError(f"no public address for proxy host(s) {missing}")
    first_proxy = topology.hosts_in(PROXY)[0]
    first_app = topology.hosts_in(APP)[0]
    bastion = access.proxy_public[first_proxy.name]
    base_args = " ".join(_ssh_options(access))

    groups: dict[str, Any] = {tier: {"hosts": {}} for tier in TIERS}
    for host in topology.hosts:
        hostvars: dict[str, Any] = {
            "tierwall_tier": host.tier,
            "tierwall_addresses": {i.network: str(i.address) for i in host.interfaces},
        }
        if host.tier == PROXY:
            hostvars["ansible_host"] = access.proxy_public[host.name]
            hostvars["tierwall_public_address"] = access.proxy_public[host.name]
            chain: list[str] = []
        elif host.tier in (APP, MGMT):
            hostvars["ansible_host"] = str(host.address(FRONTEND))
            chain = [bastion]
        elif host.tier == DB:
            hostvars["ansible_host"] = str(host.address(BACKEND))
            if access.db_volume_device:
                hostvars["tierwall_volume_device"] = access.db_volume_device
            chain = [bastion, str(first_app.address(FRONTEND))]
        else:
            raise ValueError(f"host {host.name}: no access path for tier {host.tier!r}")
        args = base_args
        if not chain:
            args += _first_hop_option(access)
        else:
            args += f' -o ProxyCommand="{_proxy_command(access, chain)}"'
        hostvars["ansible_ssh_common_args"] = args
        groups[host.tier]["hosts"][host.name] = hostvars

    all_vars: dict[str, Any] = {
        "ansible_user": access.ssh_user,
        "ansible_become": access.become,
        "tierwall_target": access.target,
        "tierwall_topology": topology.as_dict(),
        "tierwall_proxy_public": dict(access.proxy_public),
        "tierwall_admin_cidrs": list(access.admin_cidrs),
        "tierwall_domain": access.domain,
        "tierwall_backup_repositories": backup_repositories_var(access.backup_repositories),
        "tierwall_backup_retention_days": access.backup_retention_days,
    }
    if access.private_key_file:
        all_vars["ansible_ssh_private_key_file"] = access.private_key_file
    if access.verify_keys:
        all_vars["common_verify_authorized_keys"] = list(access.verify_keys)
    if access.ssh_user == VERIFY_USER:
        all_vars["tierwall_verify_account"] = True
    return {"all": {"vars": all_vars, "children": groups}}


def backup_repositories_var(
    repositories: Sequence[BackupRepository], root: str | Path = REPO
) -> list[dict[str, str]]:
    """``tierwall_backup_repositories``: plain mappings named as pgBackRest numbers them (repo1,
    repo2... in the stack file's order), each CA bundle as an absolute path on the controller
    (a relative one is relative to the repository ``root``), or "" for the system's trust store."""
    return [
        {
            "name": f"repo{number}",
            "location": repository.location,
            "endpoint": repository.endpoint,
            "bucket": repository.bucket,
            "region": repository.region,
            "ca_file": os.path.normpath(Path(root) / repository.ca_file) if repository.ca_file else "",
        }
        for number, repository in enumerate(repositories, start=1)
    ]


def _proxy_command(access: Access, chain: Sequence[str]) -> str:
    """``ssh -W`` through each hop of ``chain`` in turn (proxy, then app for the db)."""
    opts = " ".join(_ssh_options(access))
    command = f"ssh {opts}{_first_hop_option(access, nested=True)} -W %h:%p {access.ssh_user}@{chain[0]}"
    for hop in chain[1:]:
        # The outer ssh expands %-tokens in its whole ProxyCommand, the nested one included:
        # doubling them leaves %h:%p for the inner ssh, which must reach the hop, not the target.
        # The inner command runs under /bin/sh -c; single quotes protect it there.
        inner = command.replace("%", "%%")
        command = f"ssh {opts} -o ProxyCommand='{inner}' -W %h:%p {access.ssh_user}@{hop}"
    return command


def write_inventory(inventory: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Generated by `tierwall inventory`; do not edit: regenerate it from the topology.\n"
        + yaml.safe_dump(dict(inventory), sort_keys=False, default_flow_style=False)
    )
    return path


def inventory_target(path: str | Path) -> str:
    """``all.vars.tierwall_target`` of an inventory written by :func:`write_inventory`: "lab" or
    the stack's name. `make verify` names its target with it, so the audit judges the evidence
    against the hosts this inventory reaches."""
    try:
        document = yaml.safe_load(Path(path).read_text())
        target = document["all"]["vars"]["tierwall_target"]
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path} is not YAML: {exc}") from None
    except (KeyError, TypeError):
        raise InventoryError(
            f"{path} has no all.vars.tierwall_target: regenerate it with `tierwall inventory`"
        ) from None
    if not isinstance(target, str) or not target:
        raise InventoryError(f"{path}: all.vars.tierwall_target must be a non-empty string, not {target!r}")
    return target


def proxy_public_from_outputs(outputs: Mapping[str, Any]) -> dict[str, str]:
    """Read the proxies' public addresses from ``pulumi stack output --json``."""
    try:
        hosts = outputs["hosts"]
    except KeyError:
        raise InventoryError(
            "the outputs file has no 'hosts' output; export it from the Pulumi program "
            "(pulumi stack output --json > outputs.json)"
        ) from None
    result = {}
    for name, host in hosts.items():
        if host.get("tier") == PROXY:
            address = host.get("public_ipv4")
            if not address:
                raise InventoryError(f"output hosts.{name}.public_ipv4 is missing")
            result[name] = address
    return result


def backup_from_outputs(outputs: Mapping[str, Any]) -> tuple[tuple[BackupRepository, ...], int]:
    """The backup repositories and retention a stack was deployed with (its outputs
    ``backup_repositories`` and ``backup_retention_days``), for the inventory."""
    fix = "run `pulumi up` with this version (it records them), then `pulumi stack output --json` again"
    raw = outputs.get("backup_repositories")
    days = outputs.get("backup_retention_days")
    if not raw or not isinstance(raw, list) or not isinstance(days, int) or isinstance(days, bool):
        raise InventoryError(f"the outputs name no backup repositories or retention: {fix}")
    try:
        repositories = tuple(
            BackupRepository(
                location=str(r["location"]), endpoint=str(r["endpoint"]), bucket=str(r["bucket"]),
                region=str(r.get("region") or r["location"]), ca_file=str(r.get("ca_file") or ""),
            )
            for r in raw
        )  # fmt: skip
    except (KeyError, TypeError):
        missing = "output backup_repositories lacks location, endpoint or bucket"
        raise InventoryError(f"{missing}: {fix}") from None
    return repositories, days


def check_outputs_match(topology: Topology, outputs: Mapping[str, Any]) -> None:
    """The stack's real addresses must be the topology's: the model is the source of truth."""
    hosts = outputs.get("hosts", {})
    for host in topology.hosts:
        if host.name not in hosts:
            raise InventoryError(f"host {host.name} is in the topology but not in the stack outputs")
        reported = hosts[host.name].get("private_ips", {})
        for interface in host.interfaces:
            got = reported.get(interface.network)
            if got != str(interface.address):
                raise InventoryError(
                    f"host {host.name} has {got} on {interface.network} in the stack, "
                    f"the topology says {interface.address}: run `pulumi up` or fix the stack config"
                )
    extra = sorted(set(hosts) - {h.name for h in topology.hosts})
    if extra:
        raise InventoryError(f"the stack has host(s) {extra} that the topology does not know")


def load_outputs(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InventoryError(f"outputs file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InventoryError(f"{path} is not JSON (expected `pulumi stack output --json`): {exc}") from None


def topology_from_outputs(outputs: Mapping[str, Any]) -> Topology:
    """Rebuild the topology from the parameters the stack exports, then check the addresses."""
    try:
        networks = outputs["networks"]
        hosts = outputs["hosts"]
        topology = build_topology(
            frontend_cidr=networks[FRONTEND]["cidr"],
            backend_cidr=networks[BACKEND]["cidr"],
            proxy_count=sum(1 for h in hosts.values() if h.get("tier") == PROXY),
            app_count=sum(1 for h in hosts.values() if h.get("tier") == APP),
            ports=Ports(app=int(outputs["app_port"])),
        )
    except KeyError as exc:
        raise InventoryError(
            f"the outputs file lacks {exc}; it must be `pulumi stack output --json` of this program"
        ) from None
    check_outputs_match(topology, outputs)
    return topology

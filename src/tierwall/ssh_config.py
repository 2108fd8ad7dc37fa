"""`tierwall ssh-config`: an OpenSSH client config for people, written from an Ansible inventory.

One ``Host`` block per host of the inventory, named as the inventory names it. The jumps are read
from the inventory itself: each host's ``ProxyCommand`` (tierwall.inventory's nested ``ssh -W``
chain) lists its hops innermost first, and each hop's address is mapped back to the inventory host
that has it. So ``ssh db-1`` goes through exactly the proxy and app server Ansible goes through,
as ``ProxyJump proxy-1,app-1``, and each hop uses its own block's user, key and known_hosts.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tierwall.errors import TierwallError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class HostEntry:
    """One ``Host`` block."""

    name: str
    hostname: str
    user: str
    jumps: tuple[str, ...]  # inventory names of the hops, first hop first
    identity_file: str | None
    known_hosts_file: str
    # ProxyCommand of a host reached without a hop (the lab's containment gate), if any.
    connect_command: str | None = None


def load_inventory(path: Path) -> dict[str, Any]:
    try:
        inventory = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TierwallError(
            f"no inventory at {path}",
            "write it with `tierwall inventory` (a stack) or `tierwall lab up` (the lab)",
        ) from None
    if not isinstance(inventory, dict) or "children" not in inventory.get("all", {}):
        raise TierwallError(f"{path} is not an inventory written by `tierwall inventory`", "regenerate it")
    return inventory


def host_entries(inventory: Mapping[str, Any]) -> list[HostEntry]:
    """Every host of the inventory, in its order (proxies, app servers, db)."""
    all_vars = inventory["all"].get("vars") or {}
    hosts = _hosts(inventory)
    by_address = {str(hostvars["ansible_host"]): name for name, hostvars in hosts.items()}
    return [_entry(name, hostvars, all_vars, by_address) for name, hostvars in hosts.items()]


def _hosts(inventory: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for group in (inventory["all"].get("children") or {}).values():
        result.update((group or {}).get("hosts") or {})
    return result


def _entry(
    name: str, hostvars: Mapping[str, Any], all_vars: Mapping[str, Any], by_address: Mapping[str, str]
) -> HostEntry:
    options = shlex.split(str(hostvars.get("ansible_ssh_common_args", "")))
    jumps = []
    for address in jump_addresses(options):
        if address not in by_address:
            raise TierwallError(
                f"host {name} jumps through {address}, which no host of the inventory has",
                "regenerate the inventory with `tierwall inventory`",
            )
        jumps.append(by_address[address])
    key = hostvars.get("ansible_ssh_private_key_file") or all_vars.get("ansible_ssh_private_key_file")
    return HostEntry(
        name=name,
        hostname=str(hostvars["ansible_host"]),
        user=str(hostvars.get("ansible_user") or all_vars.get("ansible_user") or "ops"),
        jumps=tuple(jumps),
        identity_file=str(key) if key else None,
        known_hosts_file=_ssh_option(options, "UserKnownHostsFile") or DEFAULT_KNOWN_HOSTS,
        connect_command=None if jumps else _ssh_option(options, "ProxyCommand"),
    )


def jump_addresses(options: list[str]) -> list[str]:
    """The hops of a nested ``-o ProxyCommand="ssh ... -W %h:%p user@hop"`` chain, first hop first."""
    command = _ssh_option(options, "ProxyCommand")
    if command is None:
        return []
    inner = shlex.split(command)
    if inner[0] != "ssh":
        return []  # a connect command (the lab's containment gate), not a hop
    # The hop is the inner ssh's destination, its last word; a hop before it is in its own
    # ProxyCommand, one level further in.
    return [*jump_addresses(inner), inner[-1].rpartition("@")[2]]


def _ssh_option(options: list[str], name: str) -> str | None:
    """The value of ``-o Name=value`` among ssh's arguments (the first one wins, as in ssh)."""
    prefix = f"{name.lower()}="
    for flag, value in itertools.pairwise(options):
        if flag == "-o" and value.lower().startswith(prefix):
            return value[len(prefix) :]
    return None


def render(entries: list[HostEntry], source: str) -> str:
    lines = [
        f"# Written by `tierwall ssh-config` from {source}; regenerate it rather than edit it.",
        "# Use it with `ssh -F THIS_FILE db-1`, or `Include` it from ~/.ssh/config.",
    ]
    for entry in entries:
        lines += ["", *_block(entry)]
    return "\n".join(lines) + "\n"


def _block(entry: HostEntry) -> list[str]:
    lines = [
        f"Host {entry.name}",
        f"    HostName {entry.hostname}",
        f"    User {entry.user}",
    ]
    if entry.jumps:
        lines.append(f"    ProxyJump {','.join(entry.jumps)}")
    if entry.connect_command:
        # The lab's gate: the bastion is connected only while the lab's bridge carries its route.
        lines.append(f"    ProxyCommand {entry.connect_command}")
    if entry.identity_file:
        # Only the inventory's key: an agent holding many keys would otherwise offer them all
        # first and hit the server's MaxAuthTries before the right one.
        lines += [f"    IdentityFile {_quoted(entry.identity_file)}", "    IdentitiesOnly yes"]
    lines += [
        f"    UserKnownHostsFile {_quoted(entry.known_hosts_file)}",
        "    StrictHostKeyChecking yes",
    ]
    return lines


def _quoted(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def write_private(text: str, path: Path) -> Path:
    # ssh refuses a config file that others may write; owner-only is what it expects.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
    return path


# -- the command --------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ssh-config", help="write an OpenSSH client config (Host blocks with their jumps) from an inventory"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inventory", metavar="FILE", help="an inventory written by `tierwall inventory`")
    source.add_argument("--lab", action="store_true", help="the lab's inventory (.lab/inventory.yml)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (mode 0600) instead of stdout")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    if args.lab:
        from tierwall.lab.inventory import INVENTORY

        path = INVENTORY
    else:
        path = Path(args.inventory)
    text = render(host_entries(load_inventory(path)), str(path))
    if args.output:
        print(write_private(text, Path(args.output)))
    else:
        sys.stdout.write(text)
    return 0

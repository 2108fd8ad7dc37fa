"""The lab's SSH key, known_hosts and Ansible inventory (``.lab/``, git-ignored).

The inventory is :func:`tierwall.inventory.build_inventory` of the lab's topology (the same
shape and jump chain as for Hetzner) plus lab-only variables:

* ``tierwall_lab_sentinel``     the sentinel "internet" host (203.0.113.50)
* ``tierwall_lab_operator``     the operator's address on the lab's internet (203.0.113.1)
* ``tierwall_lab_namespaces``   host -> network namespace (for probes run from this machine)
* ``tierwall_dns_resolvers``    the resolvers the proxy reaches through the NAT
* ``tierwall_lab_image``        the stack image the machines run (``debian-12`` or ``debian-13``;
  ``TIERWALL_LAB_IMAGE`` when ``up`` built them), also the lab's stack config's ``image``
* ``tierwall_volume_device``    (db hosts) the block device of the db's volume
* ``tierwall_lab_offsite``      the off-site backup store (203.0.113.60), whose address the
  proxies' ``backup_relay_endpoint_addresses`` give for the lab's repository endpoints
* ``postgresql_encryption_backend: fscrypt`` (the db group) instead of the role's default, LUKS:
  the lab's machines have no device-mapper, so LUKS cannot be opened there

The lab has a verify account as a stack with ``tierwall:verifySshPublicKey`` has: a key pair of
its own (``.lab/ssh/verify_ed25519``), whose public half goes through the lab's stack config into
the inventory (``common_verify_authorized_keys``), so the common role creates the account.
``tierwall inventory --lab --verify`` writes the inventory that connects as that account
(``.lab/inventory-verify.yml``), as ``tierwall inventory --verify`` does for a stack.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from tierwall.config import UPGRADE_ONLY_IMAGES, StackConfig, parse_config
from tierwall.inventory import OPS_USER, VERIFY_USER, Access, build_inventory, write_inventory
from tierwall.lab.addressing import OFFSITE, OFFSITE_NS, OPERATOR, SENTINEL, SENTINEL_NS, netns, proxy_public
from tierwall.lab.image import requested_image
from tierwall.lab.offsite import CA_FILE as OFFSITE_CA_FILE
from tierwall.lab.state import State
from tierwall.lab.system import LabError, run
from tierwall.paths import LAB_CONFIG, LAB_DIR
from tierwall.topology import DB, PROXY, Topology

SSH_DIR = LAB_DIR / "ssh"
PRIVATE_KEY = SSH_DIR / "id_ed25519"
PUBLIC_KEY = SSH_DIR / "id_ed25519.pub"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
INVENTORY = LAB_DIR / "inventory.yml"
# The read-only verify account's own key pair, never the operator's: the same separation a stack's
# config enforces (tierwall:verifySshPublicKey may not be one of sshPublicKeys).
VERIFY_PRIVATE_KEY = SSH_DIR / "verify_ed25519"
VERIFY_PUBLIC_KEY = SSH_DIR / "verify_ed25519.pub"
VERIFY_INVENTORY = LAB_DIR / "inventory-verify.yml"
# The role defaults are a real stack's values; the lab's db differs only where its machines
# cannot do the same: no device-mapper in a systemd-nspawn machine, so no LUKS.
LAB_DB_VARS = {"postgresql_encryption_backend": "fscrypt"}


def _ensure_key_pair(private: Path, public: Path, comment: str) -> str:
    if not (private.exists() and public.exists()):
        SSH_DIR.mkdir(parents=True, exist_ok=True)
        SSH_DIR.chmod(0o700)
        for f in (private, public):
            f.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)])
    return public.read_text().strip()


def ensure_key() -> str:
    """The lab's ops key pair (generated once per clone). Returns the public key line."""
    return _ensure_key_pair(PRIVATE_KEY, PUBLIC_KEY, "tierwall-lab-ops")


def ensure_verify_key() -> str:
    """The lab's verify key pair (generated once per clone). Returns the public key line."""
    return _ensure_key_pair(VERIFY_PRIVATE_KEY, VERIFY_PUBLIC_KEY, "tierwall-lab-verify")


def lab_config(
    public_key: str | None = None,
    app_count: int | None = None,
    image: str | None = None,
    verify_key: str | None = None,
) -> StackConfig:
    """lab/stack.yaml validated like a Pulumi stack file, with the lab's key (and app count, image:
    the release the machines run, and the verify account's key, checked as a stack's is)."""
    document = yaml.safe_load(LAB_CONFIG.read_text())
    raw: dict[str, Any] = {}
    for full_key, value in document["config"].items():
        namespace, _, name = str(full_key).partition(":")
        if namespace == "tierwall":
            raw[name] = value
    raw["sshPublicKeys"] = [public_key or _placeholder_key()]
    if app_count is not None:
        raw["appCount"] = app_count
    # A Debian 12 lab is the upgrade drill's starting point: a stack may no longer name it, so the
    # lab checks its file as a stack's and sets the release past the stack-only refusal.
    drill = image in UPGRADE_ONLY_IMAGES
    if image is not None and not drill:
        raw["image"] = image
    if verify_key:
        raw["verifySshPublicKey"] = verify_key
    config = parse_config(raw, str(LAB_CONFIG))
    return dataclasses.replace(config, image=image) if drill and image else config


def _placeholder_key() -> str:
    return (
        PUBLIC_KEY.read_text().strip()
        if PUBLIC_KEY.exists()
        else "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIplaceholder"
    )


def addresses_of(topology: Topology) -> dict[str, list[str]]:
    """Every address the operator may use to name each host (for known_hosts)."""
    result = {}
    for host in topology.hosts:
        names = [str(i.address) for i in host.interfaces]
        if host.tier == PROXY:
            names.insert(0, str(proxy_public(int(host.name.rsplit("-", 1)[1]))))
        result[host.name] = names
    return result


def write_known_hosts(topology: Topology, host_keys: dict[str, list[str]]) -> Path:
    lines = []
    for host, names in addresses_of(topology).items():
        for key in host_keys[host]:
            lines.append(f"{','.join(names)} {key}\n")
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    KNOWN_HOSTS.write_text("".join(lines))
    return KNOWN_HOSTS


def lab_inventory(
    config: StackConfig, state: State | None, dns: list[str], verify: bool = False
) -> dict[str, Any]:
    """The lab's inventory; ``verify``: the one that connects as the verify account (no become)."""
    topology = config.topology()
    proxies = {h.name: str(proxy_public(int(h.name.rsplit("-", 1)[1]))) for h in topology.hosts_in(PROXY)}
    verify_key = config.verify_ssh_public_key
    if verify and not verify_key:
        raise LabError("the lab's config has no verify key: the verify inventory needs the account")
    access = Access(
        proxy_public=proxies,
        admin_cidrs=config.admin_cidrs,
        domain=config.domain,
        private_key_file=str(VERIFY_PRIVATE_KEY if verify else PRIVATE_KEY),
        known_hosts_file=str(KNOWN_HOSTS),
        target="lab",
        connect_command=f"{sys.executable} -m tierwall.lab.guard %h %p",
        verify_keys=(verify_key,) if verify_key else (),
        ssh_user=VERIFY_USER if verify else OPS_USER,
        become=not verify,
        # The off-site store's CA is where this clone's lab keeps it (TIERWALL_LAB_DIR may move it).
        backup_repositories=tuple(
            dataclasses.replace(r, ca_file=str(OFFSITE_CA_FILE) if r.ca_file else "")
            for r in config.backup_repositories
        ),
        backup_retention_days=config.backup_retention_days,
    )
    inventory = build_inventory(topology, access)
    all_vars = inventory["all"]["vars"]
    all_vars["tierwall_lab_sentinel"] = str(SENTINEL)
    all_vars["tierwall_lab_operator"] = str(OPERATOR)
    all_vars["tierwall_lab_namespaces"] = {
        **{h.name: netns(h.name) for h in topology.hosts},
        "sentinel": SENTINEL_NS,
        "offsite": OFFSITE_NS,
    }
    all_vars["tierwall_lab_offsite"] = str(OFFSITE)
    all_vars["tierwall_dns_resolvers"] = list(dns)
    all_vars["tierwall_lab_image"] = config.image
    inventory["all"]["children"][DB]["vars"] = dict(LAB_DB_VARS)
    # The lab's repository endpoints are known to no DNS: the proxies' relay reaches them at the
    # off-site store's address.
    inventory["all"]["children"][PROXY]["vars"] = {
        "backup_relay_endpoint_addresses": {r.endpoint: str(OFFSITE) for r in config.backup_repositories}
    }
    if state:
        for host in topology.hosts_in(DB):
            device = state.volume.get(host.name)
            if device:
                inventory["all"]["children"][DB]["hosts"][host.name]["tierwall_volume_device"] = device
    return inventory


def write_lab_inventory(path: Path | None = None, verify: bool = False) -> Path:
    """Write the lab's inventory (default ``.lab/inventory.yml``) for the lab as it is (or will be) up;
    ``verify``: the one that connects as the verify account (default ``.lab/inventory-verify.yml``)."""
    from tierwall.lab.network import resolvers

    state = State.load()
    known = state if state and state.phase != "corrupt" else None
    if not PUBLIC_KEY.exists():
        raise LabError("the lab has no SSH key yet: run `tierwall lab up` first")
    app_count = known.app_count if known else None
    # The lab as built; with none recorded, the lab `up` would build now.
    image = known.image if known else requested_image()
    config = lab_config(PUBLIC_KEY.read_text().strip(), app_count, image, ensure_verify_key())
    default = VERIFY_INVENTORY if verify else INVENTORY
    return write_inventory(lab_inventory(config, state, resolvers(), verify), path or default)


def ssh_argv(
    hostvars: dict[str, Any],
    all_vars: dict[str, Any],
    command: list[str] | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The ssh command line Ansible would use for a host of the inventory (jump chain included)."""
    import shlex

    argv = ["ssh", *shlex.split(hostvars.get("ansible_ssh_common_args", "")), *(extra or [])]
    key = hostvars.get("ansible_ssh_private_key_file") or all_vars.get("ansible_ssh_private_key_file")
    if key:
        argv += ["-i", key]
    user = hostvars.get("ansible_user") or all_vars.get("ansible_user")
    argv.append(f"{user}@{hostvars['ansible_host']}")
    return argv + list(command or [])


def hosts_of(inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for group in inventory["all"]["children"].values():
        result.update(group.get("hosts") or {})
    return result

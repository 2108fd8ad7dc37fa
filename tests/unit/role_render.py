"""Render a role's templates and variables as Ansible would for one host of a generated inventory.

Precedence as in site.yml: role defaults < inventory (all, then the host) < the playbook's
group_vars (all, then the tier) < role vars, plus the facts a host of the given release and
virtualisation reports. Used by the unit tests that read what a role writes on a host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tierwall.inventory import Access, build_inventory
from tierwall.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "ansible" / "roles"
GROUP_VARS = REPO / "ansible" / "playbooks" / "group_vars"
# What `ssh -Q kex` prints on Debian 12 (OpenSSH 9.2): the KEX filter of the common role reads it.
KEX_OFFERED = [
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "curve25519-sha256",
    "curve25519-sha256@libssh.org", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
]  # fmt: skip


def inventory(app_count: int = 2) -> dict[str, Any]:
    return build_inventory(
        build_topology(app_count=app_count),
        Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",),
               domain="notes.lab.test", target="lab"),
    )  # fmt: skip


def _load(loader: DataLoader, path: Path) -> dict[str, Any]:
    return dict(loader.load_from_file(str(path), trusted_as_template=True) or {}) if path.exists() else {}


def variables(
    role: str, host: str, app_count: int = 2, container: bool = True, **overrides: Any
) -> dict[str, Any]:
    loader = DataLoader()
    document = inventory(app_count)
    tier, hostvars = next(
        (tier, group["hosts"][host])
        for tier, group in document["all"]["children"].items()
        if host in group["hosts"]
    )
    found = _load(loader, ROLES / role / "defaults" / "main.yml")
    found.update(document["all"]["vars"])
    found.update(hostvars)
    found.update(_load(loader, GROUP_VARS / "all.yml"))
    found.update(_load(loader, GROUP_VARS / f"{tier}.yml"))
    found.update(_load(loader, ROLES / role / "vars" / "main.yml"))
    found.update(
        ansible_managed="Ansible managed: do not edit",
        inventory_hostname=host,
        role_path=str(ROLES / role),
        playbook_dir=str(REPO / "ansible" / "playbooks"),
        ansible_memtotal_mb=2048,
        ansible_facts={
            "distribution": "Debian",
            "distribution_major_version": "12",
            "virtualization_role": "guest",
            "virtualization_type": "systemd-nspawn" if container else "kvm",
        },
        __common_sshd_kex_offered={"stdout_lines": KEX_OFFERED},
    )
    found.update(overrides)
    return found


def render(role: str, template: str, host: str, **kwargs: Any) -> str:
    templar = Templar(loader=DataLoader(), variables=variables(role, host, **kwargs))
    return templar.template(trust_as_template((ROLES / role / "templates" / template).read_text()))


def value(role: str, expression: str, host: str, **kwargs: Any) -> Any:
    """``expression`` (a Jinja expression, without braces) as the role computes it on ``host``."""
    templar = Templar(loader=DataLoader(), variables=variables(role, host, **kwargs))
    return templar.template(trust_as_template("{{ " + expression + " }}"))


def directives(text: str) -> list[tuple[str, str]]:
    """(keyword, rest of the line) of every non-comment line of a keyword-value configuration file."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword, rest.strip()))
    return found

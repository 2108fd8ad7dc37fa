"""The db's encryption backend: the role's default is a real stack's (LUKS2), the lab alone says fscrypt.

A stack inventory that forgot a variable must get the production value, never the lab's weaker
per-directory encryption; and the lab, whose machines cannot open LUKS (no device-mapper), must
still get fscrypt from the inventory its own code writes. Ansible itself resolves the variables
here (inventory, the playbooks' group_vars, then the role default), so a group_vars file that
would outrank the inventory is caught too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.inventory import (
    Access,
    build_inventory,
    load_outputs,
    proxy_public_from_outputs,
    topology_from_outputs,
    write_inventory,
)
from tierwall.lab.inventory import lab_config, lab_inventory

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "ansible" / "playbooks"
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "postgresql" / "defaults" / "main.yml"
OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"
KEY = "postgresql_encryption_backend"


def _stack_inventory() -> dict[str, Any]:
    outputs = load_outputs(OUTPUTS)
    access = Access(
        proxy_public=proxy_public_from_outputs(outputs),
        admin_cidrs=tuple(outputs["admin_cidrs"]),
        domain=outputs["domain"],
        target=outputs["stack"],
        db_volume_device=outputs["db_volume_linux_device"],
    )
    return build_inventory(topology_from_outputs(outputs), access)


def _lab_inventory() -> dict[str, Any]:
    return lab_inventory(lab_config(None, 1), None, ["192.0.2.53"])


def _resolved(inventory: dict[str, Any], tmp_path: Path, host: str = "db-1") -> Any:
    """The backend as a play of site.yml would see it on ``host``: Ansible's own precedence over the
    inventory and the playbooks' group_vars, then the role's default where nothing set it."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    path = write_inventory(inventory, tmp_path / "inventory.yml")
    loader = DataLoader()
    loader.set_basedir(str(PLAYBOOKS))
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager).get_vars(host=manager.get_host(host))
    # The playbooks' group_vars were read (db.yml sets the db's apt proxy): their precedence counts.
    assert "common_apt_proxy_url" in variables
    default = yaml.safe_load(ROLE_DEFAULTS.read_text())[KEY]
    return variables.get(KEY, default)


def test_the_role_default_is_luks() -> None:
    assert yaml.safe_load(ROLE_DEFAULTS.read_text())[KEY] == "luks"


def test_a_lab_inventory_written_by_the_code_gets_fscrypt(tmp_path: Path) -> None:
    inventory = _lab_inventory()
    assert inventory["all"]["children"]["db"]["vars"][KEY] == "fscrypt"
    assert _resolved(inventory, tmp_path) == "fscrypt"


def test_a_stack_inventory_gets_luks(tmp_path: Path) -> None:
    inventory = _stack_inventory()
    assert KEY not in yaml.safe_dump(inventory), "a stack inventory must leave the backend to the role"
    assert _resolved(inventory, tmp_path) == "luks"


@pytest.mark.parametrize("group_vars", sorted((PLAYBOOKS / "group_vars").glob("*.yml")), ids=lambda p: p.name)
def test_no_playbook_group_vars_overrides_the_backend(group_vars: Path) -> None:
    """Playbook group_vars outrank the inventory's: a value there would hide the lab's fscrypt or
    change a stack's LUKS."""
    assert KEY not in (yaml.safe_load(group_vars.read_text()) or {})

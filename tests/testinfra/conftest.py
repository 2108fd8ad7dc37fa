"""Live checks of the converged hosts (the lab or a Hetzner stack), through Ansible's inventory.

Run:  pytest tests/testinfra --ansible-inventory=.lab/inventory.yml
      (or TIERWALL_INVENTORY=path; default: the lab's inventory, $TIERWALL_LAB_DIR/inventory.yml)

Hosts are chosen by inventory group, never by address: each module names its group(s) in
``TIER_GROUP`` ("proxy", "app", "db", "all", or a tuple of groups) and every test taking
``host`` runs once per host of those groups, connected with testinfra's ansible backend
(which honours the inventory's ProxyCommand jump chain and ``ansible_become``). Addresses,
the topology and the lab sentinel are read from the inventory's variables. Without an
inventory the tests are collected and skipped with the reason.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.paths import LAB_DIR


@dataclass(frozen=True)
class Inventory:
    """The generated inventory (src/tierwall/inventory.py): all.vars + one child group per tier."""

    path: Path
    data: dict[str, Any]

    @property
    def all_vars(self) -> dict[str, Any]:
        return self.data["all"].get("vars", {})

    def groups(self) -> dict[str, dict[str, Any]]:
        return {name: group.get("hosts") or {} for name, group in self.data["all"]["children"].items()}

    def hosts_of(self, group: str) -> list[str]:
        if group == "all":
            return [h for hosts in self.groups().values() for h in hosts]
        return list(self.groups().get(group, {}))

    def hostvars(self, name: str) -> dict[str, Any]:
        for hosts in self.groups().values():
            if name in hosts:
                return {**self.all_vars, **(hosts[name] or {})}
        raise KeyError(f"host {name} is not in {self.path}")

    def first(self, group: str) -> str:
        hosts = self.hosts_of(group)
        if not hosts:
            raise LookupError(f"the inventory {self.path} has no host in group {group!r}")
        return hosts[0]


def _inventory_path(config: pytest.Config) -> Path:
    given = config.getoption("ansible_inventory", default=None) or os.environ.get("TIERWALL_INVENTORY")
    return Path(given) if given else LAB_DIR / "inventory.yml"


@cache
def _load(path: Path) -> Inventory | None:
    if not path.is_file():
        return None
    return Inventory(path, yaml.safe_load(path.read_text()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host_name" not in metafunc.fixturenames:
        return
    group = getattr(metafunc.module, "TIER_GROUP", None)
    if group is None:
        raise pytest.UsageError(
            f"{metafunc.module.__name__}: set TIER_GROUP to the inventory group it checks"
        )
    path = _inventory_path(metafunc.config)
    inventory = _load(path)
    if inventory is None:
        reason = f"no inventory at {path}: bring the lab up (tierwall lab up) or pass --ansible-inventory"
        skipped = pytest.param(None, marks=pytest.mark.skip(reason=reason))
        metafunc.parametrize("host_name", [skipped], ids=["no-inventory"])
        return
    groups = (group,) if isinstance(group, str) else tuple(group)
    names = [name for g in groups for name in inventory.hosts_of(g)]
    metafunc.parametrize("host_name", names, ids=names)


LAB_TARGET = "lab"  # all.vars.tierwall_target of the inventory `tierwall lab up` writes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this directory's ``lab_only`` checks, with the reason, unless the inventory is the lab's.

    They reach for what only the lab has (the sentinel "internet" host, the machines' namespaces);
    against a Hetzner stack they would fail for a reason unrelated to the stack, or probe a real
    address. The audit then reports their controls "not reviewed" for that target, never passed.
    """
    here = Path(__file__).resolve().parent
    marked = [i for i in items if i.get_closest_marker("lab_only") and here in i.path.resolve().parents]
    if not marked:
        return
    path = _inventory_path(config)
    inventory = _load(path)
    target = inventory.all_vars.get("tierwall_target") if inventory else None
    if target == LAB_TARGET:
        return
    reason = (f"lab only: the inventory {path} targets {target!r}, not {LAB_TARGET!r}; this check needs "
              "the lab's sentinel or machines")
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest) -> Inventory:
    path = _inventory_path(request.config)
    loaded = _load(path)
    if loaded is None:
        pytest.skip(f"no inventory at {path}")
    return loaded


_HOSTS: dict[str, Any] = {}


def _ensure_control_dir() -> None:
    """testinfra multiplexes its SSH commands over one master connection per host only when the
    control directory of ansible.cfg's [persistent_connection] exists; otherwise each command
    would open a new connection through the whole jump chain (three handshakes for a db)."""
    config_file = os.environ.get("ANSIBLE_CONFIG")
    if not config_file:
        return
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_file)
    directory = parser.get("persistent_connection", "control_path_dir", fallback="")
    if directory:
        Path(directory).expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)


def connect(inventory: Inventory, name: str) -> Any:
    """A testinfra host for inventory host ``name`` (one connection per host per session)."""
    import testinfra

    if name not in _HOSTS:
        _ensure_control_dir()
        _HOSTS[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory.path))
    return _HOSTS[name]


@pytest.fixture
def host(inventory: Inventory, host_name: str) -> Any:
    return connect(inventory, host_name)


@pytest.fixture
def hostvars(inventory: Inventory, host_name: str) -> dict[str, Any]:
    return inventory.hostvars(host_name)


@pytest.fixture
def topology(inventory: Inventory) -> dict[str, Any]:
    return inventory.all_vars["tierwall_topology"]


@pytest.fixture
def sentinel(inventory: Inventory) -> str:
    """The lab's sentinel "internet" host (a namespace of this machine); absent on a real stack."""
    address = inventory.all_vars.get("tierwall_lab_sentinel")
    if not address:
        pytest.skip("no tierwall_lab_sentinel in the inventory: this check only runs in the lab, whose "
                    "sentinel is the one internet address a test may try to reach")
    return str(address)

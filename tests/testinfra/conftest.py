"""Live checks of the converged hosts (the lab or a Hetzner stack), through Ansible's inventory.

Run:  pytest tests/testinfra --ansible-inventory=.lab/inventory.yml
      (or TIERWALL_INVENTORY=path; default: the lab's inventory, $TIERWALL_LAB_DIR/inventory.yml)

Hosts are chosen by inventory group, never by address (TIERWALL_TEST_GROUPS=proxy,app narrows
a run to those groups' hosts): each module names its group(s) in
``TIER_GROUP`` ("proxy", "app", "db", "all", or a tuple of groups) and every test taking
``host`` runs once per host of those groups, connected with testinfra's ansible backend
(which honours the inventory's ProxyCommand jump chain and ``ansible_become``). Addresses,
the topology and the lab sentinel are read from the inventory's variables. Without an
inventory the tests are collected and skipped with the reason.

Under an inventory that connects as the read-only ``verify`` account (``tierwall inventory
--verify``, which sets ``tierwall_verify_account: true``), a command is run through ``sudo -n``
exactly when it is, as formatted, one of the root commands the common role grants the account
(``common_verify_sudo_commands``); every other command runs as the account itself. Checks marked
``verify_never`` (they read secrets, change the host or need PostgreSQL's superuser) and the
``disruptive`` ones are skipped with the reason: docs/operations/verification.md.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.paths import ANSIBLE_DIR, LAB_DIR, TEST_GROUPS_VARIABLE


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
    if narrowed := os.environ.get(TEST_GROUPS_VARIABLE):
        chosen = {n for g in narrowed.split(",") for n in inventory.hosts_of(g.strip())}
        names = [name for name in names if name in chosen]
    metafunc.parametrize("host_name", names, ids=names)


LAB_TARGET = "lab"  # all.vars.tierwall_target of the inventory `tierwall lab up` writes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, this directory's ``lab_only`` checks unless the inventory is the lab's,
    and under a verify inventory the checks that account cannot run (:func:`verify_skip_reason`).

    lab_only checks reach for what only the lab has (the sentinel "internet" host, the machines'
    namespaces); against a Hetzner stack they would fail for a reason unrelated to the stack, or
    probe a real address. The audit then reports their controls "not reviewed" for that target,
    and a control one of whose checks was skipped "not proved", never passed.
    """
    _skip_what_verify_cannot_run(config, items)
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


# -- the verify account ------------------------------------------------------------------------------

VERIFY_FLAG = "tierwall_verify_account"  # all.vars of `tierwall inventory --verify`
VERIFY_PAGE = "docs/operations/verification.md"
VERIFY_NEVER = "verify_never"
SUDO_COMMANDS = "common_verify_sudo_commands"
COMMON_DEFAULTS = ANSIBLE_DIR / "roles" / "common" / "defaults" / "main.yml"


def is_verify(variables: Mapping[str, Any]) -> bool:
    return variables.get(VERIFY_FLAG) is True


def verify_sudo_commands(hostvars: Mapping[str, Any]) -> frozenset[str]:
    """The root commands the common role lets the verify account run on this host: the role's own
    variable, as Ansible resolves it (the inventory's value over the role's default)."""
    if SUDO_COMMANDS in hostvars:
        return frozenset(hostvars[SUDO_COMMANDS])
    return frozenset(yaml.safe_load(COMMON_DEFAULTS.read_text())[SUDO_COMMANDS])


def as_verify(command: str, sudo_commands: Collection[str]) -> str:
    """The command the verify account runs for ``command`` (already formatted): through ``sudo -n``
    when sudoers names it in full, else as itself. Never a near match: sudo would refuse it, and a
    wider rule (a prefix, a pattern) is what the sudoers file must not grant."""
    return f"sudo -n {command}" if command in sudo_commands else command


def verify_skip_reason(item: pytest.Item) -> str | None:
    """Why the verify account cannot run this check, or None when it can."""
    never = item.get_closest_marker(VERIFY_NEVER)
    if never is not None:
        if len(never.args) != 1 or not isinstance(never.args[0], str) or not never.args[0]:
            raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.{VERIFY_NEVER}('why') with one reason")
        why = never.args[0]
    elif item.get_closest_marker("disruptive") is not None:
        why = "it stops, restarts or changes something on the host"
    else:
        return None
    return f"never as the verify account: {why} ({VERIFY_PAGE}); the lab runs it as ops"


def _skip_what_verify_cannot_run(config: pytest.Config, items: list[pytest.Item]) -> None:
    inventory = _load(_inventory_path(config))
    if inventory is None or not is_verify(inventory.all_vars):
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here not in item.path.resolve().parents:
            continue
        reason = verify_skip_reason(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def _run_as_verify(backend: Any, sudo_commands: frozenset[str]) -> None:
    """Route every command of ``backend`` through :func:`as_verify` (the ansible backend formats
    a command with its arguments as testinfra does; the result is passed on already formatted)."""
    run = backend.run

    def verified(command: str, *args: str, **kwargs: Any) -> Any:
        return run(as_verify(backend.quote(command, *args), sudo_commands), **kwargs)

    backend.run = verified


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
        host = testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory.path))
        hostvars = inventory.hostvars(name)
        if is_verify(hostvars):
            _run_as_verify(host.backend, verify_sudo_commands(hostvars))
        _HOSTS[name] = host
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

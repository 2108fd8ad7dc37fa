"""Fixtures for the lab suites: the running lab, read from ``.lab/inventory.yml`` and the state.

These suites need root and a lab brought up by ``tierwall lab up``. If the lab is not up they
FAIL (not skip) and say so: a green run must mean the lab was checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.lab.addressing import netns
from tierwall.lab.inventory import INVENTORY, hosts_of, ssh_argv
from tierwall.lab.state import State
from tierwall.topology import Topology, topology_from_dict

LIFECYCLE = "lab_lifecycle"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The lifecycle suite takes the lab down and up: run it after every other test."""
    items.sort(key=lambda item: item.get_closest_marker(LIFECYCLE) is not None)


@dataclass
class Lab:
    inventory: dict[str, Any]
    state: State
    topology: Topology

    @property
    def hosts(self) -> dict[str, dict[str, Any]]:
        return hosts_of(self.inventory)

    @property
    def vars(self) -> dict[str, Any]:
        return self.inventory["all"]["vars"]

    def names(self, tier: str) -> list[str]:
        return [h.name for h in self.topology.hosts_in(tier)]

    def ssh(self, host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = ssh_argv(
            self.hosts[host], self.vars, [command], ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        )
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def in_ns(self, host: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command of this machine's in the host's network namespace (the host's own network view)."""
        ns = self.vars["tierwall_lab_namespaces"].get(host, netns(host))
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )


def require_lab() -> Lab:
    if os.geteuid() != 0:
        pytest.fail("the lab suites need root (network namespaces): run `make test` as root", pytrace=False)
    state = State.load()
    if not INVENTORY.exists() or state is None or state.phase != "up":
        pytest.fail(
            f"the lab is not up (state: {state.phase if state else 'none'}, inventory {INVENTORY} "
            f"{'present' if INVENTORY.exists() else 'missing'}): run `tierwall lab up` first",
            pytrace=False,
        )
    inventory = yaml.safe_load(Path(INVENTORY).read_text())
    topology = topology_from_dict(inventory["all"]["vars"]["tierwall_topology"])
    return Lab(inventory, state, topology)


@pytest.fixture(scope="module")
def lab() -> Lab:
    return require_lab()


def tierwall(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the `tierwall` command (this checkout's) and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "tierwall.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def tierwall_cli():
    return tierwall


@pytest.fixture
def lab_loader():
    """``require_lab`` itself, for tests that take the lab down and up."""
    return require_lab

"""Reading the audit trail's archive on the management host, for the live suites."""

from __future__ import annotations

import re
import time
from typing import Any

from conftest import Inventory, connect

ARCHIVE = "/var/log/tierwall-archive"
DELIVERY_SECONDS = 30
ROOT_ONLY = "reads the root-only archive and runs commands through sudo"


def archive_host(inventory: Inventory) -> Any:
    return connect(inventory, inventory.first("mgmt"))


def archived(archive: Any, marker: str, directory: str = "*") -> str:
    return archive.run("grep -rhF -- %s %s/%s/", marker, ARCHIVE, directory).stdout


def wait_for(archive: Any, marker: str, directory: str, pattern: str, count: int = 1) -> list[str]:
    """The archive's lines under ``directory`` that match ``pattern``, once there are ``count``.
    (The suite's own commands reach the hosts through sudo too: their lines carry the marker as
    well, and only the pattern tells the entry under test from them.)"""
    deadline = time.monotonic() + DELIVERY_SECONDS
    lines: list[str] = []
    while time.monotonic() < deadline:
        found = archived(archive, marker, directory).splitlines()
        lines = [line for line in found if re.search(pattern, line)]
        if len(lines) >= count:
            return lines
        time.sleep(1)
    raise AssertionError(
        f"{pattern!r} not in {ARCHIVE}/{directory}/ {count} times within {DELIVERY_SECONDS} s: {lines!r}"
    )

"""Shared pytest wiring: carry each test's control ids into the JUnit report for `tierwall audit`."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import pytest

from tierwall.paths import REPO


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in item.iter_markers("control"):
            if len(marker.args) != 1 or not isinstance(marker.args[0], str):
                raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.control('ID') with one id")
            item.user_properties.append(("control", marker.args[0]))


@pytest.fixture(scope="session", autouse=True)
def _run_metadata(record_testsuite_property) -> None:
    """Suite-level facts the audit report prints: which commit, when, against what."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    record_testsuite_property("git_sha", sha)
    record_testsuite_property("started", datetime.now(UTC).isoformat(timespec="seconds"))
    record_testsuite_property("target", os.environ.get("TIERWALL_TARGET", "lab"))

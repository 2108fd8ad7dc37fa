"""Shared pytest wiring: carry each test's control ids into the JUnit report for `tierwall audit`.

At the repository's root so that it holds for every test tree: the controller's suites (tests/)
and the reference application's (app/tests/), run together or alone.
"""

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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Suite-level facts the audit report prints: which commit, when, against what. Recorded on
    the process that writes the JUnit file (the controller when the run is parallel: a worker's
    suite properties never reach the file)."""
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    if xml is None:
        return
    xml.add_global_property("git_sha", _git_sha())
    xml.add_global_property("started", datetime.now(UTC).isoformat(timespec="seconds"))
    xml.add_global_property("target", os.environ.get("TIERWALL_TARGET", "lab"))


def _git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

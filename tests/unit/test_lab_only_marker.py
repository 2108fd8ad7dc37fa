"""`@pytest.mark.lab_only` really skips outside the lab (tests/testinfra/conftest.py's hook).

The real conftest runs in a throw-away pytest project (pytester) against a one-host inventory
whose `tierwall_target` varies: lab_only checks must be skipped, with the reason, for any target
but the lab's, and must run (not skip) in the lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest_plugins = ("pytester",)

CONFTEST = Path(__file__).resolve().parents[1] / "testinfra" / "conftest.py"

CHECKS = """
import pytest

TIER_GROUP = "db"


@pytest.mark.lab_only
def test_needs_the_sentinel(host_name):
    assert host_name == "db-1"


def test_runs_anywhere(host_name):
    assert host_name == "db-1"
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, target: str | None) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    lab_only: only in the lab\n")
    pytester.makepyfile(test_checks=CHECKS)
    all_vars = {} if target is None else {"tierwall_target": target}
    inventory = pytester.path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(
        {"all": {"vars": all_vars, "children": {"db": {"hosts": {"db-1": {}}}}}}
    ))
    monkeypatch.setenv("TIERWALL_INVENTORY", str(inventory))
    return pytester.runpytest("-rs", "-p", "no:cacheprovider")


@pytest.mark.parametrize("target", ["prod", None])
def test_lab_only_is_skipped_with_its_reason_outside_the_lab(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, target: str | None
) -> None:
    result = _run(pytester, monkeypatch, target)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED*test_checks.py*lab only*targets {target!r}, not 'lab'*"])


def test_lab_only_runs_in_the_lab(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "lab")
    result.assert_outcomes(passed=2)

"""The live half of the mutation engine, on a stand-in lab: the verdicts and the proof that the lab
is back never depend on Ansible or hosts here, only on what the converges and tests report.

The real thing runs in `make mutate-live` against the lab; these tests pin down what it must
refuse: a patch that changes nothing on the lab, a revert whose second converge still changes
something, and drift that the converge leaves in place.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tierwall.audit.controls import load_controls
from tierwall.audit.junit import Run
from tierwall.audit.junit import TestResult as Result
from tierwall.mutations import live
from tierwall.mutations.catalogue import Command, Converge, Mutation, Patch
from tierwall.mutations.engine import ERROR, KILLED
from tierwall.mutations.engine import TestRun as SelectionRun
from tierwall.paths import REPO

CONTROLS = load_controls(REPO / "audit" / "controls.yaml")
RECAP = "PLAY RECAP ***\ndb-1 : ok=12   changed={}    unreachable=0    failed={}    skipped=5\n"


@dataclass
class StandInLab:
    """Records what the engine asks of the lab and answers with scripted converge recaps."""

    pristine: Path
    changes: list[int]
    calls: list[str] = field(default_factory=list)
    inventory: Path = Path("inventory.yml")

    def converge(self, tree: Path, converge: Converge) -> live.Recap:
        self.calls.append("converge pristine" if tree == self.pristine else "converge mutated")
        return live.Recap(self.changes.pop(0), "")

    def command(self, command: Command) -> subprocess.CompletedProcess[str]:
        self.calls.append(f"command {command.run}")
        return subprocess.CompletedProcess([], 0, "", "")


def _run(outcome: str) -> SelectionRun:
    result = Result("tests/testinfra/test_base.py::test_x", outcome, "", ("FW-01",), 0.1, "live")
    return SelectionRun(0 if outcome == "passed" else 1, Run([result]), "", 0.1, set())


def _mutation(**changes) -> Mutation:
    base = Mutation(
        id="m", control="FW-01", layer="live", description="m", patches=(),
        tests=("tests/testinfra/test_base.py",), commands=(Command("db", "nft insert rule"),),
        converge=Converge("db", ("firewall_ruleset",)),
    )  # fmt: skip
    return Mutation(**{**base.__dict__, **changes})


@pytest.fixture
def tests_report(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The outcomes the control's test reports, one per run, in order."""
    outcomes: list[str] = []
    monkeypatch.setattr(live, "run_tests", lambda root, tests, work: _run(outcomes.pop(0)))
    return outcomes


def test_drift_that_fails_its_control_and_is_undone_is_killed(tmp_path: Path, tests_report: list) -> None:
    lab = StandInLab(tmp_path, changes=[2, 0])
    tests_report += ["failed", "passed"]
    outcome = live.run_live(_mutation(), lab, _run("passed"), CONTROLS)
    assert outcome.verdict == KILLED, outcome.note
    assert lab.calls == ["command nft insert rule", "converge pristine", "converge pristine"]


def test_drift_the_converge_leaves_in_place_stops_the_run(tmp_path: Path, tests_report: list[str]) -> None:
    """A converge that says "changed=0" is no proof on its own: the control's tests must pass again."""
    tests_report += ["failed", "failed"]
    with pytest.raises(live.LabBroken, match="still fails after the revert"):
        live.run_live(_mutation(), StandInLab(tmp_path, changes=[0, 0]), _run("passed"), CONTROLS)


def test_a_second_converge_that_still_changes_stops_the_run(tmp_path: Path, tests_report: list[str]) -> None:
    tests_report += ["failed"]
    with pytest.raises(live.LabBroken, match="second converge still changed 1"):
        live.run_live(_mutation(), StandInLab(tmp_path, changes=[3, 1]), _run("passed"), CONTROLS)


def test_a_patch_that_changes_nothing_on_the_lab_is_an_error(tmp_path: Path, tests_report: list[str]) -> None:
    (tmp_path / "pristine").mkdir()
    (tmp_path / "pristine" / "role.j2").write_text("PermitRootLogin no\n")
    patch = Patch("text", "role.j2", "PermitRootLogin no", "PermitRootLogin yes")
    lab = StandInLab(tmp_path / "pristine", changes=[0, 0])
    outcome = live.run_live(_mutation(commands=(), patches=(patch,)), lab, _run("passed"), CONTROLS)
    assert outcome.verdict == ERROR
    assert "changed nothing on the lab" in outcome.note
    # The revert converge changed nothing: that converge is already the proof the lab is back.
    assert lab.calls == ["converge mutated", "converge pristine"]


def test_the_recap_counts_changes_and_names_failed_hosts() -> None:
    ok = subprocess.CompletedProcess([], 0, RECAP.format(3, 0), "")
    assert live._recap(ok) == live.Recap(3, "")
    failed = live._recap(subprocess.CompletedProcess([], 2, RECAP.format(0, 1), "boom"))
    assert failed.problems.startswith("failed or unreachable: db-1")
    broken = subprocess.CompletedProcess([], 4, "ERROR! no inventory", "")
    assert "without a recap" in live._recap(broken).problems

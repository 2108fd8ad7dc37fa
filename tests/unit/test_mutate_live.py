"""The live half of the mutation engine, on a stand-in lab: the verdicts and the proof that the lab
is back never depend on Ansible or hosts here, only on what the converges and tests report.

The real thing runs in `make mutate-live` against the lab; these tests pin down what it must
refuse: a patch that changes nothing on the lab, a revert whose second converge still changes
something, and drift that the converge leaves in place.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pytest

from tierwall.audit.controls import load_controls
from tierwall.audit.junit import Run
from tierwall.audit.junit import TestResult as Result
from tierwall.mutations import live
from tierwall.mutations.catalogue import Command, Converge, Mutation, Patch
from tierwall.mutations.engine import ERROR, KILLED, NOT_RUN
from tierwall.mutations.engine import TestRun as SelectionRun
from tierwall.paths import REPO

CONTROLS = load_controls(REPO / "audit" / "controls.yaml")
EVERY: frozenset[str] = frozenset()  # run_tests' groups: no narrowing, every host
RECAP = "PLAY RECAP ***\ndb-1 : ok=12   changed={}    unreachable=0    failed={}    skipped=5\n"


_ANSWERED = subprocess.CompletedProcess([], 0, "", "")  # every host ran the command


@dataclass
class StandInLab:
    """Records what the engine asks of the lab and answers with scripted converge recaps."""

    pristine: Path
    changes: list[int]
    calls: list[str] = field(default_factory=list)
    inventory: Path = Path("inventory.yml")
    answer: subprocess.CompletedProcess[str] = field(default_factory=lambda: _ANSWERED)

    def converge(self, tree: Path, converge: Converge, passes: int = 1) -> tuple[live.Recap, ...]:
        self.calls.append(f"converge {'pristine' if tree == self.pristine else 'mutated'} x{passes}")
        return tuple(live.Recap(self.changes.pop(0), "") for _ in range(passes))

    def command(self, command: Command) -> subprocess.CompletedProcess[str]:
        self.calls.append(f"command {command.run}")
        return self.answer


def _run(outcome: str, control: str = "FW-01") -> SelectionRun:
    result = Result(f"tests/testinfra/test_base.py::test_{control}", outcome, "", (control,), 0.1, "live")
    failing = set() if outcome == "passed" else {result.nodeid}
    return SelectionRun(0 if outcome == "passed" else 1, Run([result]), "", 0.1, failing)


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
    monkeypatch.setattr(live, "run_tests", lambda root, tests, work, groups=EVERY: _run(outcomes.pop(0)))
    return outcomes


def test_drift_that_fails_its_control_and_is_undone_is_killed(tmp_path: Path, tests_report: list) -> None:
    lab = StandInLab(tmp_path, changes=[2, 0])
    tests_report += ["failed", "passed"]
    outcome = live.run_live(_mutation(), lab, _run("passed"), CONTROLS)
    assert outcome.verdict == KILLED, outcome.note
    assert lab.calls == ["command nft insert rule", "converge pristine x2"]


def test_drift_the_converge_leaves_in_place_stops_the_run(tmp_path: Path, tests_report: list[str]) -> None:
    """A converge that says "changed=0" is no proof on its own: the control's tests must pass again."""
    tests_report += ["failed", "failed"]
    with pytest.raises(live.LabBroken, match="still fails after the revert"):
        live.run_live(_mutation(), StandInLab(tmp_path, changes=[0, 0]), _run("passed"), CONTROLS)


def test_the_check_after_the_revert_reads_the_broken_hosts_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next mutation may be breaking other hosts meanwhile: a check reading every host's drop-ins
    would see that break and blame this revert."""
    asked: list[frozenset[str]] = []

    def report(root: Path, tests: tuple[str, ...], work: Path, groups: frozenset[str] = EVERY
               ) -> SelectionRun:  # fmt: skip
        asked.append(groups)
        return _run("passed" if work.name == "after" else "failed")

    monkeypatch.setattr(live, "run_tests", report)
    live.run_live(_mutation(), StandInLab(tmp_path, changes=[2, 0]), _run("passed"), CONTROLS)
    assert asked == [frozenset(), frozenset({"db"})]


def test_a_check_after_the_revert_that_ran_no_test_stops_the_run(tmp_path: Path, tests_report: list) -> None:
    """Tests that do not reach the broken hosts are skipped there: no proof that the break is gone."""
    tests_report += ["failed", "skipped"]
    with pytest.raises(live.LabBroken, match=r"no test of FW-01 passed in the check after the revert"):
        live.run_live(_mutation(), StandInLab(tmp_path, changes=[2, 0]), _run("passed"), CONTROLS)


# What `ansible db -m shell` prints for a command that exits 77 after printing its reason.
NOTHING_ANSWER = (
    "db-1 | FAILED | rc=77 >>\nno library from the security archive can be taken backnon-zero return code\n"
)


def test_a_break_with_nothing_to_break_today_is_not_run_and_says_why(tmp_path: Path, tests_report: list
                                                                     ) -> None:  # fmt: skip
    """The lab, not the code, lacks what the mutation breaks: not a kill, not an error; the lab is
    still put back in case the command changed something before it gave up."""
    tests_report += ["passed"]
    lab = StandInLab(tmp_path, changes=[0, 0], answer=subprocess.CompletedProcess([], 2, NOTHING_ANSWER, ""))
    outcome = live.run_live(_mutation(), lab, _run("passed"), CONTROLS)
    assert outcome.verdict == NOT_RUN
    reason = "no library from the security archive can be taken back"
    assert outcome.note == f"nothing to break on db today: {reason}"
    assert lab.calls == ["command nft insert rule", "converge pristine x2"]


@pytest.mark.parametrize("output", [
    "db-1 | FAILED | rc=1 >>\nE: Unable to locate package\n",
    "db-1 | FAILED | rc=77 >>\nnothing\napp-1 | FAILED | rc=1 >>\nbroken\n",
    "db-1 | UNREACHABLE! => {}\n",
    "db-1 | FAILED | rc=77 >>\nnothing\ndb-2 | UNREACHABLE! => {}\n",
    "db-1 | FAILED | rc=77 >>\nnothing\ndb-2 | FAILED! => {\"msg\": \"sudo: a password is required\"}\n",
    "db-1 | FAILED | rc=77 >>\nnothing\ndb-2 | FAILED | rc=-1 >>\nkilled\n",
])  # fmt: skip
def test_any_other_failure_of_a_break_is_an_error(tmp_path: Path, tests_report: list, output: str
                                                  ) -> None:  # fmt: skip
    tests_report += ["passed"]
    lab = StandInLab(tmp_path, changes=[0, 0], answer=subprocess.CompletedProcess([], 2, output, ""))
    assert live.run_live(_mutation(), lab, _run("passed"), CONTROLS).verdict == ERROR


def test_a_second_converge_that_still_changes_stops_the_run(tmp_path: Path, tests_report: list[str]) -> None:
    tests_report += ["failed"]
    with pytest.raises(live.LabBroken, match="second converge still changed 1"):
        live.run_live(_mutation(), StandInLab(tmp_path, changes=[3, 1]), _run("passed"), CONTROLS)


def test_a_patch_that_changes_nothing_on_the_lab_is_an_error(tmp_path: Path, tests_report: list[str]) -> None:
    (tmp_path / "pristine").mkdir()
    (tmp_path / "pristine" / "role.j2").write_text("PermitRootLogin no\n")
    patch = Patch("text", "role.j2", "PermitRootLogin no", "PermitRootLogin yes")
    lab = StandInLab(tmp_path / "pristine", changes=[0, 0, 0])
    outcome = live.run_live(_mutation(commands=(), patches=(patch,)), lab, _run("passed"), CONTROLS)
    assert outcome.verdict == ERROR
    assert "changed nothing on the lab" in outcome.note
    assert lab.calls == ["converge mutated x1", "converge pristine x2"]


def test_the_recaps_count_each_pass_and_name_failed_hosts() -> None:
    """ansible-playbook's recap after each playbook counts the whole run so far."""
    two = subprocess.CompletedProcess([], 0, RECAP.format(3, 0) + RECAP.format(3, 0), "")
    assert live._recaps(two, 2) == (live.Recap(3, ""), live.Recap(0, ""))
    still = subprocess.CompletedProcess([], 0, RECAP.format(3, 0) + RECAP.format(5, 0), "")
    assert live._recaps(still, 2)[1] == live.Recap(2, "")
    (failed,) = live._recaps(subprocess.CompletedProcess([], 2, RECAP.format(0, 1), "boom"), 1)
    assert failed.problems.startswith("failed or unreachable: db-1")


def test_a_run_that_stops_early_or_exits_non_zero_is_a_problem() -> None:
    stopped = live._recaps(subprocess.CompletedProcess([], 2, RECAP.format(3, 1), ""), 2)
    assert stopped[0].problems.startswith("failed or unreachable")
    assert "after 1 of 2 pass(es)" in stopped[1].problems
    broken = subprocess.CompletedProcess([], 4, "ERROR! no inventory", "")
    assert "after 0 of 1 pass(es)" in live._recaps(broken, 1)[0].problems
    quiet = subprocess.CompletedProcess([], 1, RECAP.format(0, 0), "")
    assert "exited 1" in live._recaps(quiet, 1)[0].problems


def _junit(path: Path, outcome: str, name: str = "test_x") -> Path:
    body = "" if outcome == "passed" else f"<{outcome} message='x'/>"
    path.write_text(
        f"<testsuites><testsuite><testcase classname='tests.testinfra.test_base' name='{name}'>"
        f"<properties><property name='control' value='FW-01'/></properties>{body}</testcase>"
        "</testsuite></testsuites>"
    )
    return path


@pytest.fixture
def lab_started(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the stand-in lab was started (the baseline must be newer)."""
    from tierwall.lab import state

    started = [0.0]
    running = classmethod(lambda cls: state.State(phase="up", started_at=started[0]))
    monkeypatch.setattr(state.State, "load", running)
    return started


def test_a_recorded_baseline_names_what_already_failed(tmp_path: Path, lab_started: list[float]) -> None:
    baseline = live.recorded_baseline([_junit(tmp_path / "live.xml", "failure")])
    assert baseline.returncode == 1
    assert baseline.failing == {"tests/testinfra/test_base.py::test_x"}


def test_every_pass_of_a_recorded_baseline_counts(tmp_path: Path, lab_started: list[float]) -> None:
    """A test only the disruptive pass runs is known to the baseline when both files are given."""
    disruptive = _junit(tmp_path / "live-disruptive.xml", "passed", "test_drill")
    parallel = _junit(tmp_path / "live.xml", "passed")
    baseline = live.recorded_baseline([disruptive, parallel])
    assert {r.nodeid for r in baseline.run.results} == {
        "tests/testinfra/test_base.py::test_drill", "tests/testinfra/test_base.py::test_x",
    }  # fmt: skip
    assert baseline.returncode == 0


def test_a_baseline_older_than_the_lab_is_refused(tmp_path: Path, lab_started: list[float]) -> None:
    junit = _junit(tmp_path / "live.xml", "passed")
    lab_started[0] = junit.stat().st_mtime + 60
    with pytest.raises(live.LabBroken, match="older than the running lab"):
        live.recorded_baseline([junit])
    lab_started[0] = 0.0
    with pytest.raises(live.LabBroken, match="no baseline"):
        live.recorded_baseline([junit, tmp_path / "missing.xml"])


def test_a_failure_the_baseline_never_ran_is_not_credited(tmp_path: Path, tests_report: list[str]) -> None:
    """The mutated run fails a test of the control that the recorded baseline does not hold."""
    tests_report += ["failed", "passed"]
    empty = SelectionRun(0, Run([]), "", 0.0, set())
    outcome = live.run_live(_mutation(), StandInLab(tmp_path, changes=[2, 0]), empty, CONTROLS)
    assert outcome.verdict == ERROR
    assert "no result for 1 test(s)" in outcome.note


def _on(hosts: str, control: str = "FW-01", mutation_id: str = "m") -> Mutation:
    return _mutation(id=mutation_id, control=control, commands=(Command(hosts, "x"),),
                     converge=Converge(hosts, ("firewall_ruleset",)))  # fmt: skip


def test_only_breaks_of_other_hosts_and_controls_overlap_a_revert() -> None:
    assert live.overlaps(_on("db"), _on("proxy", "AC-03"))
    assert not live.overlaps(_on("db"), _on("proxy")), "the same control"
    assert not live.overlaps(_on("proxy:app"), _on("app", "AC-03")), "a shared host"
    assert not live.overlaps(_on("db"), _on("tier_*", "AC-03")), "a pattern counts as every host"
    idempotence = _mutation(control="IAC-01", tests=("tests/lab/test_converge.py",))
    assert not live.overlaps(idempotence, _on("proxy", "AC-03")), "its test converges every host"
    probes = _mutation(control="NET-05", tests=("tests/lab/test_segregation.py", "-k", "undeclared"))
    assert not live.overlaps(probes, _on("db", "AC-03")), "the lab's checks probe every host"


def test_the_schedule_puts_a_break_of_other_hosts_next() -> None:
    first, second, third = _on("db", "FW-01", "a"), _on("db", "AC-03", "b"), _on("proxy", "AC-03", "c")
    assert [m.id for m in live.schedule([first, second, third])] == ["a", "c", "b"]


def test_the_schedule_spreads_the_largest_group_so_none_is_left_alone_at_the_end() -> None:
    catalogue = [_on(hosts, control, f"{hosts}{n}") for n, (hosts, control) in enumerate(
        [("db", "FW-01"), ("app", "AC-03"), ("proxy", "AC-01"), ("db", "AC-02"), ("db", "ENC-02")])]
    ordered = live.schedule(catalogue)
    assert [m.id for m in ordered] == ["db0", "app1", "db3", "proxy2", "db4"]
    assert all(live.overlaps(a, b) for a, b in pairwise(ordered))


def test_the_next_tests_wait_for_the_revert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second mutation is applied while the first is reverted, but tested only after."""
    events: list[str] = []
    lab = StandInLab(tmp_path, changes=[2, 0, 2, 0])
    real_converge = lab.converge

    def slow_converge(tree: Path, converge: Converge, passes: int = 1) -> tuple[live.Recap, ...]:
        time.sleep(0.2)  # the revert is still running when the next break is applied
        events.append(f"reverted {converge.limit}")
        return real_converge(tree, converge, passes)

    def report(root: Path, tests: tuple[str, ...], work: Path, groups: frozenset[str] = EVERY
               ) -> SelectionRun:  # fmt: skip
        after = work.name == "after"
        mutation_id = (work.parent if after else work).name.split("-")[0]
        events.append(f"{'after' if after else 'tests'} {mutation_id}")
        return _run("passed" if after else "failed", {"a": "FW-01", "b": "AC-03"}[mutation_id])

    monkeypatch.setattr(lab, "converge", slow_converge)
    monkeypatch.setattr(live, "run_tests", report)
    db, proxy = _on("db", "FW-01", "a"), _on("proxy", "AC-03", "b")
    both = [_run("passed", control).run for control in ("FW-01", "AC-03")]
    baseline = SelectionRun(0, Run([r for run in both if run for r in run.results]), "", 0, set())
    outcomes = live.run_pipeline([db, proxy], lab, lambda _: baseline, CONTROLS)
    assert lab.calls[:3] == ["command x", "command x", "converge pristine x2"], "b applied during a's revert"
    assert events == ["tests a", "reverted db", "after a", "tests b", "reverted proxy", "after b"]
    assert [(o.mutation.id, o.verdict) for o in outcomes] == [("a", KILLED), ("b", KILLED)]

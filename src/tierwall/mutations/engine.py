"""Run mutations: apply each in its own scratch copy, run its control's tests there, judge the result.

A mutation is *killed* only when the control it breaks is reported failed, exactly as `tierwall
audit` would report it; red tests of another control, or of no control, do not count: the audit
would still show the broken control as passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tierwall.audit.controls import Control
from tierwall.audit.junit import ERROR as TEST_ERROR
from tierwall.audit.junit import FAILED as TEST_FAILED
from tierwall.audit.junit import JUnitError, Run, read_junit
from tierwall.audit.report import FAILED as CONTROL_FAILED
from tierwall.audit.report import AuditError, evaluate
from tierwall.mutations.catalogue import Mutation
from tierwall.mutations.scratch import PatchError, apply_patches, clone, pristine_copy
from tierwall.paths import TEST_GROUPS_VARIABLE

KILLED, SURVIVED, ERROR, NOT_RUN = "killed", "survived", "error", "not run"
PYTEST_TIMEOUT = 900  # seconds; the slowest selection takes a few


class MutationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    verdict: str
    seconds: float
    note: str
    failed_controls: tuple[str, ...] = ()
    # Tests that failed only because of the mutation but prove no control (no marker).
    caught_by_unmarked: tuple[str, ...] = ()


@dataclass
class TestRun:
    returncode: int
    run: Run | None
    output: str
    seconds: float
    failing: set[str] = field(default_factory=set)


def run_all(
    mutations: Iterable[Mutation],
    controls: tuple[Control, ...],
    repo: Path,
    lab: bool = False,
    jobs: int = 4,
    on_outcome: Callable[[Outcome], None] | None = None,
    live_baseline: list[Path] | None = None,
) -> list[Outcome]:
    """Every mutation's outcome, in catalogue order. Live mutations run only with ``lab``; their
    baseline is ``live_baseline`` (the live suites' JUnit files from this lab) when given."""
    mutations = list(mutations)
    offline = [m for m in mutations if not m.needs_lab]
    live = [m for m in mutations if m.needs_lab] if lab else []
    done: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="tierwall-mutate-") as scratch:
        pristine = pristine_copy(repo, Path(scratch) / "pristine")
        if offline:
            done |= _run_offline(offline, controls, pristine, jobs, on_outcome)
        if live:
            done |= _run_live(live, controls, repo, pristine, jobs, on_outcome, live_baseline)
    return [done.get(m.id) or _not_run(m) for m in mutations]


def _run_offline(
    mutations: list[Mutation], controls: tuple[Control, ...], pristine: Path, jobs: int,
    on_outcome: Callable[[Outcome], None] | None,
) -> dict[str, Outcome]:  # fmt: skip
    """The code and rendered mutations, side by side: each has its own scratch copy."""
    baselines = _baselines(mutations, pristine, jobs, lambda tests: tests)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:

        def one(mutation: Mutation) -> Outcome:
            outcome = _run_one(mutation, pristine, baselines[mutation.tests], controls)
            if on_outcome:
                on_outcome(outcome)
            return outcome

        return {o.mutation.id: o for o in pool.map(one, mutations)}


def _run_live(
    mutations: list[Mutation], controls: tuple[Control, ...], repo: Path, pristine: Path, jobs: int,
    on_outcome: Callable[[Outcome], None] | None, recorded: list[Path] | None,
) -> dict[str, Outcome]:  # fmt: skip
    """The live mutations on the one lab: one break at a time (see tierwall.mutations.live)."""
    from tierwall.mutations.live import Lab, LabBroken, live_tests, recorded_baseline, run_pipeline

    # The scratch copy converges and tests the lab this checkout built: its secrets, CA, inventory.
    (pristine / ".lab").symlink_to(repo / ".lab")
    lab = Lab(repo, pristine)
    done: dict[str, Outcome] = {}
    try:
        lab.require_up()
        if recorded:
            baselines = dict.fromkeys({m.tests for m in mutations}, recorded_baseline(recorded))
        else:
            # They only read the lab (the idempotence test's converge changes nothing).
            baselines = _baselines(mutations, pristine, jobs, lambda tests: live_tests(tests, lab))
        outcomes = run_pipeline(mutations, lab, lambda m: baselines[m.tests], controls, on_outcome)
        done = {o.mutation.id: o for o in outcomes}
    except LabBroken as exc:
        raise MutationError(f"{exc}; run `make converge` to put the lab back") from None
    return done


def _baselines(
    mutations: list[Mutation], pristine: Path, jobs: int,
    arguments: Callable[[tuple[str, ...]], tuple[str, ...]],
) -> dict[tuple[str, ...], TestRun]:  # fmt: skip
    """Each distinct test selection once without any mutation, side by side."""
    selections = sorted({m.tests for m in mutations})
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        runs = pool.map(lambda tests: _baseline(pristine, arguments(tests)), selections)
        return dict(zip(selections, runs, strict=True))


def _not_run(mutation: Mutation) -> Outcome:
    return Outcome(mutation, NOT_RUN, 0.0, "needs the lab (tierwall mutate --lab)")


def _baseline(pristine: Path, tests: tuple[str, ...]) -> TestRun:
    """The selection without any mutation: what fails here already cannot be credited to one."""
    with tempfile.TemporaryDirectory(prefix="baseline-", dir=pristine.parent) as work:
        return run_tests(pristine, tests, Path(work))


def _run_one(mutation: Mutation, pristine: Path, baseline: TestRun, controls: tuple[Control, ...]) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{mutation.id}-", dir=pristine.parent) as work:
        root = clone(pristine, Path(work) / "repo")
        try:
            apply_patches(root, mutation.patches)
        except PatchError as exc:
            return Outcome(mutation, ERROR, time.monotonic() - started, f"does not apply: {exc}")
        result = run_tests(root, mutation.tests, Path(work))
    outcome = judge(mutation, result, baseline, controls)
    return Outcome(
        mutation, outcome.verdict, time.monotonic() - started, outcome.note,
        outcome.failed_controls, outcome.caught_by_unmarked,
    )  # fmt: skip


def run_tests(root: Path, tests: tuple[str, ...], work: Path, groups: frozenset[str] = frozenset()
              ) -> TestRun:  # fmt: skip
    """pytest on ``tests`` inside ``root``, with ``root``'s own tierwall package and playbooks;
    the live checks on the hosts of the inventory ``groups`` only, if any are given."""
    junit = work / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--basetemp={work / 'tmp'}", f"--junit-xml={junit}", *tests,
    ]  # fmt: skip
    env = test_environment(root)
    if groups:
        env[TEST_GROUPS_VARIABLE] = ",".join(sorted(groups))
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=PYTEST_TIMEOUT
    )
    seconds = time.monotonic() - started
    output = (done.stdout + done.stderr)[-3000:]
    try:
        run = read_junit([junit]) if junit.exists() else None
    except JUnitError as exc:
        return TestRun(done.returncode, None, f"{output}\n{exc}", seconds)
    failing = {r.nodeid for r in run.results if r.outcome in (TEST_FAILED, TEST_ERROR)} if run else set()
    return TestRun(done.returncode, run, output, seconds, failing)


def test_environment(root: Path) -> dict[str, str]:
    """The scratch copy's sources come first on sys.path: the editable install points at the work
    tree, and tests that find files through ``tierwall.paths.REPO`` must find the mutated ones."""
    env = dict(os.environ)
    paths = [str(root / "src"), str(root / "app" / "src")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["ANSIBLE_CONFIG"] = str(root / "ansible" / "ansible.cfg")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PATH"] = f"{root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The Pulumi program reads its whole config from here; a value left by the caller would leak in.
    env.pop("PULUMI_CONFIG", None)
    # Only run_tests narrows the hosts, for a revert's check; the caller's setting would narrow every run.
    env.pop(TEST_GROUPS_VARIABLE, None)
    return env


def judge(mutation: Mutation, result: TestRun, baseline: TestRun, controls: tuple[Control, ...]) -> Outcome:
    """Killed, survived or error, from the mutated run's JUnit compared with the baseline's."""
    problem = _unusable(mutation, result, baseline, controls)
    mutated = result.run
    if problem or mutated is None:
        return Outcome(mutation, ERROR, result.seconds, problem or "the mutated run wrote no JUnit")
    failed = failed_controls(mutated, controls)
    new = result.failing - baseline.failing
    unmarked = tuple(sorted(r.nodeid for r in mutated.results if not r.controls and r.nodeid in new))
    if mutation.control in failed:
        return Outcome(mutation, KILLED, result.seconds, f"{mutation.control} failed", failed, unmarked)
    return Outcome(mutation, SURVIVED, result.seconds, _survival_note(mutation, mutated, failed, unmarked),
                   failed, unmarked)  # fmt: skip


def _unusable(mutation: Mutation, result: TestRun, baseline: TestRun, controls: tuple[Control, ...]) -> str:
    """Why this run cannot be judged, or nothing."""
    for name, run in (("without the mutation", baseline), ("with the mutation", result)):
        # 0: all passed, 1: some failed; anything else (usage error, nothing collected, a crash)
        # means the selection itself is broken.
        if run.returncode not in (0, 1) or run.run is None:
            return f"pytest {name} exited {run.returncode}:\n{run.output.strip()}"
    if baseline.run is not None and mutation.control in failed_controls(baseline.run, controls):
        return f"{mutation.control} already fails without the mutation: fix that first"
    unseen = _not_in_baseline(result, baseline)
    if unseen:
        return f"the baseline has no result for {len(unseen)} test(s) of the selection, e.g. {unseen[0]}"
    return ""


def _not_in_baseline(result: TestRun, baseline: TestRun) -> list[str]:
    """Failing tests of the mutated run that the baseline never ran: whether the lab failed them
    before the mutation cannot be known, so their failure cannot be credited to it."""
    assert result.run is not None
    assert baseline.run is not None
    known = {r.nodeid for r in baseline.run.results}
    return sorted(n for n in result.failing if n not in known)


def failed_controls(run: Run, controls: tuple[Control, ...]) -> tuple[str, ...]:
    try:
        statuses = evaluate(controls, run, partial=True)
    except AuditError as exc:
        raise MutationError(str(exc)) from None
    return tuple(s.control.id for s in statuses if s.status == CONTROL_FAILED)


def _survival_note(mutation: Mutation, run: Run, failed: tuple[str, ...], unmarked: tuple[str, ...]) -> str:
    if run.for_control(mutation.control):
        note = f"every test of {mutation.control} passed with the mutation in place"
    else:
        note = f"the selection holds no test of {mutation.control}"
    caught = [f"control {c}" for c in failed] + [f"{n} (no control marker)" for n in unmarked]
    return f"{note}; caught only by " + ", ".join(caught) if caught else note

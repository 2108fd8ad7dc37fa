"""Live mutations: break a control on the running lab, run that control's live tests, put it back.

A mutation reaches the lab either as patched role files converged onto it (from a scratch copy of
the repository) or as commands run as root on its hosts, the way drift happens (an operator's
`nft insert`, an `ALTER SYSTEM`, a drop-in). Either way the unpatched tree's converge must take it
back off: it runs with the mutation's limit and tags, then once more, and that second run must
change nothing. A break that the converge does not undo (a row, a database role) is undone by the
mutation's own revert commands first. After a command mutation the control's tests must pass
again: a converge that reports nothing changed is no proof that drift it cannot see is gone.

They share one lab: a mutation's tests run while its break is the only one on the lab. Its revert
may run while the next mutation, on other hosts and for another control, is being applied. The
lab must be up before each Ansible run; every SSH connection of Ansible and of the tests passes
the lab's containment gate on its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from tierwall.audit.controls import Control
from tierwall.audit.junit import ERROR as TEST_ERROR
from tierwall.audit.junit import FAILED as TEST_FAILED
from tierwall.audit.junit import PASSED as TEST_PASSED
from tierwall.audit.junit import JUnitError, read_junit
from tierwall.mutations import engine
from tierwall.mutations.catalogue import Command, Converge, Mutation
from tierwall.mutations.engine import ERROR, NOT_RUN, Outcome, TestRun, judge, run_tests
from tierwall.mutations.scratch import PatchError, apply_patches, clone

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
ANSIBLE_TIMEOUT = 600  # seconds; a tagged converge of one tier takes a few
# A break command exits with this (automake's "skipped") when the lab offers nothing to break
# today (e.g. no package the security archive has updated): the mutation is then not run, with
# the command's last line as the reason, instead of an error that no change of the code can fix.
NOTHING_TO_BREAK = 77
# One line per host in an ad-hoc run's output: "db-1 | CHANGED | rc=0 >>", "db-1 | FAILED | rc=77 >>",
# "db-1 | UNREACHABLE! => {...}", "db-1 | FAILED! => {...}".
_AD_HOC_HOST = re.compile(
    r"^\S+ \| (CHANGED|SUCCESS|FAILED!?|UNREACHABLE!|SKIPPED)(?: \| rc=(-?\d+))?", re.MULTILINE
)


class _NothingToBreak(Exception):
    """A break command found nothing on the lab to break (it exited NOTHING_TO_BREAK)."""


class LabBroken(RuntimeError):
    """The lab could not be put back after a mutation: later mutations would be misjudged."""


@dataclass(frozen=True)
class Recap:
    changed: int
    problems: str  # unreachable or failed hosts, or why the run could not be read


@dataclass(frozen=True)
class Lab:
    """The running lab as a mutation sees it: its inventory and how to run Ansible on it."""

    repo: Path
    pristine: Path

    @property
    def inventory(self) -> Path:
        return self.repo / ".lab" / "inventory.yml"

    def require_up(self) -> None:
        from tierwall.lab.state import State

        state = State.load()
        if state is None or state.phase != "up" or not self.inventory.exists():
            raise LabBroken("the lab is not up: `tierwall lab up` and converge it first (make converge)")

    def converge(self, tree: Path, converge: Converge, passes: int = 1) -> tuple[Recap, ...]:
        """site.yml of ``tree`` (the pristine copy or a patched one) on the lab, ``passes`` times
        in one ansible-playbook run (it runs each playbook named, in order): one recap per pass."""
        playbook = str(tree / "ansible" / "playbooks" / "site.yml")
        argv = ["ansible-playbook", "-i", str(self.inventory), *[playbook] * passes]
        tags = ",".join(converge.tags)
        return _recaps(self._ansible(tree, [*argv, "--limit", converge.limit, "--tags", tags]), passes)

    def command(self, command: Command) -> subprocess.CompletedProcess[str]:
        argv = ["ansible", command.hosts, "-i", str(self.inventory), "-b", "-m", command.module]
        return self._ansible(self.pristine, [*argv, "-a", command.run])

    def _ansible(self, tree: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.require_up()
        env = engine.test_environment(tree)
        env["ANSIBLE_NOCOLOR"] = "1"
        binary = Path(sys.executable).with_name(argv[0])
        return subprocess.run(
            [str(binary), *argv[1:]],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=ANSIBLE_TIMEOUT,
        )


def _recaps(done: subprocess.CompletedProcess[str], passes: int) -> tuple[Recap, ...]:
    """One recap per pass. ansible-playbook prints a PLAY RECAP after each playbook it runs, with
    the counts of the whole run so far: a pass's changes are its recap minus the one before."""
    blocks = done.stdout.split("PLAY RECAP")[1:]
    counted = [_recap(block, done) for block in blocks]
    before = [0] + [r.changed for r in counted]
    recaps = [Recap(r.changed - before[i], r.problems) for i, r in enumerate(counted)]
    why = f"ansible-playbook exited {done.returncode} after {len(recaps)} of {passes} pass(es)"
    why = f"{why}:\n{_tail(done)}"
    if len(recaps) < passes:
        recaps.append(Recap(0, why))
    elif done.returncode and not any(r.problems for r in recaps):
        recaps[-1] = Recap(recaps[-1].changed, why)
    return tuple(recaps[:passes])


def _recap(block: str, done: subprocess.CompletedProcess[str]) -> Recap:
    rows = _RECAP.findall(block)
    if not rows:
        return Recap(0, f"ansible-playbook exited {done.returncode} without a recap:\n{_tail(done)}")
    bad = [host for host, _, unreachable, failed in rows if int(unreachable) or int(failed)]
    problems = f"failed or unreachable: {', '.join(bad)}\n{_tail(done)}" if bad else ""
    return Recap(sum(int(changed) for _, changed, _, _ in rows), problems)


def _tail(done: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


def recorded_baseline(junits: list[Path]) -> TestRun:
    """The live suites' results on this lab as every selection's baseline: the same tests, run
    against the same converged lab just before (make test), instead of each selection again.
    Every pass's file counts (the disruptive pass holds tests the parallel pass does not).
    Refused when the lab was (re)started after a file was written: it would describe other hosts."""
    from tierwall.lab.state import State

    state = State.load()
    for junit in junits:
        if not junit.is_file():
            raise LabBroken(f"no baseline at {junit}: run the live suites first (make live-passes)")
        if state is None or state.started_at is None or junit.stat().st_mtime < state.started_at:
            raise LabBroken(f"{junit} is older than the running lab: run the live suites (make live-passes)")
    try:
        run = read_junit(junits)
    except JUnitError as exc:
        raise LabBroken(str(exc)) from None
    failing = {r.nodeid for r in run.results if r.outcome in (TEST_FAILED, TEST_ERROR)}
    names = ", ".join(str(j) for j in junits)
    return TestRun(1 if failing else 0, run, f"recorded in {names}", 0.0, failing)


def live_tests(tests: tuple[str, ...], lab: Lab) -> tuple[str, ...]:
    return (*tests, f"--ansible-inventory={lab.inventory}")


@dataclass
class _Step:
    """One mutation on its way through the lab: its scratch directory and what it found."""

    mutation: Mutation
    work: Path
    started: float
    problem: str = ""
    not_applicable: str = ""  # why the lab had nothing to break (NOTHING_TO_BREAK)
    result: TestRun | None = None


def run_live(mutation: Mutation, lab: Lab, baseline: TestRun, controls: tuple[Control, ...]) -> Outcome:
    """The mutation's outcome; raises LabBroken when the lab could not be put back."""
    return run_pipeline([mutation], lab, lambda _: baseline, controls)[0]


def run_pipeline(
    mutations: list[Mutation], lab: Lab, baseline: Callable[[Mutation], TestRun],
    controls: tuple[Control, ...], on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:  # fmt: skip
    """Each mutation applied, tested and reverted; raises LabBroken when the lab could not be put back.

    A mutation's revert (the converges, the tests again after drift) runs in the background while
    the next mutation is applied, when that one breaks other hosts and another control: the next
    mutation's tests only start once the revert is proved, so every test run sees one break alone.
    """
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=1) as background:
        behind: tuple[_Step, Future[Outcome]] | None = None
        for mutation in schedule(mutations):
            if behind and not overlaps(behind[0].mutation, mutation):
                outcomes.append(_collect(behind[1], on_outcome))
                behind = None
            step = _Step(mutation, Path(tempfile.mkdtemp(prefix=f"{mutation.id}-", dir=lab.pristine.parent)),
                         time.monotonic())  # fmt: skip
            try:
                try:
                    step.problem = _apply(mutation, lab, step.work)
                except _NothingToBreak as exc:
                    step.not_applicable = str(exc)
                if behind:
                    outcomes.append(_collect(behind[1], on_outcome))
                    behind = None
                if not step.problem and not step.not_applicable:
                    step.result = run_tests(lab.pristine, live_tests(mutation.tests, lab), step.work)
            except BaseException:
                _revert_anyway(step, lab, controls)
                raise
            behind = (step, background.submit(_finish, step, lab, baseline(mutation), controls))
        if behind:
            outcomes.append(_collect(behind[1], on_outcome))
    return outcomes


def _collect(future: Future[Outcome], on_outcome: Callable[[Outcome], None] | None) -> Outcome:
    outcome = future.result()  # the revert's LabBroken, if any, is raised here
    if on_outcome:
        on_outcome(outcome)
    return outcome


def _finish(step: _Step, lab: Lab, baseline: TestRun, controls: tuple[Control, ...]) -> Outcome:
    """Revert the step's mutation, prove the lab is back, and judge what its tests saw."""
    try:
        _revert(step.mutation, lab, controls, step.work)
    finally:
        shutil.rmtree(step.work, ignore_errors=True)
    seconds = time.monotonic() - step.started
    if step.not_applicable:
        return Outcome(step.mutation, NOT_RUN, seconds, step.not_applicable)
    if step.problem or step.result is None:
        return Outcome(step.mutation, ERROR, seconds, step.problem)
    return replace(judge(step.mutation, step.result, baseline, controls), seconds=seconds)


def _revert_anyway(step: _Step, lab: Lab, controls: tuple[Control, ...]) -> None:
    """After an error mid-mutation: take the break off if possible; the first error is the one shown."""
    try:
        _revert(step.mutation, lab, controls, step.work)
    except Exception as exc:  # noqa: BLE001 - the error being raised already says what went wrong
        print(f"{step.mutation.id}: the revert after an error failed too: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(step.work, ignore_errors=True)


def hosts_of(mutation: Mutation) -> set[str]:
    """The inventory groups a mutation touches (its converge's limit and its commands' hosts);
    a pattern other than plain group names counts as every host, and so does a selection with
    the lab's own checks (tests/lab), which probe or converge every host whatever the inventory
    groups (the idempotence test's converge would undo another break beside it)."""
    if any(f.startswith("tests/lab/") for f in mutation.test_files):
        return {"all"}
    patterns = [mutation.converge.limit] if mutation.converge else []
    patterns += [c.hosts for c in (*mutation.commands, *mutation.revert)]
    names = {n.strip() for p in patterns for n in re.split(r"[:,]", p)}
    return {"all"} if any(not re.fullmatch(r"[a-z][a-z0-9_]*", n) or n == "all" for n in names) else names


def overlaps(before: Mutation, after: Mutation) -> bool:
    """Whether ``after`` may be applied while ``before`` is reverted: other hosts (two converges
    never share one) and another control (its break cannot be what the revert's tests see)."""
    a, b = hosts_of(before), hosts_of(after)
    return before.control != after.control and "all" not in a | b and not a & b


def schedule(mutations: list[Mutation]) -> list[Mutation]:
    """An order in which as many mutations as possible overlap the one before: next comes, of
    those that may, the one whose hosts most mutations left share (the db's many would otherwise
    be left to run one by one at the end); catalogue order breaks ties."""
    left, ordered = list(mutations), list[Mutation]()
    while left:
        fits = [m for m in left if ordered and overlaps(ordered[-1], m)] or left
        ordered.append(max(fits, key=lambda m: sum(bool(hosts_of(m) & hosts_of(o)) for o in left)))
        left.remove(ordered[-1])
    return ordered


def _apply(mutation: Mutation, lab: Lab, work: Path) -> str:
    """Put the break on the lab; why it could not be, or nothing."""
    if mutation.patches:
        root = clone(lab.pristine, work / "repo")
        try:
            apply_patches(root, mutation.patches)
        except PatchError as exc:
            return f"does not apply: {exc}"
        (recap,) = lab.converge(root, mutation.converge)  # type: ignore[arg-type]
        if recap.problems:
            return f"the mutated converge failed: {recap.problems}"
        if not recap.changed:
            return "the mutated converge changed nothing on the lab: the patch does not reach it"
    for command in mutation.commands:
        done = lab.command(command)
        if done.returncode and _nothing_to_break(done.stdout):
            raise _NothingToBreak(f"nothing to break on {command.hosts} today: {_last_words(done.stdout)}")
        if done.returncode:
            return f"`{command.run}` on {command.hosts} failed:\n{_tail(done)}"
    return ""


def _nothing_to_break(output: str) -> bool:
    """Whether every host of an ad-hoc run answered NOTHING_TO_BREAK (``host | FAILED | rc=77 >>``)."""
    hosts = _AD_HOC_HOST.findall(output)
    return bool(hosts) and all(answer == ("FAILED", str(NOTHING_TO_BREAK)) for answer in hosts)


def _last_words(output: str) -> str:
    """The last line a host's command printed (Ansible appends its own message to it)."""
    printed = output.rsplit(" >>", 1)[-1].strip().removesuffix("non-zero return code")
    return (printed.strip().splitlines() or ["(nothing printed)"])[-1]


def _revert(mutation: Mutation, lab: Lab, controls: tuple[Control, ...], work: Path) -> None:
    """Undo the break and prove the lab is back, or raise LabBroken."""
    for command in mutation.revert:
        done = lab.command(command)
        if done.returncode:
            raise LabBroken(f"{mutation.id}: revert `{command.run}` failed:\n{_tail(done)}")
    converge = mutation.converge
    assert converge is not None  # the catalogue refuses a live mutation without one
    # The revert and the check in one run: the second pass must change nothing.
    recaps = lab.converge(lab.pristine, converge, passes=2)
    for attempt, recap in zip(("revert", "check"), recaps, strict=True):
        if recap.problems:
            raise LabBroken(f"{mutation.id}: the {attempt} converge failed: {recap.problems}")
    if recap.changed:
        raise LabBroken(f"{mutation.id}: a second converge still changed {recap.changed} thing(s)")
    if mutation.commands:
        (work / "after").mkdir()
        # On the broken hosts only: the next mutation may already be breaking others, and a check
        # that reads every host (drop-ins, open ports) would see its break and blame this revert.
        groups = frozenset(hosts_of(mutation) - {"all"})
        again = run_tests(lab.pristine, live_tests(mutation.tests, lab), work / "after", groups)
        if again.run is None or mutation.control in engine.failed_controls(again.run, controls):
            raise LabBroken(
                f"{mutation.id}: {mutation.control} still fails after the revert: the converge did not "
                f"undo `{mutation.commands[0].run}`\n{again.output[-1500:]}"
            )
        if not any(r.outcome == TEST_PASSED for r in again.run.for_control(mutation.control)):
            where = ", ".join(sorted(groups)) or "every host"
            raise LabBroken(f"{mutation.id}: no test of {mutation.control} passed in the check after the "
                            f"revert (on {where}): the catalogue's tests must check the hosts it breaks")

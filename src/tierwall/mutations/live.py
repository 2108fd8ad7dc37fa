"""Live mutations: break a control on the running lab, run that control's live tests, put it back.

A mutation reaches the lab either as patched role files converged onto it (from a scratch copy of
the repository) or as commands run as root on its hosts, the way drift happens (an operator's
`nft insert`, an `ALTER SYSTEM`, a drop-in). Either way the unpatched tree's converge must take it
back off: it runs with the mutation's limit and tags, then once more, and that second run must
change nothing. A break that the converge does not undo (a row, a database role) is undone by the
mutation's own revert commands first. After a command mutation the control's tests must pass
again: a converge that reports nothing changed is no proof that drift it cannot see is gone.

One mutation at a time: they share one lab. The lab must be up before each one; every SSH
connection of Ansible and of the tests passes the lab's containment gate on its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tierwall.audit.controls import Control
from tierwall.mutations import engine
from tierwall.mutations.catalogue import Command, Converge, Mutation
from tierwall.mutations.engine import ERROR, Outcome, TestRun, judge, run_tests
from tierwall.mutations.scratch import PatchError, apply_patches, clone

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
ANSIBLE_TIMEOUT = 600  # seconds; a tagged converge of one tier takes a few


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

    def converge(self, tree: Path, converge: Converge) -> Recap:
        """site.yml of ``tree`` (the pristine copy or a patched one) on the lab."""
        playbook = tree / "ansible" / "playbooks" / "site.yml"
        argv = ["ansible-playbook", "-i", str(self.inventory), str(playbook), "--limit", converge.limit]
        return _recap(self._ansible(tree, [*argv, "--tags", ",".join(converge.tags)]))

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


def _recap(done: subprocess.CompletedProcess[str]) -> Recap:
    rows = _RECAP.findall(done.stdout)
    if not rows:
        return Recap(0, f"ansible-playbook exited {done.returncode} without a recap:\n{_tail(done)}")
    bad = [host for host, _, unreachable, failed in rows if int(unreachable) or int(failed)]
    problems = f"failed or unreachable: {', '.join(bad)}\n{_tail(done)}" if bad or done.returncode else ""
    return Recap(sum(int(changed) for _, changed, _, _ in rows), problems)


def _tail(done: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


def live_tests(tests: tuple[str, ...], lab: Lab) -> tuple[str, ...]:
    return (*tests, f"--ansible-inventory={lab.inventory}")


def run_live(mutation: Mutation, lab: Lab, baseline: TestRun, controls: tuple[Control, ...]) -> Outcome:
    """The mutation's outcome; raises LabBroken when the lab could not be put back."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{mutation.id}-", dir=lab.pristine.parent) as work:
        try:
            problem = _apply(mutation, lab, Path(work))
            result = None if problem else run_tests(lab.pristine, live_tests(mutation.tests, lab), Path(work))
        finally:
            _revert(mutation, lab, controls, Path(work))
    if problem or result is None:
        return Outcome(mutation, ERROR, time.monotonic() - started, problem)
    outcome = judge(mutation, result, baseline, controls)
    return Outcome(
        mutation, outcome.verdict, time.monotonic() - started, outcome.note,
        outcome.failed_controls, outcome.caught_by_unmarked,
    )  # fmt: skip


def _apply(mutation: Mutation, lab: Lab, work: Path) -> str:
    """Put the break on the lab; why it could not be, or nothing."""
    if mutation.patches:
        root = clone(lab.pristine, work / "repo")
        try:
            apply_patches(root, mutation.patches)
        except PatchError as exc:
            return f"does not apply: {exc}"
        recap = lab.converge(root, mutation.converge)  # type: ignore[arg-type]
        if recap.problems:
            return f"the mutated converge failed: {recap.problems}"
        if not recap.changed:
            return "the mutated converge changed nothing on the lab: the patch does not reach it"
    for command in mutation.commands:
        done = lab.command(command)
        if done.returncode:
            return f"`{command.run}` on {command.hosts} failed:\n{_tail(done)}"
    return ""


def _revert(mutation: Mutation, lab: Lab, controls: tuple[Control, ...], work: Path) -> None:
    """Undo the break and prove the lab is back, or raise LabBroken."""
    for command in mutation.revert:
        done = lab.command(command)
        if done.returncode:
            raise LabBroken(f"{mutation.id}: revert `{command.run}` failed:\n{_tail(done)}")
    converge = mutation.converge
    assert converge is not None  # the catalogue refuses a live mutation without one
    for attempt in ("revert", "check"):
        recap = lab.converge(lab.pristine, converge)
        if recap.problems:
            raise LabBroken(f"{mutation.id}: the {attempt} converge failed: {recap.problems}")
        if not recap.changed:
            break  # a converge that changes nothing is the proof; a second one would add nothing
    if recap.changed:
        raise LabBroken(f"{mutation.id}: a second converge still changed {recap.changed} thing(s)")
    if mutation.commands:
        (work / "after").mkdir()
        again = run_tests(lab.pristine, live_tests(mutation.tests, lab), work / "after")
        if again.run is None or mutation.control in engine.failed_controls(again.run, controls):
            raise LabBroken(
                f"{mutation.id}: {mutation.control} still fails after the revert: the converge did not "
                f"undo `{mutation.commands[0].run}`\n{again.output[-1500:]}"
            )

"""Shared helpers of the bench scripts: commands with a timeout, the lab's hosts, result tables and
JSON reports (``.lab/reports/bench/<name>.json``).

Every command runs with a timeout and fails with a message that names the command. Commands on a
lab machine go through the same SSH jump chain Ansible uses (read from ``.lab/inventory.yml``) and
run as root there (``sudo -n bash -s``, the script on standard input, never on a command line).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tierwall.lab.inventory import hosts_of, ssh_argv
from tierwall.lab.state import State
from tierwall.paths import LAB_DIR, REPO

REPORT_DIR = LAB_DIR / "reports" / "bench"
BIN = REPO / ".venv" / "bin"
# Ansible as the Makefile runs it: its ansible.cfg, and the venv's commands first on PATH
# (testinfra calls ansible-inventory by name).
ANSIBLE_ENV = {
    "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
    "ANSIBLE_FORCE_COLOR": "0",
    "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
}
# Exit codes: 0 measured (whether or not the target holds), 1 error, 3 measured but invalid.
EXIT_ERROR, EXIT_INVALID = 1, 3


class BenchError(RuntimeError):
    """A step failed; the message says which and why."""


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (text output captured); a timeout or (with ``check``) a failure is a BenchError."""
    shown = shlex.join(argv)
    if len(shown) > 200:
        shown = shown[:200] + " ..."
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **env} if env else None,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f}s: {shown}") from None
    except OSError as exc:
        raise BenchError(f"cannot run {shown}: {exc}") from None
    if check and done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise BenchError(f"exit {done.returncode}: {shown}\n{tail}")
    return done


def playbook_argv(playbook: Path | str, *extra: str) -> list[str]:
    """``ansible-playbook`` of the venv against the lab's inventory (run it with ANSIBLE_ENV)."""
    return [str(BIN / "ansible-playbook"), "-i", str(LAB_DIR / "inventory.yml"), str(playbook), *extra]


def drop_caches() -> None:
    """Empty this kernel's page cache, which the lab's machines share (they cannot drop it)."""
    run(["sync"], timeout=300)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def netns(namespace: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside a network namespace (its nftables rules apply)."""
    return ["ip", "netns", "exec", namespace, *argv]


class Lab:
    """The lab as its generated inventory describes it (addresses, namespaces, SSH access)."""

    def __init__(self, path: Path = LAB_DIR / "inventory.yml") -> None:
        if not path.is_file():
            raise BenchError(f"no lab inventory at {path}: run `tierwall lab up` and `make converge`")
        # An inventory outlives its lab; with the lab down, its addresses would route out through
        # this machine's uplink instead of to the lab's machines (or to its unreachable routes).
        state = State.load()
        if state is None or state.phase != "up":
            raise BenchError("the lab is not up: run `tierwall lab up` and `make converge` first")
        self.path = path
        self.data = yaml.safe_load(path.read_text())
        self.vars: dict[str, Any] = self.data["all"]["vars"]
        self.hosts: dict[str, dict[str, Any]] = hosts_of(self.data)
        if self.vars.get("tierwall_target") != "lab":
            raise BenchError(f"{path} is not the lab's inventory (tierwall_target is not 'lab')")

    def first(self, tier: str) -> str:
        names = [n for n, h in self.hosts.items() if h.get("tierwall_tier") == tier]
        if not names:
            raise BenchError(f"the inventory has no {tier} host")
        return names[0]

    def namespace(self, host: str) -> str:
        return str(self.vars["tierwall_lab_namespaces"][host])

    def address(self, host: str, network: str) -> str:
        return str(self.hosts[host]["tierwall_addresses"][network])

    @property
    def ports(self) -> dict[str, int]:
        return self.vars["tierwall_topology"]["ports"]

    def ssh(self, host: str, script: str, *, timeout: float = 120, check: bool = True) -> str:
        """Run a bash ``script`` as root on lab machine ``host``; its standard output.

        bash reads the script from standard input, wrapped in a function so that it is parsed
        whole before it runs and no command in it can read the rest of it as its input."""
        argv = ssh_argv(self.hosts[host], self.vars, ["sudo", "-n", "bash", "-euo", "pipefail", "-s"])
        wrapped = f"bench_script() {{\n{script}\n}}\nbench_script </dev/null\n"
        try:
            done = run(argv, timeout=timeout, input=wrapped, check=check)
        except BenchError as exc:
            raise BenchError(f"on {host}: {_first_line(script)}: {exc}") from None
        return done.stdout


def _first_line(script: str) -> str:
    return next((line.strip() for line in script.splitlines() if line.strip()), "")[:120]


def machine_facts() -> dict[str, Any]:
    commit = run(["git", "-C", str(REPO), "rev-parse", "HEAD"], timeout=10, check=False).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


def concurrent_activity() -> list[str]:
    """Other ansible-playbook runs on this machine (a converge competes for the same cores)."""
    done = run(["pgrep", "-a", "-f", "ansible-playbook"], timeout=10, check=False)
    return [line for line in done.stdout.splitlines() if line.strip()]


def warn_if_busy() -> list[str]:
    busy = concurrent_activity()
    if busy:
        print(f"warning: {len(busy)} ansible-playbook process(es) running: figures may be noisy")
    return busy


@dataclass(frozen=True)
class Figure:
    """One line of a result table. ``holds`` is None when the figure has no target."""

    figure: str
    value: str
    target: str = "-"
    holds: bool | None = None


def print_table(figures: Sequence[Figure], out: Any = sys.stdout) -> None:
    rows = [("figure", "value", "target", "holds")]
    for f in figures:
        rows.append((f.figure, f.value, f.target, {True: "yes", False: "no", None: "-"}[f.holds]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out
        )
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)


def write_report(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the machine's facts to ``.lab/reports/bench/<name>.json``; say where."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": name, "machine": machine_facts(), **payload}, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"\nreport: {path}")
    return path


def verdict(valid: bool, invalid_because: str, target: str, holds: bool | None) -> int:
    """A script's last line and exit code: an invalid run reports no figure (EXIT_INVALID);
    otherwise whether ``target`` holds (``holds`` None: nothing measured against it)."""
    if not valid:
        print(f"INVALID: {invalid_because}; no figure is reported")
        return EXIT_INVALID
    if holds is not None:
        print(f"target {target}: {'holds' if holds else 'does NOT hold'}")
    return 0


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def cleanup(steps: Sequence[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run every cleanup step even when one fails; the failures, as messages."""
    failures = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - every step must run; each failure is reported
            failures.append(f"{what}: {exc}")
            print(f"cleanup FAILED: {what}: {exc}", file=sys.stderr)
    return failures


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that every finally (the cleanups) runs on SIGTERM/SIGHUP too


def main(body: Callable[[], int]) -> None:
    """Run a bench script's body; a BenchError is one clear line (exit 1), not a traceback."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress as it happens
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    if os.geteuid() != 0:
        print("error: the bench scripts drive the lab and need root", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    try:
        code = body()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)

"""Every host's file integrity check, read from and run on the running host (HARD-05).

The daily check is enabled and runs against the host's copy of the reference, and that copy is
the controller's, byte for byte (a reference rewritten on the host, to hide a change, is not). A
converged host passes its check; a program dropped into a watched directory fails the check's unit
and is named in its journal; once it is gone the check reports what it did before.

The references live in the directory the file_integrity role keeps them in: the inventory's
``file_integrity_controller_dir`` for a stack, the lab's ``file-integrity`` directory otherwise.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tierwall.paths import LAB_DIR

TIER_GROUP = "all"

UNIT = "tierwall-file-integrity"
DATABASE = "/var/lib/aide/aide.db"
ROOT_ONLY = "reads AIDE's root-only database and runs the check, which reads every watched file"


def _reference(hostvars: dict[str, Any], name: str) -> Path:
    directory = hostvars.get("file_integrity_controller_dir") or LAB_DIR / "file-integrity"
    return Path(directory) / f"{name}.db"


def _run_check(host: Any) -> tuple[int, str]:
    """Start the check and wait for it; its exit status and what it wrote to the journal."""
    started = host.run("systemctl start %s.service", UNIT)
    invocation = host.run("systemctl show -p InvocationID --value %s.service", UNIT).stdout.strip()
    assert invocation, f"{UNIT}.service has no invocation: {started.stderr}"
    journal = host.run("journalctl -q -o cat _SYSTEMD_INVOCATION_ID=%s", invocation)
    return started.rc, journal.stdout


@pytest.mark.control("HARD-05")
def test_the_check_runs_daily(host: Any) -> None:
    """The timer is enabled and waiting; the service it starts runs AIDE's check."""
    assert host.service(f"{UNIT}.timer").is_enabled
    assert host.run("systemctl is-active %s.timer", UNIT).stdout.strip() == "active"
    unit = host.run("systemctl cat %s.service", UNIT)
    assert unit.rc == 0, unit.stderr
    assert "ExecStart=/usr/bin/aide --config /etc/aide/aide.conf --check" in unit.stdout.splitlines()


@pytest.mark.control("HARD-05")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_hosts_reference_is_the_controllers(host: Any, hostvars: dict[str, Any], host_name: str) -> None:
    """What the host checks against is what the controller keeps: a copy rewritten on the host
    (to make a change look accepted) differs from it."""
    reference = _reference(hostvars, host_name)
    assert reference.is_file(), f"no reference for {host_name} at {reference}: converge site.yml"
    on_host = host.run("sha512sum %s", DATABASE)
    assert on_host.rc == 0, on_host.stderr
    assert on_host.stdout.split()[0] == hashlib.sha512(reference.read_bytes()).hexdigest()


@pytest.mark.control("HARD-05")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_converged_host_passes_its_check(host: Any) -> None:
    """Nothing the converge (or a playbook that changes hosts, such as the restore drill) left
    behind is a difference: the check's unit succeeds."""
    status, report = _run_check(host)
    assert status == 0, f"the converged host is not clean:\n{report}"


def _reported(report: str) -> set[str]:
    """The paths AIDE's report names as added, removed or changed (its "f...: /path" lines)."""
    return {line.split(": ", 1)[1].strip() for line in report.splitlines()
            if re.match(r"^[fdlcbps][^:/]*: /", line)}  # fmt: skip


@pytest.mark.control("HARD-05")
@pytest.mark.verify_never(ROOT_ONLY)
@pytest.mark.disruptive
def test_a_dropped_program_fails_the_check_and_is_named(host: Any) -> None:
    """A file added to /usr/local/sbin fails the check's unit, which names it; removed again, the
    check reports what it reported before. Disruptive: a converge running meanwhile would take the
    program into the reference."""
    _, before = _run_check(host)
    probe = f"/usr/local/sbin/tierwall-integrity-probe-{uuid.uuid4().hex[:12]}"
    assert host.run("install -m 0755 /dev/null %s", probe).rc == 0
    try:
        status, report = _run_check(host)
    finally:
        host.run("rm -f %s", probe)
    assert status != 0, f"the check passed with {probe} added:\n{report}"
    assert probe in _reported(report), report
    _, after = _run_check(host)
    assert _reported(after) == _reported(before)

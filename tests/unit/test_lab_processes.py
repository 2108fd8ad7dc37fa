"""How the lab tells a machine's nspawn from a process that is gone.

A machine starts as `nsenter ... -- systemd-nspawn ...`: for a moment after the start, the
process is between exec's new memory map and its arguments, and /proc/PID/cmdline reads empty.
Read as "exited", that moment failed boots in CI (`systemd-nspawn exited`, the machine booting
fine behind it). The same exec chain with `sleep` shows the window on every machine.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tierwall.lab.machines import pid_alive


@pytest.mark.skipif(shutil.which("nsenter") is None, reason="nsenter (util-linux) is not installed")
def test_a_process_in_the_middle_of_exec_is_alive() -> None:
    for _ in range(40):
        process = subprocess.Popen(["nsenter", "--", "sleep", "0.3"])
        try:
            deadline = time.monotonic() + 0.05
            while time.monotonic() < deadline:
                assert pid_alive(process.pid, "sleep"), "a starting process was read as exited"
        finally:
            process.kill()
            process.wait()


def test_a_reaped_or_zombie_process_is_not_alive() -> None:
    process = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while pid_alive(process.pid, "true") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(process.pid, "true"), "an exited (zombie) process is alive"
    process.wait()
    assert not pid_alive(process.pid, "true")


def test_another_program_under_the_pid_is_not_the_machine() -> None:
    process = subprocess.Popen(["sleep", "5"])
    try:
        time.sleep(0.2)
        assert not pid_alive(process.pid, "systemd-nspawn")
    finally:
        process.kill()
        process.wait()

"""The lab's lifecycle: ``down`` leaves no trace, ``up`` is idempotent and repairs a lab whose
machines were killed. Runs last (marker ``lab_lifecycle``) and leaves the lab up again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tierwall.lab import machines, snapshot
from tierwall.lab.addressing import RUN_DIR
from tierwall.lab.lifecycle import PREUP_SNAPSHOT
from tierwall.lab.state import State

pytestmark = [pytest.mark.lab, pytest.mark.lab_lifecycle]


def _check(result, expect: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert expect in out, out
    return out


def _is_container_init(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    return len(nspid) > 1 and nspid[-1] == "1"


def _no_lab_leftovers(snap: dict) -> None:
    assert not [n for n in snap["netns"] if n.startswith("tw-")], snap["netns"]
    assert not [link for link in snap["links"] if link.startswith(("tw-", "twi-"))], snap["links"]
    assert not [m for m in snap["mounts"] if str(RUN_DIR) in m], snap["mounts"]
    assert not [loop for loop in snap["loops"] if str(RUN_DIR) in loop], snap["loops"]
    assert "tierwall_lab" not in snap["nft"]
    assert not [r for r in snap["routes"] if r.startswith("unreachable")], snap["routes"]
    assert not snap["processes"], snap["processes"]
    assert not snap["cgroups"], snap["cgroups"]


@pytest.mark.control("NET-05")
def test_down_leaves_no_trace_and_up_is_idempotent_and_repairs(tierwall_cli, lab_loader):
    tierwall, require_lab = tierwall_cli, lab_loader
    lab = require_lab()  # fails with a clear message when the lab is not up
    _check(tierwall("lab", "down"), "lab is down")
    before = snapshot.take()
    _no_lab_leftovers(before)
    preup = snapshot.load(PREUP_SNAPSHOT)
    if preup is not None:
        assert not snapshot.diff(preup, before), snapshot.diff(preup, before)

    _check(tierwall("lab", "up"), "lab is up in")
    _check(tierwall("lab", "up"), "lab is up, nothing to do")

    # A killed session: the machines die, namespaces/bridges/mounts/loop devices remain.
    state = State.load()
    for name, pid in state.pids.items():
        if not name.startswith("sentinel-"):
            os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    repaired = _check(tierwall("lab", "up"), "lab is up in")
    assert "repairing" in repaired
    # The killed nspawns' containers were orphaned; the repair must not leave them running.
    inits = [p for p in machines.stray_processes() if _is_container_init(p)]
    assert len(inits) == len(lab.topology.hosts), f"container init processes: {inits}"
    _check(tierwall("lab", "status"), "running")

    _check(tierwall("lab", "down"), "lab is down")
    after = snapshot.take()
    assert not snapshot.diff(before, after), snapshot.diff(before, after)

    _check(tierwall("lab", "up"), "lab is up in")  # later suites find the lab
    assert require_lab().topology.hosts == lab.topology.hosts

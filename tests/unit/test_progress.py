"""The one-line-per-step progress of `tierwall lab up` and `lab down`, with every step faked.

Nothing here touches the machine: the ``faked_lab`` fixture (conftest.py) replaces lifecycle's
``machines``, ``network`` and ``snapshot`` by namespaces holding only fakes (a step the fakes
forget fails with AttributeError instead of reaching the host), its ``run`` refuses to run
anything and its ``RUN_DIR`` is a temporary directory.
"""

from __future__ import annotations

import re
import sys

import pytest

from tierwall import progress
from tierwall.lab import lifecycle
from tierwall.lab.inventory import lab_config
from tierwall.lab.state import State
from tierwall.progress import step

# The machines of the lab the faked_lab fixture builds (one app server), every tier's.
MACHINES = len(lab_config(None, 1).topology().hosts)
UP_STEPS = [
    "checking the host's packages",
    "base image cached (debian trixie)",
    "building the networks and the containment",
    "starting the sentinel (203.0.113.50)",
    "starting the off-site backup store (203.0.113.60)",
    f"preparing {MACHINES} machine disks",
    f"starting {MACHINES} machines",
    f"waiting for {MACHINES} machines to boot",
    "writing known_hosts and the inventory",
    "checking ssh through the jump chain",
]
DOWN_STEPS = [
    "stopping the machines, the sentinel and the off-site store",
    "unmounting the disks and detaching the volume",
    "keeping the packages the machines downloaded for the next lab",
    "removing the networks and the containment",
    "removing the lab's files",
]
STEP_LINE = re.compile(r"^lab: (?P<label>.+) \.\.\. (?P<seconds>\d+\.\d) s$")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """progress's monotonic clock, answering from the list given (each step reads it twice)."""
    ticks: list[float] = []
    monkeypatch.setattr(progress.time, "monotonic", lambda: ticks.pop(0))
    return ticks


def test_a_step_is_one_line_with_its_duration(clock: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    clock += [10.0, 14.25]
    with step("starting 3 machines"):
        assert capsys.readouterr().err == "lab: starting 3 machines ..."  # shown while it runs
    assert capsys.readouterr().err == " 4.2 s\n"


def test_a_failed_step_says_so_and_the_error_goes_on(
    clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    clock += [1.0, 3.0]
    with pytest.raises(RuntimeError, match="nspawn exited"), step("starting 3 machines"):
        raise RuntimeError("nspawn exited")
    assert capsys.readouterr().err == "lab: starting 3 machines ... failed after 2.0 s\n"


def test_a_message_inside_a_step_gets_its_own_line(
    clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    clock += [0.0, 1.5]
    stderr = sys.stderr
    with step("waiting for 3 machines to boot"):
        print("lab: db-1: degraded; failed units: x.service", file=sys.stderr)
    assert sys.stderr is stderr
    assert capsys.readouterr().err.splitlines() == [
        "lab: waiting for 3 machines to boot ...",
        "lab: db-1: degraded; failed units: x.service",
        "lab: waiting for 3 machines to boot ... 1.5 s",
    ]


def _step_labels(err: str) -> list[str]:
    labels = []
    for line in err.splitlines():
        match = STEP_LINE.match(line)
        if match:
            labels.append(match["label"])
    return labels


def test_up_reports_each_step_once(faked_lab: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lifecycle.up() == 0
    captured = capsys.readouterr()
    assert _step_labels(captured.err) == UP_STEPS
    assert all(STEP_LINE.match(line) for line in captured.err.splitlines()), captured.err
    assert captured.out.startswith("lab is up in ")
    # the steps still ran, in their order, each machine once
    assert faked_lab.count("start") == faked_lab.count("wait_running") == MACHINES
    assert faked_lab.index("build_network") < faked_lab.index("start") < faked_lab.index("verify_ssh")


def test_up_names_a_base_image_it_has_to_build(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lifecycle, "is_ready", lambda suite: False)
    lifecycle.up()
    assert "building the base image (debian trixie)" in _step_labels(capsys.readouterr().err)


def test_up_shows_the_step_that_failed(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse_ssh(inventory: dict) -> None:
        raise lifecycle.LabError("ssh through the jump chain failed")

    monkeypatch.setattr(lifecycle, "verify_ssh", refuse_ssh)
    with pytest.raises(lifecycle.LabError):
        lifecycle.up()
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"lab: checking ssh through the jump chain \.\.\. failed after \d+\.\d s", last)


def test_down_reports_each_step_once(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(State, "load", classmethod(lambda cls, path=None: State(pids={"proxy-1": 1})))
    (lifecycle.RUN_DIR / "db-1").mkdir(parents=True)
    lifecycle.ARCHIVE_ANCHORS.mkdir(parents=True)
    (lifecycle.ARCHIVE_ANCHORS / "mgmt-1.head").write_text("sealed x 1 0 0\n")
    assert lifecycle.down() == 0
    captured = capsys.readouterr()
    assert _step_labels(captured.err) == DOWN_STEPS
    assert captured.out.startswith("lab is down in ")
    assert not lifecycle.RUN_DIR.exists()
    # The archive went with its machine; so does the chain line kept for it.
    assert not lifecycle.ARCHIVE_ANCHORS.exists()
    assert faked_lab.index("stop_all") < faked_lab.index("teardown_network")

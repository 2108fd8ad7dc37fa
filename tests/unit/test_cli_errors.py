"""What an operator sees when `tierwall` fails: one line naming what failed and the fix, no traceback.

The lab commands are never run here: their lifecycle functions are replaced by fakes that raise
the error under test.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from tierwall import cli
from tierwall.errors import MAX_LINE, TierwallError, explain, one_line
from tierwall.lab import lifecycle, system
from tierwall.lab.system import LabError

STACK = """\
config:
  tierwall:location: hel1
  tierwall:domain: notes.example.org
"""


@pytest.fixture(autouse=True)
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a fake below ever miss, the real lab command stops at its root check."""
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_version_comes_from_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"tierwall {version('tierwall')}\n"


def test_a_bad_stack_file_is_one_line_with_every_key_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(STACK)
    assert cli.main(["topology", str(stack)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"tierwall: error: {stack}: tierwall:location: 'hel1' is not a German location")
    assert "tierwall:sshPublicKeys" in line
    assert "; fix: correct the key(s) named" in line


def test_check_config_reports_every_refused_file_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "Pulumi.a.yaml", tmp_path / "Pulumi.b.yaml"
    first.write_text(STACK)
    assert cli.main(["check-config", str(first), str(second)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [str(first), str(second)]


def test_not_root_is_one_line_with_the_command_to_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lifecycle, "up", lambda **_: system.require_root())
    assert cli.main(["lab", "up"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("tierwall: error: the lab needs root")
    assert "`sudo .venv/bin/tierwall lab up`" in line


def test_a_lab_error_without_a_fix_gets_the_lab_s_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_down() -> int:
        raise LabError("command failed (1): ip netns del tw-switch\nCannot remove namespace file")

    monkeypatch.setattr(lifecycle, "down", failing_down)
    assert cli.main(["lab", "down"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        "tierwall: error: command failed (1): ip netns del tw-switch; Cannot remove namespace file; "
        "fix: `tierwall lab status` shows what is wrong; `tierwall lab up` repairs the lab, "
        "`tierwall lab down` removes it"
    )


def test_a_missing_tool_names_its_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find, nothing runs
    with pytest.raises(FileNotFoundError) as missing:
        subprocess.run(["losetup", "-l"], check=True)
    assert explain(missing.value).line() == "losetup is not installed; fix: apt-get install mount"


def test_a_missing_file_is_not_a_missing_tool(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        (tmp_path / "inventory.yml").read_text()
    assert explain(missing.value).line() == f"no such file: {tmp_path / 'inventory.yml'}; fix: check the path"


def test_a_failing_command_shows_its_last_words() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        subprocess.run(
            ["sh", "-c", "echo working; echo 'E: Unable to locate package x' >&2; exit 100"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert explain(failed.value).line().startswith(
        "command failed (exit 100): sh -c echo working; echo 'E: Unable to locate package x' >&2; exit 100: "
        "E: Unable to locate package x; fix: run the command by hand"
    )


def test_an_unexpected_error_is_one_line_pointing_at_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise KeyError("proxy-9")

    monkeypatch.setattr(cli, "_topology", broken)
    assert cli.main(["topology", "Pulumi.example.yaml"]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        "tierwall: unexpected error: KeyError: 'proxy-9'; run again with --debug for the traceback"
    )
    assert cli.main(["--debug", "topology", "Pulumi.example.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in broken" in err
    assert err.endswith("KeyError: 'proxy-9'\n")


def test_an_interrupt_is_one_line_and_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "status", interrupted)
    assert cli.main(["lab", "status"]) == 130
    assert capsys.readouterr().err == "tierwall: interrupted\n"


def test_a_long_message_keeps_its_first_and_last_line() -> None:
    detail = "\n".join(f"I: Retrieving package {n}" for n in range(200))
    line = one_line(f"command failed (1): debootstrap bookworm\n{detail}\nE: Couldn't download packages")
    assert len(line) < MAX_LINE
    assert line == (
        "command failed (1): debootstrap bookworm ... E: Couldn't download packages "
        "(200 more lines with --debug)"
    )


def test_a_tierwall_error_is_its_own_explanation() -> None:
    error = TierwallError("no host 'db-2' in the lab", "name one of proxy-1, app-1, db-1")
    assert explain(error) is error
    assert error.line() == "no host 'db-2' in the lab; fix: name one of proxy-1, app-1, db-1"
    assert explain(ValueError("not ours")) is None

"""`tierwall deploy` end to end, against stand-ins for pulumi, ansible-playbook and make.

The stand-ins are shell scripts put first on PATH: each appends its argv (and its working
directory) to a log and exits 0, or the chosen code when its command line starts with the
TW_FAIL prefix; `pulumi stack output` prints the recorded outputs fixture. No real Pulumi,
Ansible or make runs, and nothing here leaves this machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from tierwall import cli

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"
EXAMPLE_STACK = Path(__file__).parents[2] / "Pulumi.example.yaml"
STACK = "prod"

STAND_IN = """\
#!/bin/sh
line="$(basename "$0") $*"
printf '%s\\t%s\\n' "$line" "$(pwd)" >> "$TW_LOG"
if [ -n "$TW_FAIL" ]; then
  case "$line" in "$TW_FAIL"*) exit "$TW_FAIL_CODE" ;; esac
fi
if [ "$(basename "$0")" = pulumi ] && [ "$1 $2" = "stack output" ]; then
  cat "$TW_OUTPUTS"
fi
exit 0
"""

PULUMI = [
    "pulumi stack select prod",
    "pulumi preview --stack prod --policy-pack infra/policy --diff",
    "pulumi up --stack prod --yes --skip-preview --policy-pack infra/policy",
    "pulumi stack output --stack prod --json --show-secrets",
]
HOSTS = [
    "ansible-playbook -i prod-inventory.yml ansible/playbooks/unlock-db.yml",
    "ansible-playbook -i prod-inventory.yml ansible/playbooks/site.yml",
    "make verify INVENTORY=prod-inventory.yml",
]


class Terminal(io.StringIO):
    """stdin as a person at a terminal answers the prompt."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with a valid Pulumi.prod.yaml, and the stand-ins first on PATH."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLE_STACK, project / f"Pulumi.{STACK}.yaml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pulumi", "ansible-playbook", "make"):
        script = bin_dir / name
        script.write_text(STAND_IN)
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TW_LOG", str(tmp_path / "commands.log"))
    monkeypatch.setenv("TW_OUTPUTS", str(OUTPUTS))
    monkeypatch.setenv("TW_FAIL", "")
    monkeypatch.setenv("TW_FAIL_CODE", "2")
    monkeypatch.setattr("sys.stdin", io.StringIO())  # no terminal unless a test gives one
    return project


def commands_run(workdir: Path) -> list[str]:
    log = workdir.parent / "commands.log"
    if not log.exists():
        return []
    entries = [line.split("\t") for line in log.read_text().splitlines()]
    assert {cwd for _, cwd in entries} == {str(workdir)}, "every command runs in the project directory"
    return [argv for argv, _ in entries]


def deploy(workdir: Path, *options: str) -> int:
    return cli.main(["deploy", STACK, "--workdir", str(workdir), *options])


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tierwall:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_every_step_runs_in_order_and_the_inventory_comes_from_the_outputs(
    workdir: Path, tmp_path: Path
) -> None:
    key = tmp_path / "ops_key"
    assert deploy(workdir, "--yes", "--private-key", str(key)) == 0
    assert commands_run(workdir) == PULUMI + HOSTS

    outputs = workdir / f"{STACK}-outputs.json"
    assert stat.S_IMODE(outputs.stat().st_mode) == 0o600
    assert json.loads(outputs.read_text()) == json.loads(OUTPUTS.read_text())

    inventory = yaml.safe_load((workdir / f"{STACK}-inventory.yml").read_text())
    groups = inventory["all"]["children"]
    assert {tier: sorted(group["hosts"]) for tier, group in groups.items()} == {
        "proxy": ["proxy-1"],
        "app": ["app-1", "app-2"],
        "db": ["db-1"],
    }
    assert groups["proxy"]["hosts"]["proxy-1"]["ansible_host"] == "203.0.113.10"
    assert inventory["all"]["vars"]["ansible_ssh_private_key_file"] == str(key)
    assert inventory["all"]["vars"]["tierwall_target"] == "prod"


def test_an_outputs_file_left_readable_by_others_is_narrowed_to_the_owner(workdir: Path) -> None:
    outputs = workdir / f"{STACK}-outputs.json"
    outputs.write_text("{}")
    outputs.chmod(0o644)
    assert deploy(workdir, "--yes") == 0
    assert stat.S_IMODE(outputs.stat().st_mode) == 0o600
    assert json.loads(outputs.read_text())["stack"] == "prod"


@pytest.mark.parametrize(
    ("failing", "label"),
    [
        (PULUMI[0], "step 2/8 'pulumi stack select'"),
        (PULUMI[1], "step 3/8 'pulumi preview'"),
        (PULUMI[2], "step 4/8 'pulumi up'"),
        (PULUMI[3], "step 5/8 'pulumi stack output'"),
        (HOSTS[0], "step 7/8 'ansible-playbook'"),
        (HOSTS[1], "step 7/8 'ansible-playbook'"),
        (HOSTS[2], "step 8/8 'make verify'"),
    ],
)
def test_a_failing_step_stops_the_run_and_is_named(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failing: str,
    label: str,
) -> None:
    monkeypatch.setenv("TW_FAIL", failing)
    assert deploy(workdir, "--yes") == 1
    ran = commands_run(workdir)
    assert ran[-1] == failing, "nothing runs after the failing command"
    assert ran == (PULUMI + HOSTS)[: ran.index(failing) + 1]
    line = error_line(capsys)
    assert line.startswith(f"tierwall: error: deploy: {label} failed (exit 2): {failing}")
    assert "; fix: " in line


def test_a_broken_outputs_file_stops_at_the_inventory_step(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"stack": "prod"}))
    monkeypatch.setenv("TW_OUTPUTS", str(broken))
    assert deploy(workdir, "--yes") == 1
    assert commands_run(workdir) == PULUMI
    assert not (workdir / f"{STACK}-inventory.yml").exists()
    assert error_line(capsys).startswith("tierwall: error: deploy: step 6/8 'inventory' failed: ")


def test_a_dry_run_runs_only_the_read_only_steps_and_prints_the_rest(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No terminal and no --yes: a dry run never asks, so it needs neither.
    assert deploy(workdir, "--dry-run") == 0
    assert commands_run(workdir) == PULUMI[:2]
    assert sorted(p.name for p in workdir.iterdir()) == [f"Pulumi.{STACK}.yaml"]
    out = capsys.readouterr().out.splitlines()
    assert [line.removeprefix("deploy: would run: ") for line in out if "would run" in line] == [
        PULUMI[2],
        PULUMI[3],
        "tierwall inventory --pulumi-outputs prod-outputs.json -o prod-inventory.yml",
        *HOSTS,
    ]


def test_a_bad_stack_config_stops_before_pulumi_is_called(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file = workdir / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(stack_file.read_text().replace("location: fsn1", "location: hel1"))
    assert deploy(workdir, "--yes") == 1
    assert commands_run(workdir) == []
    line = error_line(capsys)
    assert line.startswith("tierwall: error: deploy: step 1/8 'check-config' failed: ")
    assert "tierwall:location: 'hel1' is not a German location" in line


def test_a_missing_pulumi_is_named_with_its_step(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir.parent / "bin" / "pulumi").unlink()
    monkeypatch.setenv("PATH", str(workdir.parent / "bin"))  # no other pulumi anywhere
    assert deploy(workdir, "--yes") == 1
    assert commands_run(workdir) == []
    line = error_line(capsys)
    assert line.startswith("tierwall: error: deploy: step 2/8 'pulumi stack select' failed: ")
    assert "pulumi is not installed" in line


def test_without_a_terminal_and_without_yes_nothing_runs(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy(workdir) == 1
    assert commands_run(workdir) == []
    line = error_line(capsys)
    assert "no terminal to confirm" in line
    assert "fix: pass --yes" in line


def test_at_a_terminal_the_stack_name_confirms_after_the_preview(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(f"{STACK}\n"))
    assert deploy(workdir) == 0
    assert commands_run(workdir) == PULUMI + HOSTS


@pytest.mark.parametrize("answer", ["y\n", "yes\n", ""])
def test_any_other_answer_stops_after_the_preview(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answer: str
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    assert deploy(workdir) == 1
    assert commands_run(workdir) == PULUMI[:2]
    assert "was not changed" in error_line(capsys)

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
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall import cli
from tierwall.labels import STACK_LABEL, TIER_LABEL
from tierwall.topology import TIERS

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"
REPO = Path(__file__).parents[2]
EXAMPLE_STACK = REPO / "Pulumi.example.yaml"
HCLOUD_EXAMPLE = REPO / "docs" / "operations" / "prod.hcloud.yml"
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
    "ansible-playbook -i prod-inventory.yml -e @prod-secrets.vault.yml ansible/playbooks/unlock-db.yml",
    "ansible-playbook -i prod-inventory.yml -e @prod-secrets.vault.yml ansible/playbooks/site.yml",
    "make verify INVENTORY=prod-inventory.yml",
]


class Terminal(io.StringIO):
    """stdin as a person at a terminal answers the prompt."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with a valid Pulumi.prod.yaml and its vault file (its password in
    $ANSIBLE_VAULT_PASSWORD_FILE), and the stand-ins first on PATH."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLE_STACK, project / f"Pulumi.{STACK}.yaml")
    password = tmp_path / "vault-password"
    password.write_text("the stack's vault password\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    assert cli.main(["secrets", "init", STACK, "--workdir", str(project)]) == 0
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
        "mgmt": ["mgmt-1"],
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
    assert sorted(p.name for p in workdir.iterdir()) == [f"Pulumi.{STACK}.yaml", f"{STACK}-secrets.vault.yml"]
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


def test_a_qualified_stack_name_is_refused_before_anything_runs(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["deploy", "acme/tierwall/prod", "--yes", "--workdir", str(workdir)]) == 1
    assert commands_run(workdir) == []
    assert "is not a stack's short name" in error_line(capsys)


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


def test_without_its_vault_file_the_stack_is_not_touched(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / f"{STACK}-secrets.vault.yml").unlink()
    assert deploy(workdir, "--yes") == 1
    assert commands_run(workdir) == []
    line = error_line(capsys)
    assert "prod-secrets.vault.yml does not exist" in line
    assert "fix: create it once with `tierwall secrets init prod`" in line


def test_without_a_vault_password_or_terminal_the_stack_is_not_touched(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")
    assert deploy(workdir, "--yes") == 1
    assert commands_run(workdir) == []
    assert "fix: pass --vault-password-file FILE" in error_line(capsys)


def test_the_vault_password_file_reaches_both_playbooks(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")
    script = tmp_path / "vault-password"
    assert deploy(workdir, "--yes", "--vault-password-file", str(script)) == 0
    playbooks = [c for c in commands_run(workdir) if c.startswith("ansible-playbook")]
    assert len(playbooks) == 2
    assert all(f"-e @prod-secrets.vault.yml --vault-password-file {script} " in c for c in playbooks)


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


# -- the hcloud dynamic inventory example of docs/operations/deploy.md ---------------------------------
#
# The plugin itself runs on the example file; only its two calls to the Hetzner API are replaced:
# the token check and the server list, which it takes from its cache when told it has one. The
# servers are what the plugin would build from the API for the recorded stack. This proves the
# file's grouping and naming, not that Hetzner answers as assumed (the label selector is applied
# by the API and is not exercised here).


def hcloud_servers(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The stack's servers as the plugin describes them (its _build_inventory_server's keys)."""
    servers = []
    for number, (name, host) in enumerate(sorted(outputs["hosts"].items()), start=1):
        server: dict[str, Any] = {
            "id": 1000 + number,
            "name": f"tierwall-{outputs['stack']}-{name}",
            "status": "running",
            "type": "cx23",
            "server_type": "cx23",
            "location": outputs["location"],
            "labels": {STACK_LABEL: outputs["stack"], TIER_LABEL: host["tier"]},
            "private_networks": [
                {"id": int(outputs["networks"][net]["id"]), "name": f"tierwall-prod-networks-{net}", "ip": ip}
                for net, ip in host["private_ips"].items()
            ],
        }
        if "public_ipv4" in host:
            server["ipv4"] = host["public_ipv4"]
        servers.append(server)
    return servers


def test_the_hcloud_example_names_the_labels_the_pulumi_program_sets() -> None:
    document = yaml.safe_load(HCLOUD_EXAMPLE.read_text())
    assert HCLOUD_EXAMPLE.name.endswith("hcloud.yml"), "the plugin reads only files named *hcloud.yml"
    assert document["plugin"] == "hetzner.hcloud.hcloud"
    assert document["label_selector"] == f"{STACK_LABEL}=prod"
    assert set(document["groups"]) == set(TIERS)
    for tier, condition in document["groups"].items():
        assert condition == f"hcloud_labels['{TIER_LABEL}'] == '{tier}'"


def run_hcloud_plugin(servers: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch):
    """The inventory the plugin builds from the example file for ``servers``, without the API."""
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import inventory_loader

    # Should a stub below ever miss, the plugin's API calls go to a closed port on this machine.
    monkeypatch.setenv("HCLOUD_TOKEN", "not-a-token")
    monkeypatch.setenv("HCLOUD_ENDPOINT", "http://127.0.0.1:9/v1")
    plugin = inventory_loader.get("hetzner.hcloud.hcloud")
    # The plugin's check for `requests` (which the API client needs and this test does not).
    monkeypatch.setattr(sys.modules[type(plugin).__module__], "client_check_required_lib", lambda: None)
    monkeypatch.setattr(plugin, "_configure_hcloud_client", lambda: None)
    monkeypatch.setattr(plugin, "_get_cached_result", lambda path, cache: (servers, True))
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(HCLOUD_EXAMPLE), cache=True)
    return inventory


def test_the_hcloud_example_puts_each_server_in_its_tier_group(monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = run_hcloud_plugin(hcloud_servers(json.loads(OUTPUTS.read_text())), monkeypatch)
    groups = {tier: sorted(h.name for h in inventory.groups[tier].get_hosts()) for tier in TIERS}
    assert groups == {"proxy": ["proxy-1"], "app": ["app-1", "app-2"], "db": ["db-1"], "mgmt": ["mgmt-1"]}
    assert sorted(h.name for h in inventory.groups["location_fsn1"].get_hosts()) == sorted(
        name for names in groups.values() for name in names
    )
    db = inventory.get_host("db-1").get_vars()
    assert db["tierwall_tier"] == "db"
    assert db["ansible_user"] == "ops"
    assert db["ansible_host"] == "db-1", "the ssh config's Host block carries the address and the jumps"
    assert db["ansible_ssh_common_args"] == "-F prod.ssh_config"


def test_a_server_without_its_tier_label_stops_the_hcloud_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible.errors import AnsibleError

    servers = hcloud_servers(json.loads(OUTPUTS.read_text()))
    del servers[-1]["labels"][TIER_LABEL]
    with pytest.raises(AnsibleError, match="for host proxy-1"):
        run_hcloud_plugin(servers, monkeypatch)


def test_the_deploy_page_shows_the_example_file_as_it_is() -> None:
    page = (HCLOUD_EXAMPLE.parent / "deploy.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load(HCLOUD_EXAMPLE.read_text())

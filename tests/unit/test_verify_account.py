"""The production check reads as its own account, never as root: its key, its sudoers, its workflow.

The verify account (common role, tasks/users.yml) has a key of its own from the stack config, a
few read-only groups and a sudoers file that names each root command in full; the scheduled
workflow runs on a self-hosted runner with that key only. Which check needs which privilege:
docs/operations/verification.md.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.cli import main
from tierwall.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "common"
WORKFLOW = REPO / ".github" / "workflows" / "verify-production.yml"
PAGE = REPO / "docs" / "operations" / "verification.md"
OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"
OPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq ops@example"
VERIFY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEw6Yg3TqzHc8f0iR8m0nC1lW9gX2pVb7oYdQ4sJk5uV verify@runner"
VALID = {
    "location": "fsn1",
    "domain": "notes.example.org",
    "sshPublicKeys": [OPS_KEY],
    "adminCidrs": ["198.51.100.7/32"],
    "backupRepositories": [
        {"location": "fsn1", "endpoint": "fsn1.your-objectstorage.com", "bucket": "notes-backups-fsn1"},
        {"location": "nbg1", "endpoint": "nbg1.your-objectstorage.com", "bucket": "notes-backups-nbg1"},
    ],
}


def _role_value(expression: str, **overrides: Any) -> Any:
    """A common role expression as Ansible computes it from the role's defaults and vars."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables = dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(ROLE / "vars" / "main.yml"), trusted_as_template=True))
    variables.update(ansible_managed="Ansible managed", **overrides)
    return Templar(loader=loader, variables=variables).template(trust_as_template(expression))


def _sudoers(**overrides: Any) -> str:
    template = (ROLE / "templates" / "sudoers-verify.j2").read_text()
    return _role_value(template, **overrides)


def test_the_sudoers_names_each_command_in_full_and_nothing_else() -> None:
    rules = [line for line in _sudoers().splitlines() if line and not line.startswith(("#", "Defaults"))]
    commands = _role_value("{{ common_verify_sudo_commands }}")
    assert rules == [f"verify ALL=(root) NOPASSWD: {command}" for command in commands]
    assert all(shlex.split(command)[0].startswith("/") for command in commands)


@pytest.mark.skipif(shutil.which("visudo") is None, reason="visudo (Debian's sudo) is not installed here")
def test_the_rendered_sudoers_passes_visudo(tmp_path: Path) -> None:
    path = tmp_path / "91-verify"
    path.write_text(_sudoers())
    path.chmod(0o440)
    done = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


WIDENING = [
    "ALL",
    "/usr/bin/journalctl *",
    "/bin/sh -c id",
    "/bin/bash",
    "/usr/bin/python3 -c x",
    "nft list ruleset",
    "/usr/bin/less /var/log/syslog",
    "/usr/bin/find / -exec",
    "/usr/bin/env nft",
    "/usr/bin/vim /etc/shadow",
]
REFUSED = "{{ common_verify_sudo_commands | select('search', __common_verify_forbidden) | list }}"


@pytest.mark.parametrize("command", WIDENING)
def test_a_command_that_widens_root_is_refused(command: str) -> None:
    assert _role_value(REFUSED, common_verify_sudo_commands=[command]) == [command]


def test_the_shipped_commands_pass_the_roles_own_check() -> None:
    assert (
        _role_value("{{ common_verify_sudo_commands | select('search', __common_verify_forbidden) | list }}")
        == []
    )


def test_sshd_admits_the_verify_account_only_where_it_exists() -> None:
    assert _role_value("{{ __common_sshd_allow_users }}") == ["ops"]
    assert _role_value("{{ __common_sshd_allow_users }}", common_verify_authorized_keys=[VERIFY_KEY]) == [
        "ops",
        "verify",
    ]


def test_the_verify_key_is_checked_like_the_operators() -> None:
    assert parse_config({**VALID, "verifySshPublicKey": VERIFY_KEY}).verify_ssh_public_key == VERIFY_KEY
    assert parse_config(VALID).verify_ssh_public_key == ""
    with pytest.raises(ConfigError) as raised:
        parse_config({**VALID, "verifySshPublicKey": "not a key"})
    assert "tierwall:verifySshPublicKey: must be one OpenSSH public key" in str(raised.value)


def test_the_verify_key_may_not_be_an_operators_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One key for both would hand the check's runner the operators' unlimited sudo."""
    stack = tmp_path / "Pulumi.prod.yaml"
    shared = OPS_KEY.replace("ops@example", "verify@runner")
    config = {f"tierwall:{k}": v for k, v in {**VALID, "verifySshPublicKey": shared}.items()}
    stack.write_text(yaml.safe_dump({"config": config}))
    assert main(["check-config", str(stack)]) == 1
    err = capsys.readouterr().err
    assert (
        "tierwall:verifySshPublicKey: is one of sshPublicKeys; give the verify account a key of its own"
        in err
    )


def _inventory(tmp_path: Path, *options: str) -> dict[str, Any]:
    out = tmp_path / "inventory.yml"
    assert main(["inventory", "--pulumi-outputs", str(OUTPUTS), *options, "-o", str(out)]) == 0
    return yaml.safe_load(out.read_text())


def test_a_stack_inventory_carries_the_verify_key_for_the_common_role(tmp_path: Path) -> None:
    all_vars = _inventory(tmp_path)["all"]["vars"]
    assert all_vars["common_verify_authorized_keys"][0].startswith("ssh-ed25519 ")
    assert (all_vars["ansible_user"], all_vars["ansible_become"]) == ("ops", True)


def test_the_verify_inventory_connects_as_verify_and_never_becomes_root(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, "--verify", "--private-key", "/keys/verify")
    all_vars = inventory["all"]["vars"]
    assert (all_vars["ansible_user"], all_vars["ansible_become"]) == ("verify", False)
    assert all_vars["tierwall_verify_account"] is True
    db = inventory["all"]["children"]["db"]["hosts"]["db-1"]["ansible_ssh_common_args"]
    assert "ops@" not in db
    assert db.count("verify@") == 2, "both hops of the db's jump chain go as verify"


def test_a_verify_inventory_of_a_stack_without_the_account_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    outputs = json.loads(OUTPUTS.read_text())
    outputs["verify_ssh_public_key"] = ""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    assert main(["inventory", "--pulumi-outputs", str(path), "--verify"]) == 1
    assert "set tierwall:verifySshPublicKey in the stack file" in capsys.readouterr().err


def test_the_scheduled_check_runs_as_verify_on_a_self_hosted_runner() -> None:
    text = WORKFLOW.read_text()
    job = yaml.safe_load(text)["jobs"]["verify"]
    assert "self-hosted" in job["runs-on"], "a shared runner would hold a key into production"
    assert "ubuntu" not in str(job["runs-on"])
    assert "OPS_SSH_PRIVATE_KEY" not in text, "the operators' key (unlimited sudo) must not reach CI"
    assert "secrets.VERIFY_SSH_PRIVATE_KEY" in text
    assert "--verify" in text


def test_the_verification_page_justifies_every_root_command() -> None:
    page = PAGE.read_text()
    for command in _role_value("{{ common_verify_sudo_commands }}"):
        assert f"`{command}`" in page, f"{command} has no justification on {PAGE.name}"

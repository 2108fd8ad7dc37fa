"""A stack converges only with the secrets of its vault file, refused before any host is touched.

The playbooks' own pre-task file (ansible/playbooks/tasks/secrets-source.yml) runs here with the
playbooks' own group_vars, first in a run whose next play only announces itself: a refusal must
stop the whole run (any_errors_fatal), so that play must never start, on any host. The vault file
is the one `tierwall secrets init` writes. Nothing connects anywhere: the hosts are local and the
plays only assert and print.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import yaml
from playbook_run import PLAYBOOK_BIN, ansible_env

from tierwall.cli import main
from tierwall.paths import ANSIBLE_DIR

PLAYBOOKS = ANSIBLE_DIR / "playbooks"
MARK = "the next play ran"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A playbook beside the real group_vars and tasks, as site.yml sees them."""
    (tmp_path / "group_vars").symlink_to(PLAYBOOKS / "group_vars")
    (tmp_path / "tasks").symlink_to(PLAYBOOKS / "tasks")
    plays = [
        {"name": "check", "hosts": "all", "gather_facts": False,
         "tasks": [{"name": "the guard", "ansible.builtin.import_tasks": "tasks/secrets-source.yml"}]},
        {"name": "next", "hosts": "all", "gather_facts": False,
         "tasks": [{"name": "announce", "ansible.builtin.debug": {"msg": MARK}}]},
    ]  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    (tmp_path / "password").write_text("a vault password for the test\n")
    return tmp_path


def _inventory(project: Path, target: str) -> Path:
    hosts = {name: {"ansible_connection": "local"} for name in ("app-1", "db-1")}
    path = project / f"{target}.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"tierwall_target": target}, "hosts": hosts}}))
    return path


def _run(project: Path, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [str(PLAYBOOK_BIN), "-i", str(_inventory(project, target)), str(project / "play.yml"), *extra]
    return subprocess.run(
        argv, capture_output=True, text=True, env=ansible_env(project), timeout=300, check=False
    )


def _vault(project: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stack's vault file as an operator completes it: init, then the S3 credentials it supplies."""
    password = str(project / "password")
    options = ["prod", "--workdir", str(project), "--vault-password-file", password]
    assert main(["secrets", "init", *options]) == 0
    for name, value in (("backup-s3-access-key", "TESTACCESSKEY0000001"),
                        ("backup-s3-secret-key", "testSecretKey0000000000000000000000000000")):  # fmt: skip
        monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
        assert main(["secrets", "set", options[0], name, *options[1:]]) == 0
    return ["-e", f"@{project / 'prod-secrets.vault.yml'}", "--vault-password-file", password]


def test_the_lab_converges_as_before_without_a_vault(project: Path) -> None:
    done = _run(project, "lab")
    assert done.returncode == 0, done.stdout + done.stderr
    assert MARK in done.stdout


def test_a_stack_without_its_vault_file_is_refused_before_any_host(project: Path) -> None:
    done = _run(project, "prod")
    assert done.returncode != 0
    assert "tierwall_vault_notes_db_password is not an encrypted value" in done.stdout
    assert "tierwall secrets init prod" in done.stdout
    assert MARK not in done.stdout, "a refused stack must not reach the next play on any host"


def test_a_stack_with_its_vault_file_goes_on(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = _run(project, "prod", *_vault(project, monkeypatch))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(MARK) == 2


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("tierwall_vault_pgdata_key=" + "ab" * 32, "tierwall_vault_pgdata_key is not an encrypted value"),
        (
            "tierwall_notes_db_password=from-a-plaintext-file",
            "tierwall_notes_db_password is set to something else",
        ),
        ("tierwall_secrets_dir=/work/.lab/secrets", "tierwall_secrets_dir is set"),
    ],
    ids=["plaintext-vault-variable", "overridden-password", "lab-secrets-dir"],
)
def test_a_stack_whose_secret_comes_from_elsewhere_is_refused(
    project: Path, override: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _run(project, "prod", *_vault(project, monkeypatch), "-e", override)
    assert done.returncode != 0
    assert named in done.stdout, done.stdout
    assert MARK not in done.stdout


def test_no_secret_value_is_printed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = _vault(project, monkeypatch)
    done = _run(project, "prod", *extra, "-e", "tierwall_notes_db_password=plaintext-marker-value", "-v")
    assert done.returncode != 0
    assert "plaintext-marker-value" not in done.stdout + done.stderr

"""`tierwall secrets`: a stack's secrets generated and rotated inside its Ansible Vault file.

Most secrets are generated; the S3 credentials of the backup repositories are issued by Hetzner
and supplied by the operator with `set`, read from stdin here as a pipe would give them.

The file is read back with Ansible's own loader and vault, as ansible-playbook reads it. No value
may appear in clear in the file, on stdout or stderr; the playbooks that hand out secrets refuse a
stack whose secrets come from anywhere else (the refusal itself runs in
tests/integration/test_secrets_guard.py).
"""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.cli import main
from tierwall.vault import BY_NAME, SECRETS, SUPPLIED

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "ansible" / "playbooks"
GUARD = "tasks/secrets-source.yml"
PASSWORD = "a vault password for the unit tests"
GENERATED = [s for s in SECRETS if not s.supplied]
# The shapes of a Hetzner pair (20 upper-case letters and digits; 40 characters), made up.
S3_KEYS = {
    "backup-s3-access-key": "TWUNITACCESS0KEY1234",
    "backup-s3-secret-key": "tw/Unit+Secret=Key_0123456789abcdefGHIJ!",
}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(PASSWORD + "\n")
    return path


def secrets(tmp_path: Path, password_file: Path, *argv: str) -> int:
    command, stack, *rest = argv
    return main(["secrets", command, stack, *rest, "--workdir", str(tmp_path),
                 "--vault-password-file", str(password_file)])  # fmt: skip


def set_value(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> int:
    """`tierwall secrets set prod NAME`, the value piped in as one line."""
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    return secrets(tmp_path, password_file, "set", "prod", name)


def set_both(tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_KEYS.items():
        assert set_value(tmp_path, password_file, monkeypatch, name, value) == 0


def decrypted(path: Path, password: str = PASSWORD) -> dict[str, str]:
    """The file as ansible-playbook -e @file sees it: every !vault value opened."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecret, VaultSecretsContext

    secrets = [("prod", VaultSecret(password.encode()))]
    loader = DataLoader()
    loader.set_vault_secrets(secrets)
    # ansible-playbook opens !vault values on use, with the secrets of its run's context.
    before, VaultSecretsContext._current = VaultSecretsContext._current, VaultSecretsContext(secrets)
    try:
        return {name: str(value) for name, value in loader.load_from_file(str(path)).items()}
    finally:
        VaultSecretsContext._current = before


def test_init_writes_every_generated_secret_encrypted_and_owner_only(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = decrypted(path)
    assert sorted(values) == sorted(s.variable for s in GENERATED)
    text, printed = path.read_text(), "".join(capsys.readouterr())
    for secret in GENERATED:
        value = values[secret.variable]
        assert secret.valid(value.strip()), f"{secret.variable} is not {secret.form}"
        assert re.search(rf"^{secret.variable}: !vault \|\n  \$ANSIBLE_VAULT;1\.2;AES256;prod$", text, re.M)
        for part in value.split():
            assert part not in text, f"{secret.variable} is readable in clear in the file"
            assert part not in printed, f"{secret.variable} was printed"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prod")] == [], (
        "a temporary file was left"
    )


def test_init_leaves_the_supplied_secrets_out_and_says_how_to_set_them(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    assert SUPPLIED == ("backup-s3-access-key", "backup-s3-secret-key")
    text, out = (tmp_path / "prod-secrets.vault.yml").read_text(), capsys.readouterr().out
    assert "7 generated secrets" in out
    assert "Hetzner Console -> Object Storage -> S3 credentials" in out
    for name in SUPPLIED:
        assert BY_NAME[name].variable not in text
        command = (
            f"tierwall secrets set prod {name} --vault-password-file {password_file} --workdir {tmp_path}"
        )
        assert f"  {command}\n" in out, out


def test_two_stacks_never_share_a_value(tmp_path: Path, password_file: Path) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    assert secrets(tmp_path, password_file, "init", "staging") == 0
    prod = decrypted(tmp_path / "prod-secrets.vault.yml")
    staging = decrypted(tmp_path / "staging-secrets.vault.yml")
    assert not set(prod.values()) & set(staging.values())


def test_a_second_init_is_refused_and_the_file_kept(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    capsys.readouterr()
    assert secrets(tmp_path, password_file, "init", "prod") == 1
    line = capsys.readouterr().err.strip()
    assert "exists already" in line
    assert "fix: rotate one secret with `tierwall secrets rotate prod NAME`" in line
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before


@pytest.mark.parametrize("name", ["notes-db-password", "identity-db-password", "app-api-token"])
def test_rotating_a_secret_changes_it_alone(tmp_path: Path, password_file: Path, name: str) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    before = decrypted(path)
    assert secrets(tmp_path, password_file, "rotate", "prod", name) == 0
    after = decrypted(path)
    changed = {v for v in before if before[v] != after[v]}
    assert changed == {BY_NAME[name].variable}
    assert BY_NAME[name].valid(after[BY_NAME[name].variable])


def test_rotating_the_keyring_adds_a_key_and_keeps_the_old_ones(tmp_path: Path, password_file: Path) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    variable = BY_NAME["notes-keyring"].variable
    first = decrypted(path)[variable].splitlines()
    for _ in range(2):
        assert secrets(tmp_path, password_file, "rotate", "prod", "notes-keyring") == 0
    lines = decrypted(path)[variable].splitlines()
    assert lines[:1] == first, "the old key must stay to decrypt what it wrapped"
    assert len(lines) == 3
    ids = [line.split(":", 1)[0] for line in lines]
    assert len(set(ids)) == 3
    assert BY_NAME["notes-keyring"].valid(decrypted(path)[variable])


@pytest.mark.parametrize("name", ["pgdata-key", "ca-passphrase", "backup-passphrase"])
def test_secrets_that_need_a_procedure_are_not_rotated_blindly(
    tmp_path: Path, password_file: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    assert secrets(tmp_path, password_file, "rotate", "prod", name) == 1
    assert f"fix: follow docs/operations/secrets.md, section '{name}'" in capsys.readouterr().err
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before


def test_the_backup_passphrase_refusal_says_why(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    assert secrets(tmp_path, password_file, "rotate", "prod", "backup-passphrase") == 1
    line = capsys.readouterr().err
    assert "pgBackRest cannot re-encrypt a repository" in line
    assert "a new stanza in new, empty buckets" in line
    assert "the old passphrase kept until the old backups expire" in line


@pytest.mark.parametrize("name", SUPPLIED)
def test_a_supplied_secret_is_not_rotated_but_set(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    set_both(tmp_path, password_file, monkeypatch)
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    capsys.readouterr()
    assert secrets(tmp_path, password_file, "rotate", "prod", name) == 1
    line = capsys.readouterr().err
    assert f"{name} is not generated by tierwall: it comes from Hetzner Console" in line
    assert f"`tierwall secrets set prod {name}`" in line
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before


def test_set_writes_the_supplied_secrets_encrypted_and_check_passes(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    generated = decrypted(path)
    access, secret_key = (BY_NAME[name].variable for name in SUPPLIED)

    assert set_value(tmp_path, password_file, monkeypatch, SUPPLIED[0], S3_KEYS[SUPPLIED[0]]) == 0
    out = capsys.readouterr().out
    assert "backup-s3-access-key set in" in out
    assert "tierwall secrets set prod backup-s3-secret-key" in out, "the other one is still to set"
    assert secrets(tmp_path, password_file, "check", "prod") == 1, "one of the pair is still missing"

    assert set_value(tmp_path, password_file, monkeypatch, SUPPLIED[1], S3_KEYS[SUPPLIED[1]]) == 0
    assert "still to set" not in capsys.readouterr().out
    values = decrypted(path)
    assert values == {**generated, access: S3_KEYS[SUPPLIED[0]], secret_key: S3_KEYS[SUPPLIED[1]]}
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.search(rf"^{secret_key}: !vault \|\n  \$ANSIBLE_VAULT;1\.2;AES256;prod$", text, re.M)
    assert secrets(tmp_path, password_file, "check", "prod") == 0
    printed = "".join(capsys.readouterr())
    assert "ok (9 secrets" in printed
    for value in S3_KEYS.values():
        assert value not in text, "a supplied value is readable in clear in the file"
        assert value not in printed, "a supplied value was printed"

    # New credentials from the Console: `set` again replaces the value and nothing else.
    assert set_value(tmp_path, password_file, monkeypatch, SUPPLIED[0], "TWUNITNEWACCESSKEY99") == 0
    assert decrypted(path) == {**values, access: "TWUNITNEWACCESSKEY99"}


def test_set_reads_the_value_without_echo_at_a_terminal(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return S3_KEYS["backup-s3-secret-key"]

    assert secrets(tmp_path, password_file, "init", "prod") == 0
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    assert secrets(tmp_path, password_file, "set", "prod", "backup-s3-secret-key") == 0
    assert prompts == ["backup-s3-secret-key for stack prod (not shown): "]
    variable = BY_NAME["backup-s3-secret-key"].variable
    assert decrypted(tmp_path / "prod-secrets.vault.yml")[variable] == S3_KEYS["backup-s3-secret-key"]


@pytest.mark.parametrize(
    ("name", "value", "form"),
    [
        ("backup-s3-access-key", "TWSHORT0KEY", "16 to 128 letters and digits"),
        ("backup-s3-access-key", "TWUNIT-ACCESS-KEY-1234", "16 to 128 letters and digits"),
        ("backup-s3-access-key", "", "16 to 128 letters and digits"),
        ("backup-s3-secret-key", "tw unit secret key 0123456789 abcdefghij",
         "20 to 128 printable ASCII characters without whitespace"),
        ("backup-s3-secret-key", "twShortSecret", "20 to 128 printable ASCII characters without whitespace"),
        ("backup-s3-secret-key", "twUnitSecretKey0123456789\u00e9abcdefghij",
         "20 to 128 printable ASCII characters without whitespace"),
        ("backup-s3-secret-key", "x" * 129, "20 to 128 printable ASCII characters without whitespace"),
    ],
    ids=["access-too-short", "access-dashes", "empty", "secret-spaces", "secret-too-short",
         "secret-not-ascii", "secret-too-long"],
)  # fmt: skip
def test_set_refuses_an_invalid_value_and_writes_nothing(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, value: str, form: str,
) -> None:  # fmt: skip
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    capsys.readouterr()
    assert set_value(tmp_path, password_file, monkeypatch, name, value) == 1
    line = capsys.readouterr().err.strip()
    assert f"the value given for {name} is not {form}; nothing was written" in line
    assert "fix: copy it again from Hetzner Console -> Object Storage -> S3 credentials" in line
    assert f"`tierwall secrets set prod {name}` again" in line
    if value:
        assert value not in line, "a refused value was printed"
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prod")] == []


@pytest.mark.parametrize("name", ["notes-db-password", "backup-passphrase"])
def test_set_refuses_a_generated_secret_and_points_at_rotate(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:  # fmt: skip
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    stdin = io.StringIO("TWUNITTYPEDINBYMISTAKE0123\n")
    monkeypatch.setattr("sys.stdin", stdin)
    assert secrets(tmp_path, password_file, "set", "prod", name) == 1
    line = capsys.readouterr().err
    assert f"{name} is generated by tierwall, never typed in" in line
    assert f"fix: a new value: `tierwall secrets rotate prod {name}`" in line
    assert stdin.tell() == 0, "nothing is read for a secret that is refused"
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before


def test_set_and_rotate_under_another_vault_password_write_nothing(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value encrypted under a password that does not open the rest would split the file in two."""
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    before = (tmp_path / "prod-secrets.vault.yml").read_text()
    password_file.write_text("not the password\n")
    assert set_value(tmp_path, password_file, monkeypatch, SUPPLIED[0], S3_KEYS[SUPPLIED[0]]) == 1
    assert "the vault password does not open this file" in capsys.readouterr().err
    assert secrets(tmp_path, password_file, "rotate", "prod", "app-api-token") == 1
    assert "the vault password does not open this file" in capsys.readouterr().err
    assert (tmp_path / "prod-secrets.vault.yml").read_text() == before


def test_check_names_a_missing_supplied_secret_with_the_set_command(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    capsys.readouterr()
    assert secrets(tmp_path, password_file, "check", "prod") == 1
    line = capsys.readouterr().err
    for name in SUPPLIED:
        assert (
            f"{BY_NAME[name].variable} is missing: set it with `tierwall secrets set prod {name}`, "
            "from Hetzner Console -> Object Storage -> S3 credentials"
        ) in line
    assert "encrypt_string" not in line, "a supplied secret is set, not encrypted by hand"


def test_check_names_a_plaintext_value(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    set_both(tmp_path, password_file, monkeypatch)
    assert secrets(tmp_path, password_file, "check", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    path.write_text(path.read_text() + "tierwall_vault_extra: in-clear\n")
    capsys.readouterr()
    assert secrets(tmp_path, password_file, "check", "prod") == 1
    line = capsys.readouterr().err.strip()
    assert "tierwall_vault_extra not vault-encrypted" in line
    assert "; fix: " in line
    assert "in-clear" not in line


def test_check_names_a_missing_secret(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    path = tmp_path / "prod-secrets.vault.yml"
    text = path.read_text()
    start = text.index("tierwall_vault_app_api_token:")
    end = text.index("tierwall_vault_notes_keyring:")
    path.write_text(text[:start] + text[end:])
    assert secrets(tmp_path, password_file, "check", "prod") == 1
    assert "tierwall_vault_app_api_token is missing" in capsys.readouterr().err


def test_a_wrong_password_is_named(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    password_file.write_text("not the password\n")
    assert secrets(tmp_path, password_file, "check", "prod") == 1
    assert "the vault password does not open this file" in capsys.readouterr().err


def test_without_a_password_source_or_terminal_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert main(["secrets", "init", "prod", "--workdir", str(tmp_path)]) == 1
    assert "fix: pass --vault-password-file FILE" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _plays(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((PLAYBOOKS / name).read_text())


def _imports_guard(tasks: list[dict[str, Any]]) -> bool:
    return any(task.get("ansible.builtin.import_tasks") == GUARD for task in tasks or [])


def test_site_checks_the_secrets_in_its_first_play() -> None:
    """The first play changes nothing (gather_facts off, asserts only): refused there, no host was touched."""
    first = _plays("site.yml")[0]
    assert first["gather_facts"] is False
    assert _imports_guard(first["tasks"])
    modules = {next(k for k in task if k.startswith("ansible.builtin.")) for task in first["tasks"]}
    assert modules <= {"ansible.builtin.assert", "ansible.builtin.import_tasks"}


@pytest.mark.parametrize("name", ["unlock-db.yml", "database.yml", "application.yml", "edge.yml", "pki.yml"])
def test_every_other_playbook_checks_the_secrets_first(name: str) -> None:
    for play in _plays(name):
        assert _imports_guard(play.get("pre_tasks", [])[:1]), f"{name}: the guard must be the first pre-task"


def test_the_guard_knows_every_secret() -> None:
    tasks = yaml.safe_load((PLAYBOOKS / GUARD).read_text())
    listed = tasks[0]["vars"]["__tierwall_vault_variables"]
    assert sorted(listed) == sorted(s.variable for s in SECRETS)
    assert all(task.get("any_errors_fatal") is True for task in tasks)
    assert all(task.get("when") == "tierwall_target != 'lab'" for task in tasks)


def test_the_secrets_page_has_a_rotation_section_per_secret() -> None:
    page = (REPO / "docs" / "operations" / "secrets.md").read_text()
    for secret in SECRETS:
        assert re.search(rf"^### `{secret.name}`", page, re.M), f"no rotation section for {secret.name}"


def test_rekey_keeps_every_secret_under_the_new_password(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert secrets(tmp_path, password_file, "init", "prod") == 0
    set_both(tmp_path, password_file, monkeypatch)
    path = tmp_path / "prod-secrets.vault.yml"
    before = decrypted(path)
    assert len(before) == len(SECRETS)
    new_password = tmp_path / "new-password"
    new_password.write_text("the new vault password of the stack\n")
    assert (
        secrets(tmp_path, password_file, "rekey", "prod", "--new-vault-password-file", str(new_password)) == 0
    )
    assert decrypted(path, "the new vault password of the stack") == before
    assert secrets(tmp_path, password_file, "check", "prod") == 1, "the old password must no longer open it"

"""The key escrow with Debian's age: what goes in comes back byte for byte with the recovery key,
and nothing comes back without it, from a changed archive, or over newer files."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from tierwall import escrow

pytestmark = pytest.mark.control("BAK-04")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in .lab with secrets and a CA, and the escrow module pointed at it."""
    root = tmp_path / ".lab"
    (root / "secrets").mkdir(parents=True)
    (root / "pki" / "hosts").mkdir(parents=True)
    secrets = {"pgdata-key": "ab" * 32, "backup-cipher-passphrase": "p" * 64, "notes-master-key": "k"}
    for name, value in secrets.items():
        (root / "secrets" / name).write_text(value + "\n")
    # What the pki role keeps of the CA on the controller (named here, not read from the module).
    for name in ("ca.key", "ca.crt", "tierwall-ca.crl"):
        (root / "pki" / name).write_text(f"-----{name}-----\n")
    (root / "pki" / "hosts" / "db-1.crt").write_text("issued again by the next converge\n")
    monkeypatch.setattr(escrow, "LAB_SOURCES", (("secrets", root / "secrets"), ("pki", root / "pki")))
    monkeypatch.setattr(escrow, "LAB_RECOVERY", root / "recovery")
    monkeypatch.setattr(escrow, "LAB_IDENTITY", root / "recovery" / "identity.txt")
    monkeypatch.setattr(escrow, "LAB_ESCROW", root / "escrow" / "lab.age")
    return root


def _args(**values: object) -> argparse.Namespace:
    defaults = dict.fromkeys(("stack", "recipients_file", "ca_dir", "vault_password_file", "output", "into"))
    defaults |= {"lab": True, "force": False}
    return argparse.Namespace(**{**defaults, **values})


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_lab_escrow_brings_back_every_secret_and_the_ca_on_an_empty_controller(lab: Path) -> None:
    before = {k: v for k, v in _contents(lab).items() if k.startswith(("secrets/", "pki/ca", "pki/tierwall"))}
    escrow._export(_args(action="export"))
    sealed = escrow.LAB_ESCROW.read_bytes()
    assert b"ab" * 32 not in sealed
    assert b"-----ca.key-----" not in sealed
    assert escrow.LAB_ESCROW.stat().st_mode & 0o077 == 0
    for gone in ("secrets", "pki"):
        subprocess.run(["rm", "-r", str(lab / gone)], check=True)
    escrow._command(_args(action="recover", file=escrow.LAB_ESCROW, identity=escrow.LAB_IDENTITY))
    assert {k: v for k, v in _contents(lab).items() if k.startswith(("secrets/", "pki/"))} == before
    assert all((lab / name).stat().st_mode & 0o077 == 0 for name in before)


def test_check_names_what_changed_since_the_escrow(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    escrow._export(_args(action="export"))
    check = _args(action="check", file=escrow.LAB_ESCROW, identity=escrow.LAB_IDENTITY)
    assert escrow._command(check) == 0
    (lab / "secrets" / "pgdata-key").write_text("cd" * 32 + "\n")
    (lab / "secrets" / "new-secret").write_text("x\n")
    assert escrow._command(check) == 1
    out = capsys.readouterr().out
    assert "secrets/pgdata-key: changed since" in out
    assert "secrets/new-secret: not in the escrow" in out


def test_another_key_cannot_open_it(lab: Path, tmp_path: Path) -> None:
    escrow._export(_args(action="export"))
    stranger = tmp_path / "stranger.txt"
    subprocess.run(["age-keygen", "-o", str(stranger)], check=True, capture_output=True)
    with pytest.raises(escrow.EscrowError, match="decrypting failed"):
        escrow.decrypt(escrow.LAB_ESCROW.read_bytes(), stranger)


def test_a_changed_member_or_a_member_outside_its_place_is_refused(lab: Path) -> None:
    members = escrow.lab_members()
    archive = escrow.pack(members, "lab")
    tampered = archive.replace(b"ab" * 32, b"cd" * 32)
    assert tampered != archive
    with pytest.raises(escrow.EscrowError, match="do not match their sums"):
        escrow.unpack(tampered)
    with pytest.raises(escrow.EscrowError, match="unexpected member"):
        escrow.unpack(escrow.pack([escrow.Member("secrets/../../etc/passwd", b"x")], "lab"))


def test_recovery_does_not_replace_newer_files_unless_forced(lab: Path) -> None:
    escrow._export(_args(action="export"))
    (lab / "secrets" / "pgdata-key").write_text("cd" * 32 + "\n")
    recover = _args(action="recover", file=escrow.LAB_ESCROW, identity=escrow.LAB_IDENTITY)
    with pytest.raises(escrow.EscrowError, match="would replace"):
        escrow._command(recover)
    assert (lab / "secrets" / "pgdata-key").read_text() == "cd" * 32 + "\n"
    escrow._command(_args(**{**vars(recover), "force": True}))
    assert (lab / "secrets" / "pgdata-key").read_text() == "ab" * 32 + "\n"


def test_a_stack_escrow_holds_its_vault_file_password_and_ca(tmp_path: Path) -> None:
    identity = tmp_path / "operator.txt"
    public = subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True, text=True)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(public.stderr.split("Public key: ")[1])
    vault, ca = tmp_path / "prod-secrets.vault.yml", tmp_path / "ca"
    vault.write_text("tierwall_vault_pgdata_key: !vault |\n  $ANSIBLE_VAULT;1.2;AES256;prod\n")
    ca.mkdir()
    (ca / "ca.key").write_text("key\n")
    members = escrow.stack_members(vault, b"vault-password", ca)
    sealed = escrow.encrypt(escrow.pack(members, "prod"), recipients)
    manifest, members = escrow.unpack(escrow.decrypt(sealed, identity))
    assert manifest["target"] == "prod"
    assert {m.name: m.data for m in members} == {
        "vault/prod-secrets.vault.yml": vault.read_bytes(),
        "vault/password": b"vault-password",
        "pki/ca.key": b"key\n",
    }

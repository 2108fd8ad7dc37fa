"""The tierwall-notes-client command line, run in-process through its main()."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tierwall_notes_client.cli import main

TEXT = "Séance 1 : motif de consultation, anxiété au travail.\n"


@dataclass
class Run:
    code: int
    out: str
    err: str


Runner = Callable[..., Run]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Runner:
    def invoke(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


@dataclass
class User:
    name: str
    key: Path
    public: Path
    pins: Path


@pytest.fixture
def users(tmp_path: Path, run: Runner) -> dict[str, User]:
    made = {}
    for name in ("alice", "bob", "carol"):
        user = User(name, tmp_path / f"{name}.key", tmp_path / f"{name}.pub", tmp_path / f"{name}-pins.json")
        done = run("keygen", "--id", f"psy-{name}", "--key", str(user.key), "--public", str(user.public))
        assert done.code == 0, done.err
        made[name] = user
    return made


def _fingerprint(run: Runner, user: User) -> str:
    done = run("fingerprint", str(user.public))
    assert done.code == 0, done.err
    return done.out.split("  ", 1)[1].strip()


def _note_args(user: User, file_id: uuid.UUID, note_id: uuid.UUID, src: Path, dst: Path) -> list[str]:
    return ["--key", str(user.key), "--pins", str(user.pins), "--file-id", str(file_id),
            "--note-id", str(note_id), "--in", str(src), "--out", str(dst)]  # fmt: skip


def _one_line_error(done: Run) -> str:
    assert done.code == 1
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("tierwall-notes-client: error: ")
    return lines[0]


def test_keygen_writes_a_0600_key_and_a_public_key_with_its_fingerprint(
    users: dict[str, User], run: Runner
) -> None:
    alice = users["alice"]
    assert stat.S_IMODE(alice.key.stat().st_mode) == 0o600
    public = json.loads(alice.public.read_text())
    assert public["psychologist_id"] == "psy-alice"
    assert "secret" not in public
    fingerprint = _fingerprint(run, alice)
    assert fingerprint == public["fingerprint"]
    # The private key file shows the same fingerprint without needing a passphrase.
    assert run("fingerprint", str(alice.key)).out.split("  ", 1)[1].strip() == fingerprint


def test_keygen_refuses_to_overwrite_a_key(users: dict[str, User], run: Runner) -> None:
    alice = users["alice"]
    before = alice.key.read_bytes()
    line = _one_line_error(run("keygen", "--id", "psy-alice", "--key", str(alice.key)))
    assert "already exists" in line
    assert alice.key.read_bytes() == before


def test_encrypt_for_a_pinned_colleague_and_both_decrypt(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice, bob = users["alice"], users["bob"]
    assert run("pin", str(bob.public), "--pins", str(alice.pins)).code == 0
    assert run("trust", str(alice.public), "--pins", str(bob.pins),
               "--fingerprint", _fingerprint(run, alice).upper()).code == 0  # fmt: skip
    file_id, note_id = uuid.uuid4(), uuid.uuid4()
    plain, sealed = tmp_path / "note.txt", tmp_path / "note.json"
    plain.write_text(TEXT)

    done = run("encrypt", *_note_args(alice, file_id, note_id, plain, sealed), "--to", "psy-bob")
    assert done.code == 0, done.err
    assert "anxiété" not in sealed.read_text()

    for reader in (alice, bob):
        out = tmp_path / f"{reader.name}.txt"
        done = run("decrypt", *_note_args(reader, file_id, note_id, sealed, out))
        assert done.code == 0, done.err
        assert out.read_text() == TEXT
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_decrypt_under_another_note_id_fails_with_one_line(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice = users["alice"]
    file_id, note_id = uuid.uuid4(), uuid.uuid4()
    plain, sealed, out = tmp_path / "note.txt", tmp_path / "note.json", tmp_path / "out.txt"
    plain.write_text(TEXT)
    assert run("encrypt", *_note_args(alice, file_id, note_id, plain, sealed)).code == 0
    line = _one_line_error(run("decrypt", *_note_args(alice, file_id, uuid.uuid4(), sealed, out)))
    assert "another file or note id" in line
    assert not out.exists()
    line = _one_line_error(run("decrypt", *_note_args(alice, uuid.uuid4(), note_id, sealed, out)))
    assert "another file or note id" in line


def test_a_psychologist_not_addressed_cannot_decrypt(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice, carol = users["alice"], users["carol"]
    run("pin", str(alice.public), "--pins", str(carol.pins))
    file_id, note_id = uuid.uuid4(), uuid.uuid4()
    plain, sealed = tmp_path / "note.txt", tmp_path / "note.json"
    plain.write_text(TEXT)
    assert run("encrypt", *_note_args(alice, file_id, note_id, plain, sealed)).code == 0
    line = _one_line_error(run("decrypt", *_note_args(carol, file_id, note_id, sealed, tmp_path / "o")))
    assert "not encrypted to key" in line
    assert "re-wrap" in line


def test_rewrap_hands_a_note_to_the_new_psychologist(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice, carol = users["alice"], users["carol"]
    run("pin", str(carol.public), "--pins", str(alice.pins))
    run("pin", str(alice.public), "--pins", str(carol.pins))
    file_id, note_id = uuid.uuid4(), uuid.uuid4()
    plain, sealed, handed = tmp_path / "note.txt", tmp_path / "note.json", tmp_path / "handed.json"
    plain.write_text(TEXT)
    assert run("encrypt", *_note_args(alice, file_id, note_id, plain, sealed)).code == 0
    done = run("rewrap", *_note_args(alice, file_id, note_id, sealed, handed), "--to", "psy-carol")
    assert done.code == 0, done.err
    out = tmp_path / "carol.txt"
    done = run("decrypt", *_note_args(carol, file_id, note_id, handed, out))
    assert done.code == 0, done.err
    assert out.read_text() == TEXT


def test_changed_pinned_key_is_refused_until_confirmed(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice, bob = users["alice"], users["bob"]
    assert run("pin", str(bob.public), "--pins", str(alice.pins)).code == 0
    new_key, new_public = tmp_path / "bob2.key", tmp_path / "bob2.pub"
    assert run("keygen", "--id", "psy-bob", "--key", str(new_key), "--public", str(new_public)).code == 0

    line = _one_line_error(run("pin", str(new_public), "--pins", str(alice.pins)))
    assert "changed" in line
    assert "--confirm-change" in line
    assert _fingerprint(run, bob) in line
    assert _fingerprint(run, User("", new_key, new_public, alice.pins)) in line

    done = run("pin", str(new_public), "--pins", str(alice.pins), "--confirm-change")
    assert done.code == 0, done.err
    assert "re-pinned" in done.out


def test_pin_refuses_a_key_whose_fingerprint_differs_from_the_one_given(
    users: dict[str, User], run: Runner
) -> None:
    alice, bob = users["alice"], users["bob"]
    line = _one_line_error(
        run("pin", str(bob.public), "--pins", str(alice.pins), "--fingerprint", _fingerprint(run, alice))
    )
    assert "do not pin it" in line
    assert not alice.pins.exists()


def test_encrypt_to_an_unpinned_psychologist_names_the_fix(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice = users["alice"]
    plain = tmp_path / "note.txt"
    plain.write_text(TEXT)
    line = _one_line_error(
        run(
            "encrypt",
            *_note_args(alice, uuid.uuid4(), uuid.uuid4(), plain, tmp_path / "o"),
            "--to",
            "psy-bob",
        )
    )
    assert "no key pinned for psychologist 'psy-bob'" in line
    assert "pin" in line


def test_passphrase_protected_key_needs_the_passphrase(run: Runner, tmp_path: Path) -> None:
    key, public, secret = tmp_path / "dora.key", tmp_path / "dora.pub", tmp_path / "passphrase"
    secret.write_text("a long passphrase of dora\n")
    secret.chmod(0o600)
    done = run(
        "keygen",
        "--id",
        "psy-dora",
        "--key",
        str(key),
        "--public",
        str(public),
        "--passphrase-file",
        str(secret),
    )
    assert done.code == 0, done.err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    dora = User("dora", key, public, tmp_path / "dora-pins.json")
    file_id, note_id = uuid.uuid4(), uuid.uuid4()
    plain, sealed = tmp_path / "note.txt", tmp_path / "note.json"
    plain.write_text(TEXT)

    line = _one_line_error(run("encrypt", *_note_args(dora, file_id, note_id, plain, sealed)))
    assert "passphrase-protected" in line
    assert "--passphrase-file" in line
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    line = _one_line_error(
        run("encrypt", *_note_args(dora, file_id, note_id, plain, sealed), "--passphrase-file", str(wrong))
    )
    assert "wrong passphrase" in line
    done = run(
        "encrypt", *_note_args(dora, file_id, note_id, plain, sealed), "--passphrase-file", str(secret)
    )
    assert done.code == 0, done.err
    out = tmp_path / "out.txt"
    done = run("decrypt", *_note_args(dora, file_id, note_id, sealed, out), "--passphrase-file", str(secret))
    assert done.code == 0, done.err
    assert out.read_text() == TEXT


def test_group_readable_key_is_refused_with_the_fix(
    users: dict[str, User], run: Runner, tmp_path: Path
) -> None:
    alice = users["alice"]
    alice.key.chmod(0o644)
    plain = tmp_path / "note.txt"
    plain.write_text(TEXT)
    line = _one_line_error(
        run("encrypt", *_note_args(alice, uuid.uuid4(), uuid.uuid4(), plain, tmp_path / "o"))
    )
    assert f"chmod 600 {alice.key}" in line


def test_missing_input_file_is_one_line(users: dict[str, User], run: Runner, tmp_path: Path) -> None:
    alice = users["alice"]
    line = _one_line_error(
        run(
            "decrypt",
            *_note_args(alice, uuid.uuid4(), uuid.uuid4(), tmp_path / "absent.json", tmp_path / "o"),
        )
    )
    assert "does not exist" in line

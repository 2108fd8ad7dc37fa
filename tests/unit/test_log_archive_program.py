"""The archive's seal, verify and expire program (log_archive role, files/tierwall-archive), run
on a scratch archive: what it seals, what fails verification, what retention removes (AUD-03)."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parents[2] / "ansible/roles/log_archive/files/tierwall-archive"


def _run(action: str, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(PROGRAM), action, "--root", str(root), "--chain", str(root / "chain"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _hour(delta: datetime.timedelta) -> str:
    return (datetime.datetime.now(datetime.UTC) + delta).strftime("%Y-%m-%dT%H")


def _write(root: Path, host: str, hour: str, text: str) -> Path:
    path = root / host / f"{hour}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    _write(tmp_path, "db-1", _hour(datetime.timedelta(hours=-2)), "one\n")
    _write(tmp_path, "app-1", _hour(datetime.timedelta(hours=-2)), "two\n")
    _write(tmp_path, "app-1", _hour(datetime.timedelta(0)), "the hour that is not over\n")
    assert _run("seal", tmp_path).returncode == 0
    return tmp_path


@pytest.mark.control("AUD-03")
def test_only_the_hours_that_are_over_are_sealed_and_the_archive_verifies(archive: Path) -> None:
    lines = (archive / "chain").read_text().splitlines()
    now = _hour(datetime.timedelta(0))
    past = sorted(f"{p.parent.name}/{p.name}" for p in archive.glob("*/*.log") if now not in p.name)
    assert [line.split()[1] for line in lines] == past
    assert _run("seal", archive).stdout.startswith("sealed 0 file(s)")
    assert _run("verify", archive).returncode == 0


@pytest.mark.control("AUD-03")
@pytest.mark.parametrize("change", ["append", "truncate", "remove"])
def test_a_sealed_file_changed_or_removed_fails_verification(archive: Path, change: str) -> None:
    sealed = next((archive / "db-1").glob("*.log"))
    if change == "append":
        sealed.write_text(sealed.read_text() + "forged\n")
    elif change == "truncate":
        sealed.write_text("")
    else:
        sealed.unlink()
    result = _run("verify", archive)
    assert result.returncode == 1
    assert f"db-1/{sealed.name}" in result.stdout


@pytest.mark.control("AUD-03")
def test_a_chain_line_rewritten_or_dropped_fails_verification(archive: Path) -> None:
    chain = archive / "chain"
    original = chain.read_text()
    first, second = original.splitlines()
    chain.write_text(second + "\n")
    assert _run("verify", archive).returncode == 1
    record, _, link = first.rpartition(" ")
    chain.write_text(f"{record.replace('sealed', 'sealed ', 1)} {link}\n{second}\n")
    assert "does not link" in _run("verify", archive).stdout


@pytest.mark.control("AUD-03")
def test_expiry_removes_older_hours_records_each_removal_and_refuses_less_than_a_year(tmp_path: Path) -> None:
    old = _write(tmp_path, "proxy-1", _hour(datetime.timedelta(days=-401)), "old\n")
    kept = _write(tmp_path, "proxy-1", _hour(datetime.timedelta(days=-399)), "kept\n")
    assert _run("expire", tmp_path, "--days", "364").returncode == 2
    assert _run("expire", tmp_path, "--days", "400").returncode == 0
    assert not old.exists()
    assert kept.exists()
    records = [line.split()[:2] for line in (tmp_path / "chain").read_text().splitlines()]
    assert records == [["sealed", f"proxy-1/{old.name}"], ["removed", f"proxy-1/{old.name}"]]
    assert _run("seal", tmp_path).returncode == 0
    assert _run("verify", tmp_path).returncode == 0
    old.write_text("back again\n")
    assert "recorded as removed" in _run("verify", tmp_path).stdout

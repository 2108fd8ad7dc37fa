"""The file_integrity role's AIDE configuration, run by this machine's AIDE on a scratch tree.

The configuration is rendered with the role's own variables, with the watched paths and the
database moved under a scratch directory (the attribute groups and the rule shapes are the ones a
host gets). AIDE must find a file added, removed or changed in content, permissions or owner, and
must not report a file rewritten with the same content or only touched; two scans of the same files
give the same database byte for byte, which is what lets a converge that changed nothing leave the
reference alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tierwall.paths import REPO

sys.path.insert(0, str(REPO / "tests" / "unit"))
from role_render import render

AIDE = shutil.which("aide") or "/usr/bin/aide"
pytestmark = pytest.mark.skipif(not os.path.exists(AIDE), reason="AIDE is not installed (make apt-deps)")
# AIDE's exit status bits: files added, removed, changed.
ADDED, REMOVED, CHANGED = 1, 2, 4


class Scratch:
    """A watched tree ``root/etc`` and ``root/bin`` and AIDE's database, under ``base``."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.db = base / "db"
        for part in ("etc", "bin", "etc/volatile"):
            (self.root / part).mkdir(parents=True)
        self.db.mkdir()
        (self.root / "etc" / "app.conf").write_text("listen 127.0.0.1\n")
        (self.root / "bin" / "tool").write_text("#!/bin/sh\n")
        (self.root / "bin" / "tool").chmod(0o755)
        (self.root / "etc" / "volatile" / "state").write_text("1\n")
        self.config = base / "aide.conf"
        self.config.write_text(self._render())

    def _render(self) -> str:
        return render(
            "file_integrity", "aide.conf.j2", "db-1",
            file_integrity_watched=[f"{self.root}/etc", f"{self.root}/bin"],
            file_integrity_ignored=[f"{self.root}/etc/volatile$"],
            __file_integrity_database=str(self.db / "aide.db"),
            __file_integrity_database_new=str(self.db / "aide.db.new"),
        )  # fmt: skip

    def aide(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [AIDE, "--config", str(self.config), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def init(self) -> None:
        done = self.aide("--init")
        assert done.returncode == 0, done.stdout + done.stderr
        (self.db / "aide.db.new").replace(self.db / "aide.db")

    def check(self) -> subprocess.CompletedProcess[str]:
        done = self.aide("--check")
        assert done.returncode < 14, done.stdout + done.stderr
        return done


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    tree = Scratch(tmp_path)
    tree.init()
    return tree


@pytest.mark.control("HARD-05")
def test_aide_accepts_the_configuration(tmp_path: Path) -> None:
    """The configuration a host gets parses in AIDE's own check (the role validates with it too)."""
    config = tmp_path / "aide.conf"
    config.write_text(render("file_integrity", "aide.conf.j2", "app-1"))
    command = [AIDE, "--config-check", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.control("HARD-05")
def test_an_untouched_tree_and_a_same_content_rewrite_are_clean(scratch: Scratch) -> None:
    """Rewritten with the same content, touched, a volatile file changed: no difference."""
    conf = scratch.root / "etc" / "app.conf"
    conf.write_text(conf.read_text())
    os.utime(conf, (1, 1))
    (scratch.root / "etc" / "volatile" / "state").write_text("2\n")
    done = scratch.check()
    assert done.returncode == 0, done.stdout


@pytest.mark.control("HARD-05")
@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("content", CHANGED),
        ("mode", CHANGED),
        ("owner", CHANGED),
        ("added", ADDED),
        ("removed", REMOVED),
    ],
)
def test_a_change_is_reported_with_its_path(scratch: Scratch, change: str, status: int) -> None:
    """Each kind of change sets AIDE's status bit and names the file."""
    tool = scratch.root / "bin" / "tool"
    target = {"added": scratch.root / "bin" / "dropper"}.get(change, tool)
    if change == "content":
        # Same size: only the content's hash can tell.
        tool.write_text("#!/bin/ex\n")
    elif change == "mode":
        tool.chmod(0o4755)
    elif change == "owner":
        os.chown(tool, 65534, 65534)
    elif change == "added":
        target.write_text("#!/bin/sh\n")
    else:
        tool.unlink()
    done = scratch.check()
    assert done.returncode == status, done.stdout
    assert str(target) in done.stdout


@pytest.mark.control("HARD-05")
def test_two_scans_of_the_same_files_give_the_same_database(scratch: Scratch) -> None:
    """No time stamp in the database: a converge can keep the reference when nothing changed."""
    first = (scratch.db / "aide.db").read_bytes()
    done = scratch.aide("--init")
    assert done.returncode == 0, done.stderr
    assert (scratch.db / "aide.db.new").read_bytes() == first

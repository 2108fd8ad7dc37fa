"""The common role's mount step, run for real in a throw-away mount namespace of this machine.

The script the role installs and runs at boot and converge (templates/tierwall-tmp-mounts.sh.j2)
is rendered with the role's own variables, with the three shared temporary directories moved
under a scratch directory and an fstab of the role's entries bound over /etc/fstab, all inside
`unshare --mount --propagation private`: nothing of it reaches this machine's mounts. It must
mount what is missing, remount what lacks an option (a bind mount as a bind mount), and then
report nothing: a second converge changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tierwall.paths import REPO

ROLE = REPO / "ansible" / "roles" / "common"
sys.path.insert(0, str(REPO / "tests" / "unit"))
from role_render import variables  # noqa: E402

FLAGS = {"nodev", "nosuid", "noexec"}


def _mounts(scratch: Path) -> list[dict[str, str]]:
    """The role's entries, each moved under ``scratch`` (a bind mount's source with it)."""
    moved = []
    for entry in variables("common", "db-1")["common_tmp_mounts"]:
        path = str(scratch) + entry["path"]
        src = path if entry["fstype"] == "none" else entry["src"]
        moved.append({**entry, "path": path, "src": src})
    return moved


def _script(mounts: list[dict[str, str]]) -> str:
    """The script the role installs (and runs at every boot and converge), rendered."""
    template = (ROLE / "templates" / "tierwall-tmp-mounts.sh.j2").read_text()
    templar = Templar(loader=DataLoader(), variables=variables("common", "db-1", common_tmp_mounts=mounts))
    return templar.template(trust_as_template(template))


def _in_namespace(scratch: Path, steps: str) -> subprocess.CompletedProcess[str]:
    """``steps`` (shell) in a private mount namespace, with the scratch fstab over /etc/fstab."""
    script = f"set -eu\nmount --bind {scratch}/fstab /etc/fstab\n{steps}"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    mounts = _mounts(tmp_path)
    for entry in mounts:
        Path(entry["path"]).mkdir(parents=True)
    (tmp_path / "fstab").write_text(
        "".join(f"{m['src']} {m['path']} {m['fstype']} {m['opts']} 0 0\n" for m in mounts)
    )
    (tmp_path / "role.sh").write_text(_script(mounts))
    return tmp_path


def _options(scratch: Path) -> str:
    return "".join(f'echo "{m["path"]} $(findmnt -rn -o OPTIONS -T {m["path"]} | tail -n 1)"\n'
                   for m in _mounts(scratch))


@pytest.mark.control("HARD-02")
def test_the_role_mounts_them_without_devices_setuid_or_exec_and_then_changes_nothing(scratch: Path) -> None:
    run = f"bash {scratch}/role.sh\necho ---\n{_options(scratch)}echo ---\nbash {scratch}/role.sh\n"
    done = _in_namespace(scratch, run)
    assert done.returncode == 0, done.stderr
    first, options, second = done.stdout.split("---\n")
    assert first.split("\n")[:-1] == [f"mounted {m['path']}" for m in _mounts(scratch)]
    for line in options.splitlines():
        found = line.split(" ", 1)[1]
        assert set(found.split(",")) >= FLAGS, line
    assert second == "", "a second run changed something"


@pytest.mark.control("HARD-02")
def test_an_option_removed_by_hand_is_put_back(scratch: Path) -> None:
    """Drift (a remount with exec, a mount without options) is found and undone; a bind mount is
    remounted as one, so the file system underneath keeps its own options."""
    var_tmp, tmp = (str(scratch) + p for p in ("/var/tmp", "/tmp"))
    root_before = f"findmnt -rn -o OPTIONS -T {scratch} | tail -n 1"
    run = (f"bash {scratch}/role.sh >/dev/null\nmount -o remount,bind,exec,suid,dev {var_tmp}\n"
           f"mount -o remount,exec {tmp}\n{root_before}\nbash {scratch}/role.sh\n{_options(scratch)}"
           f"{root_before}\n")  # fmt: skip
    done = _in_namespace(scratch, run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:3] == [f"remounted {tmp}", f"remounted {var_tmp}"]
    for line in lines[3:6]:
        assert set(line.split(" ", 1)[1].split(",")) >= FLAGS, line
    assert lines[0] == lines[-1], "the file system under the bind mount changed its options"

"""Converging is idempotent: a second run of site.yml changes nothing on any host.

A run that always changes something hides drift (nobody reads its output any more) and cannot
prove the hosts are in the declared state. `make test` converges once before the suites; this
test converges again and reads the recap.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tierwall.lab.inventory import INVENTORY
from tierwall.paths import ANSIBLE_DIR

pytestmark = pytest.mark.lab
_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.M,
)


def converge() -> tuple[dict[str, dict[str, int]], str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    # The one beside this interpreter: the locked virtualenv's, whatever PATH says.
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(ansible_playbook), "-i", str(INVENTORY), str(ANSIBLE_DIR / "playbooks" / "site.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    recap = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in _RECAP.finditer(result.stdout)
    }
    return recap, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.control("IAC-01")
def test_second_converge_changes_nothing(lab) -> None:
    recap, output = converge()
    assert set(recap) == set(lab.hosts), f"not every host was converged:\n{output}"
    failed = {h: r for h, r in recap.items() if r["failed"] or r["unreachable"]}
    assert not failed, f"converge failed on {failed}:\n{output}"
    changed = {h: r["changed"] for h, r in recap.items() if r["changed"]}
    assert not changed, (
        f"a second converge changed something (drift or a non-idempotent task): {changed}\n{output}"
    )

"""Run a playbook against this machine (ansible_connection=local) the way the lab runs site.yml.

The integration tests converge roles on localhost dozens of times. They run ansible-playbook with
the project's own ansible/ansible.cfg, hence through Mitogen (ansible/plugins/strategy): one
Python interpreter for the whole run that keeps Ansible's module utilities imported. Without the
configuration, Ansible's own strategy starts a new interpreter per task that unpacks the module
and compiles ansible-core's module utilities from a zip again (no bytecode is ever cached for
them): a no-op converge of the pki role cost ~18 CPU-seconds that way instead of ~8. The tests
also exercise the execution path the lab and production use (become handling differs under
Mitogen). ``TIERWALL_MITOGEN=0`` in the environment still runs Ansible's own strategy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tierwall.paths import ANSIBLE_DIR

PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"


def ansible_env(work: Path) -> dict[str, str]:
    """The environment of a run: the project's configuration, a temporary directory under ``work``."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        # The configuration names roles relative to itself; said again so an exported
        # ANSIBLE_ROLES_PATH cannot point a test at another checkout's roles.
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }


def converge(work: Path, host: str, *argv: str | Path) -> tuple[int, str]:
    """Run ``ansible-playbook argv`` (inventory, playbook, options); it must succeed.

    Returns the ``changed`` count of ``host`` in the recap, and the run's output.
    """
    result = subprocess.run(
        [str(PLAYBOOK_BIN), *map(str, argv)],
        capture_output=True,
        text=True,
        env=ansible_env(work),
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = re.search(rf"^{re.escape(host)}\s*:.*changed=(\d+)", output, re.M)
    assert recap, output
    return int(recap.group(1)), output

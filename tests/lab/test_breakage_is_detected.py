"""The verification can fail: a promise broken on purpose shows up as a failing control.

A suite that stays green whatever happens proves nothing. Here a hole is punched in the db's
firewall (an accept rule for the proxy to PostgreSQL, which the flow matrix does not declare),
the firewall check and the audit are run as an operator would run them, and both must fail and
name the control. The firewall is restored from its managed file afterwards, whatever happens.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tierwall.lab.inventory import INVENTORY
from tierwall.paths import REPO
from tierwall.topology import BACKEND, DB, FRONTEND, PROXY

# Opens a hole in the db's firewall while it runs: never beside other live tests.
pytestmark = [pytest.mark.lab, pytest.mark.disruptive]


@pytest.mark.control("FW-01")
def test_an_undeclared_accept_rule_fails_the_firewall_control(lab, tmp_path: Path) -> None:
    (db,) = lab.names(DB)
    proxy = lab.topology.hosts_in(PROXY)[0]
    db_address = lab.topology.host(db).address(BACKEND)
    hole = (
        f"sudo nft insert rule inet tierwall input ip saddr {proxy.address(FRONTEND)} "
        f"ip daddr {db_address} tcp dport {lab.topology.ports.postgres} accept comment deliberate-hole"
    )
    punched = lab.ssh(db, hole)
    assert punched.returncode == 0, punched.stderr
    try:
        junit = tmp_path / "broken.xml"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(REPO / "tests" / "testinfra" / "test_base.py"),
             "-k", f"test_firewall_is_default_deny_and_accepts_exactly_the_matrix and {db}",
             f"--ansible-inventory={INVENTORY}", f"--junit-xml={junit}"],
            capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
        )  # fmt: skip
        assert run.returncode == 1, f"the firewall check did not fail:\n{run.stdout[-3000:]}"
        assert "deliberate-hole" in run.stdout or "5432" in run.stdout, run.stdout[-3000:]
        audit = subprocess.run(
            [sys.executable, "-m", "tierwall.cli", "audit", "--partial", "--junit", str(junit),
             "-o", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert audit.returncode == 1, audit.stdout
        assert "1 failed" in audit.stdout, audit.stdout
        assert "FW-01" in audit.stdout, audit.stdout
        report = (tmp_path / "report" / "report.md").read_text()
        assert "| FW-01 |" in report
        assert "| failed |" in report.split("| FW-01 |", 1)[1].split("\n", 1)[0]
    finally:
        restored = lab.ssh(db, "sudo nft -f /etc/nftables.conf")
        assert restored.returncode == 0, restored.stderr
    listing = lab.ssh(db, "sudo nft list ruleset")
    assert "deliberate-hole" not in listing.stdout

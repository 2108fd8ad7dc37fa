"""The firewall role, run for real by ansible-playbook, inside a throw-away network namespace.

What the template test cannot show: that the role finds the interfaces from real facts (here
deliberately named like Hetzner's, ens10/enp8s0), that the first converge loads the ruleset
(conntrack primer, validate, handler) and a second converge changes nothing, and that a
reappearing Debian `inet filter` table is noticed and removed. `unshare --net --mount` gives
the run its own network stack and sysfs, so nothing on this machine changes; the package and
service steps are skipped (no apt, no systemd needed) and the ruleset is written under tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import playbook_run
import pytest
import yaml

from tierwall.inventory import Access, build_inventory
from tierwall.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = REPO / ".venv" / "bin" / "ansible-playbook"
sys.path.insert(0, str(REPO / "tests" / "testinfra"))
import nft_ruleset  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft") or not PLAYBOOK_BIN.exists(),
    reason="needs root, unshare, nft and .venv/bin/ansible-playbook (a private network namespace per run)",
)

SCRIPT = r"""
set -e
ip link add ens10 type veth peer name peer0
ip link add enp8s0 type veth peer name peer1
ip addr add 10.10.1.20/24 dev ens10
ip addr add 10.10.2.20/24 dev enp8s0
mount --make-rprivate /
mount -t sysfs sysfs /sys
for i in lo ens10 enp8s0 peer0 peer1; do ip link set "$i" up; done
converge() {
  "$PLAYBOOK" -i "$WORK/inventory.yml" "$WORK/play.yml" --skip-tags firewall_packages,firewall_service \
    > "$WORK/run$1.log" 2>&1 || { cat "$WORK/run$1.log"; exit 1; }
}
converge 1
converge 2
printf 'table inet filter {\n chain input { type filter hook input priority filter; policy accept; }\n}\n' \
  | nft -f -
converge 3
nft -j list ruleset > "$WORK/ruleset.json"
"""


def _recap(log: str) -> dict[str, int]:
    line = next(line for line in log.splitlines() if line.startswith("app-1 ") and "ok=" in line)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_role_converges_idempotently_and_repairs_drift(tmp_path: Path) -> None:
    """The first converge loads the matrix, the second changes nothing, a reappearing default table goes."""
    topology = build_topology(app_count=1)
    inventory = build_inventory(
        topology,
        Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",), domain="x.test",
               target="lab"),
    )
    inventory["all"]["vars"].update(ansible_become=False, ansible_python_interpreter=sys.executable)
    app = inventory["all"]["children"]["app"]["hosts"]["app-1"]
    app["ansible_connection"] = "local"
    app.pop("ansible_ssh_common_args")
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    role = {"role": "firewall", "vars": {"firewall_config_path": str(tmp_path / "nftables.conf")}}
    play = [{"hosts": "app-1", "roles": [role]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {
        **playbook_run.ansible_env(tmp_path),
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "PLAYBOOK": str(PLAYBOOK_BIN),
        "WORK": str(tmp_path),
    }
    done = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    first, second, third = (_recap((tmp_path / f"run{i}.log").read_text()) for i in (1, 2, 3))
    assert first["failed"] == 0
    assert first["changed"] > 0
    assert second["changed"] == 0, (tmp_path / "run2.log").read_text()
    assert third["changed"] > 0, "a reappearing inet filter table went unnoticed"

    ruleset = json.loads((tmp_path / "ruleset.json").read_text())
    tables = [(t["table"]["family"], t["table"]["name"]) for t in ruleset["nftables"] if "table" in t]
    assert tables == [("inet", "tierwall")]
    plain = topology.as_dict()
    reading = nft_ruleset.read_flows(
        ruleset, plain, "app", plain["hosts"]["app-1"]["addresses"],
        {"frontend": "ens10", "backend": "enp8s0"},
    )
    assert reading.policies == {"input": "drop", "forward": "drop", "output": "drop"}
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(plain, "app")

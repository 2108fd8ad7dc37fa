"""The jump hosts forward SSH to the next hop and to nothing else, as the operator's own client sees it.

The proxy relays `ssh -W` to the app servers' sshd, the app to the db's; any other destination,
even one the host firewall lets the jump host reach (the app's port 8443 from the proxy,
PostgreSQL's 5432 from the app), is refused by sshd itself (PermitOpen). Each attempt is an
`ssh -W` from this machine with the inventory's own options (in the lab its containment gate),
as the operator, so the checks read what sshd enforces, not what its configuration says.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from jump_chain import next_hops

from tierwall.lab.inventory import ssh_argv

TIER_GROUP = ("proxy", "app")
# The port of the next tier that the firewall opens to this tier besides SSH: a forward to it would
# pass the firewall, so only sshd's PermitOpen stands in the way.
OTHER_PORT = {"proxy": "app", "app": "postgres"}


def _forward(inventory: Any, host_name: str, target: str) -> subprocess.CompletedProcess[bytes]:
    """`ssh -W target` through ``host_name``; sends an SSH client banner and reads what comes back."""
    hostvars = inventory.hostvars(host_name)
    argv = ssh_argv(hostvars, inventory.all_vars, extra=["-o", "BatchMode=yes", "-W", target])
    return subprocess.run(argv, input=b"SSH-2.0-tierwall-forward-probe\r\n", capture_output=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.mark.control("AC-03")
def test_the_jump_host_forwards_to_the_next_hops_sshd(inventory: Any, host_name: str) -> None:
    """Each next hop of the chain answers through this host with its SSH banner."""
    hostvars = inventory.hostvars(host_name)
    hops = next_hops(hostvars["tierwall_topology"], hostvars["tierwall_tier"])
    assert hops
    for hop in hops:
        done = _forward(inventory, host_name, hop)
        assert done.stdout.startswith(b"SSH-2.0-"), f"{hop}: {done.stderr.decode(errors='replace')}"


@pytest.mark.control("AC-03")
def test_the_jump_host_refuses_a_forward_anywhere_else(inventory: Any, host_name: str) -> None:
    """A forward to the next hop's other open port is refused by sshd (administratively prohibited)."""
    hostvars = inventory.hostvars(host_name)
    topology = hostvars["tierwall_topology"]
    tier = hostvars["tierwall_tier"]
    port = topology["ports"][OTHER_PORT[tier]]
    hop = next_hops(topology, tier)[0]
    target = f"{hop.rsplit(':', 1)[0]}:{port}"
    done = _forward(inventory, host_name, target)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, f"{target} was forwarded through {host_name}"
    assert "administratively prohibited" in stderr, stderr

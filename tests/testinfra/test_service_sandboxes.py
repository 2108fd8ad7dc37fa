"""Every network-facing service from Debian runs in a systemd sandbox (control HARD-04).

On the hosts as they are: each service runs, and systemd's own score of its sandbox (``systemd-
analyze security``, 0 = fully confined, 10 = not at all) is at most the bar its role sets
(``<role>_sandbox_max_exposure``), a bar that may itself be no higher than the control's ceiling.
Debian ships nginx, squid, HAProxy, apt-cacher-ng and PostgreSQL unconfined (9.2 to 9.8); chrony
comes with its own sandbox. sshd is not here: it must start login sessions as any user. The
application's own unit is HARD-01's (test_application.py).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import pytest
import yaml
from probes import exposure

from tierwall.paths import ANSIBLE_DIR

TIER_GROUP = "all"
CEILING = 5.0  # the control's: no network-facing service above it (audit/controls.yaml, HARD-04)
DEBIAN_CHRONY = 4.0  # chrony's own sandbox from Debian, which no role loosens (3.5 on Debian 13)

# tier -> (the role that runs it, its unit); "postgresql@" is the db's cluster, whatever its major.
SERVICES = {
    "proxy": [("nginx", "nginx.service"), ("egress_proxy", "squid.service"),
              ("backup_relay", "haproxy.service")],
    "app": [("apt_proxy", "apt-cacher-ng.service"), ("backup_relay", "haproxy.service")],
    "db": [("postgresql", "postgresql@")],
    "mgmt": [],
}  # fmt: skip

pytestmark = [pytest.mark.control("HARD-04")]


@cache
def role_bar(role: str) -> float:
    defaults = yaml.safe_load((ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml").read_text())
    return float(defaults[f"{role}_sandbox_max_exposure"])


def _unit(host: Any, unit: str) -> str:
    """The unit's full name: the db's cluster unit is found among the running ones."""
    if not unit.endswith("@"):
        return unit
    done = host.run("systemctl list-units --no-legend --plain --state=running %s*.service", unit)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    assert len(names) == 1, f"expected one running {unit}*.service, found {names}"
    return names[0]


def test_every_bar_is_within_the_control_s_ceiling() -> None:
    bars = {role: role_bar(role) for services in SERVICES.values() for role, _ in services}
    assert all(0.0 < bar <= CEILING for bar in bars.values()), bars


def test_each_network_facing_service_runs_in_its_sandbox(host: Any, hostvars: dict[str, Any]) -> None:
    found = {}
    for role, unit in SERVICES[hostvars["tierwall_tier"]]:
        name = _unit(host, unit)
        assert host.service(name).is_running, f"{name} does not run"
        found[name] = (exposure(host, name), role_bar(role))
    over = {name: score for name, score in found.items() if score[0] > score[1]}
    assert not over, f"exposure above the role's bar (exposure, bar): {over}"


def test_chrony_keeps_debian_s_sandbox(host: Any) -> None:
    assert host.service("chrony.service").is_running
    assert exposure(host, "chrony.service") <= DEBIAN_CHRONY


# tier -> (unit, the user its workers run as); their master signals them across users.
RELOADED = {"proxy": [("nginx.service", "www-data"), ("haproxy.service", "haproxy")],
            "app": [("haproxy.service", "haproxy")], "db": [], "mgmt": []}


def _workers(host: Any, user: str, unit: str) -> set[str]:
    """The master's children that run as ``user``: its workers."""
    master = host.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
    children = host.run("ps -o pid=,user= --ppid %s", master).stdout.splitlines()
    return {line.split()[0] for line in children if line.split()[1:] == [user]}


@pytest.mark.disruptive
def test_a_reload_leaves_no_worker_of_the_old_configuration(host: Any, hostvars: dict[str, Any]) -> None:
    """The sandbox keeps what a master needs to stop its old workers after a reload (they run as
    another user): otherwise they go on serving the old configuration beside the new ones."""
    for unit, user in RELOADED[hostvars["tierwall_tier"]]:
        before = _workers(host, user, unit)
        assert before, f"{unit} has no worker running as {user}"
        assert host.run("systemctl reload %s", unit).rc == 0
        deadline = time.monotonic() + 20
        while (left := before & _workers(host, user, unit)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"{unit}: workers from before the reload still run: {sorted(left)}"

"""What every host sends to the audit trail's archive, read from the host and the archive (AUD-02).

An operator's sudo on the host is in the archive within 30 seconds, filed under the host's name and
naming the operator (the db's through an app server's relay); an address the host logs arrives
with its network part only; the host's trail connection goes to its target and nowhere else, and
only the archive and the app's relay listen for trails. (test_audit_archive.py: the archive.)
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from archive_trail import ARCHIVE, ROOT_ONLY, archive_host, wait_for
from conftest import Inventory

TIER_GROUP = "all"
# Where each tier's trail goes: (the tier of the target, the network it is reached on).
TARGET = {"proxy": ("mgmt", "frontend"), "app": ("mgmt", "frontend"), "db": ("app", "backend")}
# Who listens for trails, on which network: the archive, and the app's relay for the db.
LISTENS = {"mgmt": "frontend", "app": "backend"}


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_an_operators_sudo_is_archived_under_this_host_naming_the_operator(
    host: Any, host_name: str, hostvars: dict[str, Any], inventory: Inventory
) -> None:
    """The operator runs a command through sudo here; within 30 s the archive has the line under
    this host's name, with the operator's account."""
    marker, person = f"tierwall-archive-{uuid.uuid4().hex}", hostvars.get("ansible_user", "ops")
    done = host.run("runuser -u %s -- sudo -n /usr/bin/true %s", person, marker)
    assert done.rc == 0, done.stderr
    line = rf" {host_name} sudo(\[[^]]*\])?: +{person} : .*COMMAND=/usr/bin/true {marker}$"
    wait_for(archive_host(inventory), marker, host_name, line)


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_an_address_this_host_logs_reaches_the_archive_cut_to_its_network(
    host: Any, host_name: str, hostvars: dict[str, Any], inventory: Inventory
) -> None:
    """A line naming this host's own address (as sshd's logins through the jump chain,
    PostgreSQL's connections and the firewall's drops do) arrives with the network part only, and
    nothing this host sent holds one of the platform's addresses whole."""
    marker = f"tierwall-minimisation-{uuid.uuid4().hex}"
    address = next(iter(hostvars["tierwall_addresses"].values()))
    logged = host.run("logger -t tierwall-minimisation %s from %s", marker, address)
    assert logged.rc == 0, logged.stderr
    archive = archive_host(inventory)
    (line,) = wait_for(archive, marker, host_name, rf" tierwall-minimisation(\[[^]]*\])?: {marker} from ")
    network_part = address.rsplit(".", 1)[0] + ".0"
    assert line.endswith(f" from {network_part}"), f"the address left the host whole: {line}"
    # What this host sent since its rsyslog took its present configuration (written at, the third
    # field, from then on; the archive keeps what an earlier one sent), without the archive's own
    # record of the peer that delivered it (a server's address, the relay's for the db's entries).
    since = _started(host, "rsyslog.service")
    sent = ("grep -rhwF -- {0} {1}/{2}/ | awk -v since={3} '$3 >= since'"
            " | sed -E 's/^([^ ]+) peer=[^ ]+ /\\1 /' | grep -wF -- {0}")
    hits = []
    for whole in sorted(_platform_addresses(inventory)):
        found = archive.run(sent.format(whole, ARCHIVE, host_name, since))
        if found.stdout.strip():
            hits.append(f"{whole}: {found.stdout.splitlines()[:3]}")
    assert not hits, hits


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_this_hosts_trail_goes_to_its_target_and_only_the_archive_and_relay_listen(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """The trail connections this host opens go to its target only (the db's to an app server's
    backend address: the db opens it, nothing connects to the db); it listens for trails only if
    it is the archive (frontend) or an app server's relay (backend)."""
    tier, port = hostvars["tierwall_tier"], topology["ports"]["log_archive"]
    listening = host.run("ss -Hltn sport = :%s", str(port)).stdout.split()
    local = {column for column in listening if column.endswith(f":{port}")}
    expected = {f"{hostvars['tierwall_addresses'][LISTENS[tier]]}:{port}"} if tier in LISTENS else set()
    assert local == expected, listening
    if tier not in TARGET:
        return
    target_tier, network = TARGET[tier]
    targets = {h["addresses"][network] for h in topology["hosts"].values() if h["tier"] == target_tier}
    peers = host.run("ss -Htn state established dport = :%s", str(port)).stdout
    remote = {line.split()[-1].rsplit(":", 1)[0] for line in peers.splitlines() if line.strip()}
    assert remote, "no trail connection is open"
    assert remote <= targets, f"the trail connection goes to {remote}, not {targets}"


def _started(host: Any, unit: str) -> str:
    """When ``unit`` last started, as the archive writes times (UTC, RFC 3339, to the second)."""
    shown = host.run("systemctl show -p ActiveEnterTimestamp --value %s", unit).stdout.strip()
    started = datetime.datetime.strptime(shown, "%a %Y-%m-%d %H:%M:%S %Z")
    assert shown.endswith(" UTC"), f"{unit} started at {shown}: the hosts keep UTC"
    return started.strftime("%Y-%m-%dT%H:%M:%S")


def _platform_addresses(inventory: Inventory) -> set[str]:
    topology = inventory.all_vars["tierwall_topology"]
    found = {a for h in topology["hosts"].values() for a in h["addresses"].values()}
    for name in inventory.hosts_of("proxy"):
        found.add(inventory.hostvars(name).get("tierwall_public_address", ""))
    return found - {""}

"""The off-host audit trail, read from the running hosts and their archive (AUD-02, AUD-03).

An operator's sudo on every host is in the archive within 30 seconds, filed under that host and
naming the operator; the db's arrives through the app's relay. The archive takes senders with a
certificate of the internal CA only; no host sends a full address; while the archive is away the
entries wait and then arrive in order. The archive seals its files into a hash chain that a changed
file or chain line fails, and keeps the trail at least a year.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from conftest import Inventory, connect

TIER_GROUP = "mgmt"

ARCHIVE = "/var/log/tierwall-archive"
PROGRAM = "/usr/local/sbin/tierwall-archive"
DELIVERY_SECONDS = 30
ROOT_ONLY = "reads the root-only archive and runs commands through sudo on every host"


def _archived(archive: Any, marker: str, directory: str = "*") -> str:
    found = archive.run("grep -rhF -- %s %s/%s/", marker, ARCHIVE, directory)
    return found.stdout


def _wait_for(archive: Any, marker: str, directory: str, pattern: str, count: int = 1) -> list[str]:
    """The archive's lines under ``directory`` that match ``pattern``, once there are ``count``.
    (The suite's own commands reach the hosts through sudo too: their lines carry the marker as
    well, and only the pattern tells the entry under test from them.)"""
    deadline = time.monotonic() + DELIVERY_SECONDS
    lines: list[str] = []
    while time.monotonic() < deadline:
        found = _archived(archive, marker, directory).splitlines()
        lines = [line for line in found if re.search(pattern, line)]
        if len(lines) >= count:
            return lines
        time.sleep(1)
    raise AssertionError(
        f"{pattern!r} not in {ARCHIVE}/{directory}/ {count} times within {DELIVERY_SECONDS} s: {lines!r}"
    )


def _first_deliveries(lines: list[str]) -> list[str]:
    """The entries' numbers in the order they first arrived. RELP delivers at least once: after a
    broken session the entry in flight may come again, later; a repeat must be that same entry
    (the same host, program and time written at the source), never a different one."""
    first: dict[str, str] = {}
    for line in lines:
        number, written = line.rsplit("-", 1)[-1], line.split(" ", 2)[2]
        assert first.setdefault(number, written) == written, f"{number} arrived twice, differently: {lines}"
    return list(first)


def _tier_addresses(inventory: Inventory) -> set[str]:
    topology = inventory.all_vars["tierwall_topology"]
    found = {a for h in topology["hosts"].values() for a in h["addresses"].values()}
    for name in inventory.hosts_of("proxy"):
        found.add(inventory.hostvars(name).get("tierwall_public_address", ""))
    return found - {""}


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_an_operators_sudo_on_every_host_is_archived_under_that_host_naming_the_operator(
    host: Any, inventory: Inventory
) -> None:
    """On every host the operator runs a command through sudo; within 30 s the archive has the
    line under that host's name, with the operator's account (the db's came through the relay)."""
    marker = f"tierwall-archive-{uuid.uuid4().hex}"
    names = inventory.hosts_of("all")
    for name in names:
        other = connect(inventory, name)
        person = inventory.hostvars(name).get("ansible_user", "ops")
        done = other.run("runuser -u %s -- sudo -n /usr/bin/true %s %s", person, marker, name)
        assert done.rc == 0, f"{name}: {done.stderr}"
    for name in names:
        person = inventory.hostvars(name).get("ansible_user", "ops")
        line = rf" {name} sudo(\[[^]]*\])?: +{person} : .*COMMAND=/usr/bin/true {marker} {name}$"
        _wait_for(host, marker, name, line)


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_db_opens_its_trails_connection_to_the_app_and_nothing_else(inventory: Inventory) -> None:
    """The db's shipping goes to an app server's relay, which listens on its backend address
    only; the archive listens on the management host's frontend address only."""
    topology = inventory.all_vars["tierwall_topology"]
    port = topology["ports"]["log_archive"]
    for tier, network in (("app", "backend"), ("mgmt", "frontend")):
        for name in inventory.hosts_of(tier):
            listening = connect(inventory, name).run("ss -Hltn sport = :%s", str(port)).stdout.split()
            local = {column for column in listening if column.endswith(f":{port}")}
            assert local == {f"{topology['hosts'][name]['addresses'][network]}:{port}"}, (name, listening)
    db = inventory.first("db")
    peers = connect(inventory, db).run("ss -Htn state established dport = :%s", str(port)).stdout
    apps = {topology["hosts"][n]["addresses"]["backend"] for n in inventory.hosts_of("app")}
    remote = {line.split()[-1].rsplit(":", 1)[0] for line in peers.splitlines() if line.strip()}
    assert remote, "the db has no trail connection open"
    assert remote <= apps, f"the db's trail connection goes to {remote}, not an app ({apps})"


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_archive_refuses_a_sender_without_a_certificate(
    host: Any, host_name: str, inventory: Inventory
) -> None:
    """From the proxy, a TLS client that shows no certificate is refused by the archive; the
    proxy's own certificate is accepted (so the refusal is the missing certificate's)."""
    topology = inventory.all_vars["tierwall_topology"]
    proxy_name = inventory.first("proxy")
    proxy = connect(inventory, proxy_name)
    target = f"{topology['hosts'][host_name]['addresses']['frontend']}:{topology['ports']['log_archive']}"
    base = f"openssl s_client -connect {target} -CAfile /etc/ssl/tierwall/ca.crt -verify_return_error -brief"
    anonymous = proxy.run(f"printf 'x\\n' | timeout 10 {base} -ign_eof 2>&1")
    assert re.search(r"alert (certificate required|handshake failure)", anonymous.stdout), anonymous.stdout
    cert = f"-cert /etc/ssl/tierwall/{proxy_name}.crt -key /etc/ssl/tierwall/private/{proxy_name}.key"
    shown = proxy.run(f"timeout 10 {base} {cert} </dev/null 2>&1")
    assert "CONNECTION ESTABLISHED" in shown.stdout, shown.stdout
    assert "alert" not in shown.stdout, shown.stdout


@pytest.mark.control("AUD-02")
@pytest.mark.verify_never(ROOT_ONLY)
def test_no_full_address_of_the_platform_reaches_the_archive(host: Any, inventory: Inventory) -> None:
    """Every host logs a line naming its own address (as sshd's logins through the jump chain,
    PostgreSQL's connections and the firewall's drops do): it arrives with the network part only,
    and the archive holds none of the platform's addresses whole."""
    marker = f"tierwall-minimisation-{uuid.uuid4().hex}"
    topology = inventory.all_vars["tierwall_topology"]
    for name in inventory.hosts_of("all"):
        address = next(iter(topology["hosts"][name]["addresses"].values()))
        logged = connect(inventory, name).run("logger -t tierwall-minimisation %s from %s", marker, address)
        assert logged.rc == 0, logged.stderr
    for name in inventory.hosts_of("all"):
        address = next(iter(topology["hosts"][name]["addresses"].values()))
        network_part = re.escape(address.rsplit(".", 1)[0] + ".0")
        line = _wait_for(host, marker, name, rf" tierwall-minimisation(\[[^]]*\])?: {marker} from ")[0]
        assert re.search(rf" from {network_part}$", line), f"{name}'s address left the host whole: {line}"
    # Every line but the archive's own record of the peer that delivered it (a server's address,
    # the relay's for the db's entries): what the hosts sent.
    sent = "grep -rhwF -- {0} {1} | sed -E 's/^([^ ]+) peer=[^ ]+ /\\1 /' | grep -wF -- {0}"
    hits = []
    for address in sorted(_tier_addresses(inventory)):
        found = host.run(sent.format(address, ARCHIVE))
        if found.stdout.strip():
            hits.append(f"{address}: {found.stdout.splitlines()[:3]}")
    assert not hits, hits


@pytest.mark.control("AUD-02")
@pytest.mark.disruptive
@pytest.mark.verify_never(ROOT_ONLY)
def test_entries_wait_while_the_archive_is_away_and_arrive_in_order(host: Any, inventory: Inventory) -> None:
    """The archive stops; the proxy and the db log numbered entries meanwhile; none arrives until
    the archive runs again, then all do, in the order they were written (an entry in flight when
    the session broke may come twice: RELP delivers at least once)."""
    marker, count = f"tierwall-outage-{uuid.uuid4().hex}", 20
    senders = [inventory.first("proxy"), inventory.first("db")]
    assert host.run("systemctl stop rsyslog.service").rc == 0
    try:
        for name in senders:
            other = connect(inventory, name)
            for number in range(count):
                assert other.run("logger -t tierwall-outage %s-%s", marker, f"{number:03d}").rc == 0
        time.sleep(3)
        early = [line for line in _archived(host, marker).splitlines() if " tierwall-outage" in line]
        assert not early, f"entries arrived while the archive was stopped: {early}"
    finally:
        assert host.run("systemctl start rsyslog.service").rc == 0
    for name in senders:
        lines = _wait_for(host, marker, name, rf" tierwall-outage(\[[^]]*\])?: {marker}-\d{{3}}$", count)
        assert _first_deliveries(lines) == [f"{n:03d}" for n in range(count)], (name, lines)


@pytest.mark.control("AUD-03")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_archive_verifies_against_its_chain_every_hour(host: Any) -> None:
    """The hourly unit seals and verifies the real archive, and it passes on a converged lab."""
    timer = host.run("systemctl is-active tierwall-archive-seal.timer")
    assert timer.stdout.strip() == "active", timer.stdout
    done = host.run("systemctl start tierwall-archive-seal.service")
    assert done.rc == 0, host.run("journalctl -q -o cat -n 20 -u tierwall-archive-seal.service").stdout


@pytest.mark.control("AUD-03")
@pytest.mark.verify_never(ROOT_ONLY)
def test_a_changed_sealed_file_or_chain_line_fails_verification(host: Any) -> None:
    """The archive's program, on the archive host, over a scratch copy of an archive with two
    past hours: sealed and verified, then one file changed, then a chain line changed."""
    scratch = host.run("mktemp -d").stdout.strip()
    chain = f"{scratch}/chain"
    try:
        for name in ("2026-01-01T00", "2026-01-01T01"):
            host.run("install -D -m 0640 /dev/null %s/db-1/%s.log", scratch, name)
            host.run("sh -c %s", f"echo 'sealed line {name}' > {scratch}/db-1/{name}.log")
        assert host.run("%s seal --root %s --chain %s", PROGRAM, scratch, chain).rc == 0
        assert host.run("%s verify --root %s --chain %s", PROGRAM, scratch, chain).rc == 0
        host.run("sh -c %s", f"echo appended >> {scratch}/db-1/2026-01-01T00.log")
        changed = host.run("%s verify --root %s --chain %s", PROGRAM, scratch, chain)
        assert changed.rc == 1, changed.stdout
        assert "db-1/2026-01-01T00.log differs from its seal" in changed.stdout
        host.run("sh -c %s", f"echo 'sealed line 2026-01-01T00' > {scratch}/db-1/2026-01-01T00.log")
        assert host.run("%s verify --root %s --chain %s", PROGRAM, scratch, chain).rc == 0
        host.run("sed -i '1s/ [0-9]* / 1 /' %s", chain)
        rewritten = host.run("%s verify --root %s --chain %s", PROGRAM, scratch, chain)
        assert rewritten.rc == 1, rewritten.stdout
        assert "does not link" in rewritten.stdout, rewritten.stdout
    finally:
        host.run("rm -rf %s", scratch)


@pytest.mark.control("AUD-03")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_trail_is_kept_a_year_and_older_hours_are_removed_by_the_real_expiry(host: Any) -> None:
    """The installed expiry keeps at least 365 days and the program refuses less; an hour's file
    older than that, placed in the archive, is removed by the expiry unit and its removal chained."""
    unit = host.run("systemctl cat tierwall-archive-expire.service").stdout
    days = int(re.search(r"expire --days (\d+) ", unit)[1])
    assert days >= 365, unit
    refused = host.run("%s expire --days 364 --root %s --chain %s/chain", PROGRAM, ARCHIVE, ARCHIVE)
    assert refused.rc == 2, refused.stderr
    assert "at least 365" in refused.stderr, refused.stderr
    old = f"{ARCHIVE}/unknown/2001-01-01T00.log"
    host.run("install -D -m 0640 /dev/null %s", old)
    assert host.run("systemctl start tierwall-archive-expire.service").rc == 0
    assert not host.file(old).exists
    recorded = host.run("grep -c %s %s/chain", "^removed unknown/2001-01-01T00.log ", ARCHIVE)
    assert recorded.stdout.strip() != "0", recorded.stdout

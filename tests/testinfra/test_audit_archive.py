"""The audit trail's archive on the management host, read from the running host (AUD-02, AUD-03).

It listens on its frontend address only and takes senders with a certificate of the internal CA
only; while it is away the senders' entries wait and then arrive in order. It seals its files into
a hash chain that a changed file or chain line fails, and keeps the trail at least a year.
(test_audit_trail_shipping.py: what every host sends it.)
"""

from __future__ import annotations

import datetime
import re
import secrets
import time
import uuid
from typing import Any

import pytest
from archive_trail import ARCHIVE, ROOT_ONLY, archived, wait_for
from conftest import Inventory, connect
from trail_lines import first_deliveries

TIER_GROUP = "mgmt"

PROGRAM = "/usr/local/sbin/tierwall-archive"


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
        early = [line for line in archived(host, marker).splitlines() if " tierwall-outage" in line]
        assert not early, f"entries arrived while the archive was stopped: {early}"
    finally:
        assert host.run("systemctl start rsyslog.service").rc == 0
    for name in senders:
        lines = wait_for(host, marker, name, rf" tierwall-outage(\[[^]]*\])?: {marker}-\d{{3}}$", count)
        assert first_deliveries(lines) == [f"{n:03d}" for n in range(count)], (name, lines)


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
    # An hour of its own each run: the archive would rightly report a removed hour that comes back.
    start = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    hour = start + datetime.timedelta(hours=secrets.randbelow(10**5))
    relative = f"unknown/{hour:%Y-%m-%dT%H}.log"
    host.run("install -D -m 0640 /dev/null %s/%s", ARCHIVE, relative)
    assert host.run("systemctl start tierwall-archive-expire.service").rc == 0
    assert not host.file(f"{ARCHIVE}/{relative}").exists
    recorded = host.run("grep -c %s %s/chain", f"^removed {relative} ", ARCHIVE)
    assert recorded.stdout.strip() == "1", recorded.stdout

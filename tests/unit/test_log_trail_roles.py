"""The audit trail's rsyslog files as log_shipping and log_archive render them for each host of a
generated inventory (AUD-02): where each host's trail goes, that it is anonymised before it leaves,
who may send to the relay and the archive, and on which address they listen."""

from __future__ import annotations

import re

import pytest
from role_render import inventory, render

from tierwall.topology import APP, DB, MGMT, PROXY, build_topology

TOPOLOGY = build_topology(app_count=2)
PORT = TOPOLOGY.ports.log_archive
SENDERS = [h.name for h in TOPOLOGY.hosts if h.tier != MGMT]


def _ship(host: str) -> str:
    return render("log_shipping", "ship.conf.j2", host)


def _ruleset(text: str) -> str:
    match = re.search(r'ruleset\(name="tierwall_ship"\) \{(.*?)\n\}', text, re.S)
    assert match, text
    return match[1]


@pytest.mark.control("AUD-02")
@pytest.mark.parametrize("host", SENDERS)
def test_each_sender_sends_to_its_target_only_by_name_over_tls(host: str) -> None:
    """Proxies and app servers send to the management host's frontend address, the db to the
    first app server's backend address; the peer must show a certificate with that name."""
    tier = TOPOLOGY.host(host).tier
    target = TOPOLOGY.hosts_in(APP)[0] if tier == DB else TOPOLOGY.hosts_in(MGMT)[0]
    network = "backend" if tier == DB else "frontend"
    actions = re.findall(r'action\(type="omrelp".*?\)\n', _ship(host), re.S)
    assert len(actions) == 1, actions
    assert f'target="{target.address(network)}" port="{PORT}"' in actions[0]
    assert f'tls="on" tls.authMode="name" tls.permittedPeer=["{target.name}"]' in actions[0]
    assert 'queue.saveOnShutdown="on"' in actions[0]


@pytest.mark.control("AUD-02")
@pytest.mark.parametrize("host", [h.name for h in TOPOLOGY.hosts])
def test_every_entry_is_anonymised_before_it_is_sent_or_filed(host: str) -> None:
    """mmanon, cutting IPv4 to its network part, is the rule set's first action, before the
    trail is sent (or, on the archive host, filed)."""
    ruleset = _ruleset(_ship(host))
    first = re.search(r'(action\(type="(\w+)"|call_indirect)', ruleset)
    assert first, ruleset
    assert first[2] == "mmanon", ruleset
    assert 'ipv4.enable="on" ipv4.mode="zero" ipv4.bits="8"' in ruleset


def test_the_archive_host_files_its_own_trail_without_connecting_to_itself() -> None:
    ship = _ship(TOPOLOGY.hosts_in(MGMT)[0].name)
    assert 'call_indirect "tierwall_archive";' in _ruleset(ship)
    assert 'type="omrelp"' not in _ruleset(ship)


@pytest.mark.control("AUD-02")
@pytest.mark.parametrize("host", SENDERS)
def test_only_app_servers_relay_and_only_for_the_db_on_the_backend(host: str) -> None:
    inputs = re.findall(r'input\(type="imrelp".*?\)\n', _ship(host), re.S)
    found = TOPOLOGY.host(host)
    if found.tier != APP:
        assert inputs == []
        return
    (relay,) = inputs
    db_names = [h.name for h in TOPOLOGY.hosts_in(DB)]
    assert f'address="{found.address("backend")}" port="{PORT}"' in relay
    peers = re.search(r"tls.permittedPeer=(\[[^]]*\])", relay)
    assert peers, relay
    assert re.findall(r'"([^"]+)"', peers[1]) == db_names


@pytest.mark.control("AUD-02")
def test_the_archive_listens_on_its_frontend_address_for_the_proxies_and_app_servers_only() -> None:
    mgmt = TOPOLOGY.hosts_in(MGMT)[0]
    archive = render("log_archive", "archive.conf.j2", mgmt.name)
    (listener,) = re.findall(r'input\(type="imrelp".*?\)\n', archive, re.S)
    assert f'address="{mgmt.address("frontend")}" port="{PORT}"' in listener
    peers = re.search(r"tls.permittedPeer=(\[[^]]*\])", listener)
    assert peers
    expected = sorted(h.name for h in TOPOLOGY.hosts if h.tier in (PROXY, APP))
    assert sorted(re.findall(r'"([^"]+)"', peers[1])) == expected


@pytest.mark.control("AUD-03")
def test_the_archive_files_by_host_and_hour_and_an_unknown_host_apart() -> None:
    archive = render("log_archive", "archive.conf.j2", TOPOLOGY.hosts_in(MGMT)[0].name)
    assert "/var/log/tierwall-archive/%hostname%/%$year%-%$month%-%$day%T%$hour%.log" in archive
    known = re.search(r"if \$hostname == (\[[^]]*\]) then", archive)
    assert known
    names = sorted(re.findall(r'"([^"]+)"', known[1]))
    assert names == sorted(inventory(2)["all"]["vars"]["tierwall_topology"]["hosts"])

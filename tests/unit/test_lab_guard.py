"""The lab's SSH gate refuses an address the kernel would send elsewhere than the lab's bridge,
and cuts a relayed connection the moment that bridge is gone (no network: socket pairs and a
faked route lookup)."""

from __future__ import annotations

import os
import socket

import pytest

from tierwall.inventory import Access, build_inventory
from tierwall.lab import guard
from tierwall.lab.addressing import INTERNET_BRIDGE
from tierwall.topology import build_topology


def test_an_address_routed_to_the_uplink_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "route_device", lambda address: "eth0")
    monkeypatch.setattr(guard, "bridge_present", lambda: True)
    with pytest.raises(guard.Uncontained, match="routed via eth0"):
        guard.require_contained("203.0.113.10")


def test_a_missing_bridge_is_refused_even_with_a_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "route_device", lambda address: INTERNET_BRIDGE)
    monkeypatch.setattr(guard, "bridge_present", lambda: False)
    with pytest.raises(guard.Uncontained):
        guard.require_contained("203.0.113.10")


def test_main_sends_nothing_when_uncontained(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(guard, "route_device", lambda address: None)
    monkeypatch.setattr(
        guard.socket, "create_connection", lambda *a, **k: pytest.fail("a connection was attempted")
    )
    assert guard.main(["203.0.113.10", "22"]) == 255
    assert "nothing was sent" in capsys.readouterr().err


def _relay_pair():
    near, far = socket.socketpair()
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    return near, far, (read_in, write_in), (read_out, write_out)


def test_the_relay_copies_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "bridge_present", lambda: True)
    near, far, (read_in, write_in), (read_out, write_out) = _relay_pair()
    os.write(write_in, b"to the host")
    os.close(write_in)
    far.sendall(b"from the host")
    far.shutdown(socket.SHUT_WR)
    guard.relay(near, stdin=read_in, stdout=write_out)
    assert far.recv(100) == b"to the host"
    os.close(write_out)
    assert os.read(read_out, 100) == b"from the host"


def test_the_relay_cuts_the_connection_when_the_bridge_vanishes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "bridge_present", lambda: False)
    near, far, (read_in, write_in), (_, write_out) = _relay_pair()
    os.write(write_in, b"must not leave")
    with pytest.raises(guard.Uncontained):
        guard.relay(near, stdin=read_in, stdout=write_out)
    far.setblocking(False)
    with pytest.raises(BlockingIOError):
        far.recv(100)


def test_every_host_of_a_gated_inventory_connects_through_the_gate() -> None:
    """The gate opens the bastion connection of every host: directly for the proxy, as the
    innermost hop (its %-tokens doubled once per level) for app and db."""
    access = Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",),
                    domain="notes.lab.test", target="lab", connect_command="GATE %h %p")  # fmt: skip
    inventory = build_inventory(build_topology(app_count=1), access)
    hosts = [item for group in inventory["all"]["children"].values() for item in group["hosts"].items()]
    args = {name: hostvars["ansible_ssh_common_args"] for name, hostvars in hosts}
    assert "-o ProxyCommand=GATE\\ %h\\ %p" in args["proxy-1"]
    assert "-o ProxyCommand=GATE\\ %%h\\ %%p -W %h:%p ops@203.0.113.10" in args["app-1"]
    assert "-o ProxyCommand=GATE\\ %%%%h\\ %%%%p -W %%h:%%p ops@203.0.113.10" in args["db-1"]


def test_an_ungated_inventory_has_no_gate() -> None:
    access = Access(proxy_public={"proxy-1": "198.51.100.10"}, admin_cidrs=("198.51.100.0/24",),
                    domain="notes.example.org")  # fmt: skip
    inventory = build_inventory(build_topology(app_count=1), access)
    assert "ProxyCommand=" not in str(inventory["all"]["children"]["proxy"])


def test_the_human_ssh_config_keeps_the_gate_on_the_bastion_only() -> None:
    from tierwall.ssh_config import host_entries

    access = Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",),
                    domain="notes.lab.test", target="lab", connect_command="GATE %h %p")  # fmt: skip
    entries = {e.name: e for e in host_entries(build_inventory(build_topology(app_count=1), access))}
    assert entries["proxy-1"].connect_command == "GATE %h %p"
    assert entries["db-1"].jumps == ("proxy-1", "app-1")
    assert entries["db-1"].connect_command is None

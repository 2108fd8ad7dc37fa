"""The lab as built: machines booted, SSH only through the jump chain, networks segregated,
no internet route from app or db (checked with route lookups and the lab's own sentinel host:
nothing here sends a packet to a real public address)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tierwall.lab.addressing import NO_ROUTE_PROBES, SENTINEL_PORTS, VOLUME_SIZE
from tierwall.lab.inventory import INVENTORY
from tierwall.topology import APP, BACKEND, DB, FRONTEND, MGMT, PROXY

pytestmark = pytest.mark.lab

# Runs inside a namespace with this machine's python3: a TCP connect, its outcome and duration.
CONNECT = r"""
import json, socket, sys, time
t = time.monotonic(); s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); out = "connected"
except OSError as e:
    out = type(e).__name__ + ":" + str(e.errno)
print(json.dumps([out, time.monotonic() - t]))
"""


def connect(lab, host: str | None, address: str, port: int, timeout: float = 3) -> tuple[str, float]:
    argv = ["python3", "-c", CONNECT, address, str(port), str(timeout)]
    result = (
        lab.in_ns(host, argv) if host else subprocess.run(argv, capture_output=True, text=True, check=False)
    )
    return tuple(json.loads(result.stdout))


def private_addresses(lab, tiers=(APP, DB, MGMT)) -> list[tuple[str, str]]:
    return [(h.name, str(i.address)) for h in lab.topology.hosts if h.tier in tiers for i in h.interfaces]


def test_every_machine_booted_to_running(lab):
    for host in lab.hosts:
        result = lab.ssh(host, "systemctl is-system-running; systemctl --failed --plain --no-legend")
        lines = result.stdout.strip().splitlines()
        assert lines, f"{host}: {result.stderr}"
        assert lines[0] == "running", f"{host}: {result.stdout}"


def test_every_machine_has_its_hostname_and_own_host_keys(lab):
    keys = {}
    for host in lab.hosts:
        result = lab.ssh(host, "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub; cat /etc/machine-id")
        name, key, machine_id = result.stdout.split("\n")[:3]
        assert name == host
        keys[host] = (key.split()[1], machine_id)
    assert len({k for k, _ in keys.values()}) == len(keys), "two machines share an SSH host key"
    assert len({m for _, m in keys.values()}) == len(keys), "two machines share a machine-id"


@pytest.mark.control("AC-03")
def test_ansible_reaches_every_host_through_the_jump_chain(lab):
    ansible = Path(sys.executable).with_name("ansible")
    result = subprocess.run(
        [str(ansible), "all", "-i", str(INVENTORY), "-m", "ping"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for host in lab.hosts:
        assert f"{host} | SUCCESS" in result.stdout, result.stdout


@pytest.mark.control("AC-03")
def test_db_is_reached_over_two_hops(lab):
    (db,) = lab.names(DB)
    args = lab.hosts[db]["ansible_ssh_common_args"]
    # Two ssh hops (proxy, then app), the innermost opened through the lab's containment gate.
    assert args.count("ProxyCommand=\"ssh ") + args.count("ProxyCommand='ssh ") == 2, args
    assert args.count("tierwall.lab.guard") == 1, args
    assert lab.ssh(db, "hostname").stdout.strip() == db


@pytest.mark.control("AC-03")
@pytest.mark.control("NET-05")
def test_operator_has_no_route_to_app_or_db(lab):
    gateway = subprocess.run(
        ["ip", "-j", "route", "show", "default"], capture_output=True, text=True, check=True
    ).stdout
    uplink_gw = json.loads(gateway)[0].get("gateway", "") if json.loads(gateway) else ""
    for host, address in private_addresses(lab):
        lookup = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, check=False)
        assert lookup.returncode != 0, f"{host} {address} is routable from the operator: {lookup.stdout}"
        assert "No route to host" in lookup.stderr or "unreachable" in lookup.stderr, lookup.stderr
        assert not uplink_gw or uplink_gw not in lookup.stdout
        outcome, seconds = connect(lab, None, address, lab.topology.ports.ssh)
        assert outcome.startswith("OSError:113") or "113" in outcome, f"{host} {address}: {outcome}"
        assert seconds < 1, f"{host} {address}: the attempt took {seconds:.1f} s instead of failing at once"


@pytest.mark.control("AC-03")
def test_direct_ssh_to_app_or_db_fails(lab):
    for host, address in private_addresses(lab):
        started = time.monotonic()
        result = subprocess.run(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-i",
                lab.vars["ansible_ssh_private_key_file"],
                f"ops@{address}",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode != 0
        assert "No route to host" in result.stderr, f"{host} {address}: {result.stderr}"
        assert time.monotonic() - started < 2


def _to_bastion(lab, user: str, *options: str) -> subprocess.CompletedProcess[str]:
    """``ssh user@proxy true`` with the inventory's own options for the proxy (its known hosts,
    its key and the lab's containment gate) plus ``options``, which come first and so win."""
    proxy = lab.names(PROXY)[0]
    inventory_options = shlex.split(lab.hosts[proxy]["ansible_ssh_common_args"])
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", *options, *inventory_options,
         f"{user}@{lab.hosts[proxy]['ansible_host']}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.control("AC-03")
def test_no_root_login_and_no_password(lab):
    for user, extra in (
        ("root", []),
        ("ops", ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]),
    ):
        result = _to_bastion(lab, user, *extra)
        assert result.returncode == 255, (user, result.stderr)
        assert "Permission denied" in result.stderr, (user, result.stderr)


@pytest.mark.control("AC-03")
@pytest.mark.parametrize("user", ["ops", "root"])
def test_the_bastion_offers_public_keys_only(lab, user):
    """Whatever the client would try, the server itself offers only public-key authentication:
    asked with no method at all (nothing is sent but the user name), it lists what may continue."""
    result = _to_bastion(lab, user, "-v", "-o", "PreferredAuthentications=none")
    offered = re.findall(r"Authentications that can continue: (\S+)", result.stderr)
    assert offered, result.stderr[-2000:]
    assert set(offered) == {"publickey"}, offered


@pytest.mark.control("NET-06")
@pytest.mark.parametrize("tier", [APP, DB])
def test_app_and_db_have_no_internet_route(lab, tier):
    for host in lab.names(tier):
        default = lab.ssh(
            host, "ip -4 route show default; ip -4 route show table all | grep -c default || true"
        )
        assert default.returncode == 0, default.stderr
        assert default.stdout.split() == ["0"], f"{host} has a default route: {default.stdout}"
        for probe in NO_ROUTE_PROBES:
            lookup = lab.ssh(host, f"ip route get {probe}")
            assert lookup.returncode != 0, f"{host} has a route to {probe}: {lookup.stdout}"
            assert "Network is unreachable" in lookup.stderr, lookup.stderr


@pytest.mark.lab_only
def test_sentinel_answers_the_proxy(lab):
    sentinel = lab.vars["tierwall_lab_sentinel"]
    for host in lab.names(PROXY):
        body = lab.ssh(
            host,
            f'python3 -c "import urllib.request as u; '
            f"print(u.urlopen('http://{sentinel}/', timeout=5).read().decode())\"",
        )
        assert "tierwall lab sentinel" in body.stdout, body.stderr
        for port in SENTINEL_PORTS:
            assert connect(lab, host, sentinel, port)[0] == "connected"


@pytest.mark.lab_only
@pytest.mark.control("NET-06")
@pytest.mark.parametrize("tier", [APP, DB])
def test_sentinel_is_unreachable_from_app_and_db(lab, tier):
    sentinel = lab.vars["tierwall_lab_sentinel"]
    for host in lab.names(tier):
        for port in SENTINEL_PORTS:
            outcome, _ = connect(lab, host, sentinel, port)
            assert outcome != "connected", f"{host} reached the sentinel on {port}"
            assert outcome.endswith(":101"), f"{host}: expected 'Network is unreachable', got {outcome}"


@pytest.mark.control("NET-05")
def test_proxy_cannot_reach_the_backend(lab):
    (db,) = lab.names(DB)
    db_address = str(lab.topology.host(db).address(BACKEND))
    for host in lab.names(PROXY):
        # Before the firewall role the attempt dies at once (the operator's unreachable route);
        # after it, the proxy's own output chain drops it. Either way nothing may answer.
        outcome, _ = connect(lab, host, db_address, lab.topology.ports.ssh)
        assert outcome != "connected", f"{host} reached the db at {db_address}"
        assert not outcome.startswith("ConnectionRefusedError"), f"{host}: a packet reached the db (RST)"


@pytest.mark.control("NET-05")
def test_addresses_and_attachment_follow_the_topology(lab):
    root = json.loads(
        subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    )
    root_addresses = [a["local"] for link in root for a in link.get("addr_info", [])]
    for network in lab.topology.networks:
        assert not [a for a in root_addresses if a in [str(x) for x in network.cidr]], (
            f"the operator (root namespace) has an address on {network.name}"
        )
    for host in lab.topology.hosts:
        result = lab.in_ns(host.name, ["ip", "-j", "-4", "addr"])
        got = {a["local"] for link in json.loads(result.stdout) for a in link.get("addr_info", [])} - {
            "127.0.0.1"
        }
        expected = {str(i.address) for i in host.interfaces}
        if host.tier == PROXY:
            expected.add(lab.vars["tierwall_proxy_public"][host.name])
        assert got == expected, f"{host.name}: {got} != {expected}"
        if host.tier == APP:
            assert {FRONTEND, BACKEND} == set(host.networks)


def test_root_namespace_containment_is_in_place(lab):
    routes = subprocess.run(
        ["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True, check=True
    ).stdout
    for network in lab.topology.networks:
        assert str(network.cidr) in routes
    table = subprocess.run(
        ["nft", "list", "table", "inet", "tierwall_lab"], capture_output=True, text=True, check=False
    )
    assert table.returncode == 0, "the lab's nftables table is missing"
    assert "masquerade" in table.stdout
    assert "drop" in table.stdout


def test_db_has_its_volume(lab):
    (db,) = lab.names(DB)
    device = lab.hosts[db]["tierwall_volume_device"]
    result = lab.ssh(db, f"test -b {device} && sudo blockdev --getsize64 {device}")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == VOLUME_SIZE

"""The app tier: no route out, egress only through the squid, and the Debian-only apt proxy for the db."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import Inventory, connect
from probes import proxy_status, status_code, tcp_outcome

TIER_GROUP = "app"
# Documentation addresses (RFC 5737): a route lookup sends nothing; the first is this machine's
# uplink range, the second the lab's convention for "somewhere on the internet".


@pytest.fixture
def db_client(inventory: Inventory) -> Any:
    """apt-cacher-ng's only legitimate client: the db host."""
    return connect(inventory, inventory.first("db"))


def _acng(hostvars: dict[str, Any], topology: dict[str, Any]) -> tuple[str, int]:
    return hostvars["tierwall_addresses"]["backend"], int(topology["ports"]["apt_cacher"])


@pytest.mark.control("NET-06")
@pytest.mark.lab_only
def test_the_sentinel_is_unreachable(host: Any, sentinel: str) -> None:
    """A connection attempt to the lab's sentinel internet host fails on the app server itself."""
    assert tcp_outcome(host, sentinel, 80) == "blocked"


@pytest.mark.control("EGR-02")
def test_apt_proxy_listens_on_the_backend_address_only(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """apt-cacher-ng is bound to the app's backend address: only the db's network can reach it."""
    address, port = _acng(hostvars, topology)
    result = host.run("ss -H -l -t -n sport = :%s", str(port))
    assert result.rc == 0, result.stderr
    assert sorted({line.split()[3] for line in result.stdout.splitlines()}) == [f"{address}:{port}"]


@pytest.mark.control("EGR-02")
@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "http://example.invalid/pool/main/h/hello/hello.deb"),  # not the Debian archive
        ("GET", "http://deb.debian.org/not-debian/x.deb"),  # the archive's host, another tree
        ("CONNECT", "deb.debian.org:443"),  # no tunnels at all
    ],
    ids=["foreign-host", "foreign-path", "connect"],
)
def test_apt_proxy_refuses_anything_but_the_debian_archive(
    db_client: Any, hostvars: dict[str, Any], topology: dict[str, Any], method: str, target: str
) -> None:
    """apt-cacher-ng (ForceManaged, Debian remaps only) refuses other URLs and tunnels: the db gets Debian
    packages and nothing else.
    """
    address, port = _acng(hostvars, topology)
    line = proxy_status(db_client, address, port, method, target)
    # apt-cacher-ng's own refusals, by their reason phrase: any 4xx would also pass a request the
    # proxy forwarded and the real archive answered 404, which is no refusal at all.
    assert status_code(line) == 403, line
    assert re.search(r" 403 (Forbidden file type or location|CONNECT denied)", line), line


@pytest.mark.control("EGR-01")
@pytest.mark.verify_never("changes the host: apt-get update rewrites the package lists, as root")
def test_apt_works_through_the_squid(host: Any) -> None:
    """The app's own apt reaches the Debian archive through the squid (its allow-list lets the archive
    through).
    """
    result = host.run("apt-get update -q -o APT::Update::Error-Mode=any")
    assert result.rc == 0, result.stdout + result.stderr

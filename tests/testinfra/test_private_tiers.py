"""App, db and management servers: no way out to the internet but the declared egress chain.

None has a public address (Pulumi disables them); here the live hosts prove they have no default
route either, so nothing on them can even address the internet: their only way out is the proxy's
squid (app, management host) and the app's apt proxy (db).
"""

from __future__ import annotations

from typing import Any

import pytest

TIER_GROUP = ("app", "db", "mgmt")
# Documentation addresses (RFC 5737): a route lookup sends nothing. The first is this machine's
# uplink range, the second the lab's convention for "somewhere on the internet".
INTERNET_PROBES = ("192.0.2.1", "198.51.100.77")


@pytest.mark.control("NET-06")
def test_no_default_route(host: Any) -> None:
    """No default route (IPv4 or IPv6): the host cannot address anything outside its networks."""
    for family in ("-4", "-6"):
        result = host.run("ip %s -j route show default", family)
        assert result.rc == 0, result.stderr
        assert result.stdout.strip() in ("", "[]"), f"default route ({family}): {result.stdout}"


@pytest.mark.control("NET-06")
@pytest.mark.parametrize("address", INTERNET_PROBES)
def test_internet_addresses_have_no_route(host: Any, address: str) -> None:
    """The kernel finds no route to an internet address (a lookup: no packet is sent)."""
    result = host.run("ip route get %s", address)
    assert result.rc != 0
    assert "unreachable" in result.stderr.lower()

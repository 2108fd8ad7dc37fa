"""The proxy tier: the squid forward proxy is the app tier's only, allow-listed way out (EGR-01)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Inventory, connect
from probes import proxy_status, status_code

TIER_GROUP = "proxy"
# Reserved by RFC 2606: never resolvable, so a refusal cannot have been caused by the far end.
NOT_ALLOWED = "example.invalid"


@pytest.fixture
def client(inventory: Inventory) -> Any:
    """The squid's legitimate client: the first app host."""
    return connect(inventory, inventory.first("app"))


def _squid(hostvars: dict[str, Any], topology: dict[str, Any]) -> tuple[str, int]:
    return hostvars["tierwall_addresses"]["frontend"], int(topology["ports"]["squid"])


@pytest.mark.control("EGR-01")
def test_squid_listens_on_the_frontend_address_only(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """Squid is bound to the proxy's frontend address: it is unreachable from the internet side even without
    the firewall.
    """
    address, port = _squid(hostvars, topology)
    result = host.run("ss -H -l -t -n sport = :%s", str(port))
    assert result.rc == 0, result.stderr
    listeners = sorted({line.split()[3] for line in result.stdout.splitlines()})
    assert listeners == [f"{address}:{port}"]


@pytest.mark.control("EGR-01")
def test_squid_refuses_a_destination_outside_the_allow_list(
    client: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """A plain HTTP request from an app host to a name off the allow-list is refused by squid itself (403).
    """
    address, port = _squid(hostvars, topology)
    assert status_code(proxy_status(client, address, port, "GET", f"http://{NOT_ALLOWED}/")) == 403


@pytest.mark.control("EGR-01")
def test_squid_refuses_a_tunnel_outside_the_allow_list(
    client: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """CONNECT (a TLS tunnel squid cannot inspect) is refused for names outside the allow-list."""
    address, port = _squid(hostvars, topology)
    assert status_code(proxy_status(client, address, port, "CONNECT", f"{NOT_ALLOWED}:443")) == 403


@pytest.mark.control("EGR-01")
def test_squid_refuses_a_tunnel_to_another_port_of_an_allowed_name(
    client: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """CONNECT goes to port 443 only: an allowed name on another port (SSH here) is refused before any
    connection.
    """
    address, port = _squid(hostvars, topology)
    allowed = "deb.debian.org"
    assert status_code(proxy_status(client, address, port, "CONNECT", f"{allowed}:22")) == 403


@pytest.mark.control("EGR-01")
def test_squid_serves_no_one_but_the_app_tier(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """A request from an address that is not an app host (the proxy itself) is refused even for an allowed
    name.
    """
    address, port = _squid(hostvars, topology)
    line = proxy_status(host, address, port, "GET", "http://deb.debian.org/debian/")
    assert status_code(line) == 403

"""The db tier: no route to the internet, ever; packages only through the app's apt proxy."""

from __future__ import annotations

from typing import Any

import pytest
from probes import tcp_outcome

TIER_GROUP = "db"
SMALL_PACKAGE = "hello"


@pytest.mark.control("NET-06")
def test_only_private_routes(host: Any, hostvars: dict[str, Any], topology: dict[str, Any]) -> None:
    """Every route the db has stays inside the backend network (no NAT gateway, no forward path)."""
    import ipaddress
    import json

    backend = ipaddress.ip_network(topology["networks"]["backend"]["cidr"])
    result = host.run("ip -4 -j route show table all")
    assert result.rc == 0, result.stderr
    outside = []
    for route in json.loads(result.stdout):
        dst = route.get("dst", "")
        if route.get("type") in ("local", "broadcast") or dst.startswith("127.") or dst in ("", "default"):
            if dst == "default":
                outside.append(route)
            continue
        if not ipaddress.ip_network(dst, strict=False).subnet_of(backend):
            outside.append(route)
    assert outside == []


@pytest.mark.control("NET-06")
@pytest.mark.lab_only
@pytest.mark.parametrize("port", [80, 443])
def test_the_sentinel_is_unreachable(host: Any, sentinel: str, port: int) -> None:
    """A connection attempt from the db to the lab's sentinel internet host fails."""
    assert tcp_outcome(host, sentinel, port) == "blocked"


@pytest.mark.control("EGR-02")
@pytest.mark.verify_never("changes the host: installs and purges a package as root")
def test_packages_install_through_the_apt_proxy(host: Any) -> None:
    """apt-get update and installing a small package succeed on the db via app (acng) -> proxy (squid).

    The db needs security updates although it may never reach the internet: this chain is how.
    The package is removed again so the host's state stays the converged one.
    """
    update = host.run("apt-get update -q -o APT::Update::Error-Mode=any")
    assert update.rc == 0, update.stdout + update.stderr
    install = host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends %s", SMALL_PACKAGE
    )
    try:
        assert install.rc == 0, install.stdout + install.stderr
        assert host.package(SMALL_PACKAGE).is_installed
    finally:
        host.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q %s", SMALL_PACKAGE)

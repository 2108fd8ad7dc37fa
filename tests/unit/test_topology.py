"""The topology model's invariants: each promise of the architecture, and a case that breaks it."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from tierwall.topology import (
    ADMIN,
    APP,
    BACKEND,
    DB,
    FRONTEND,
    INTERNET,
    MGMT,
    PROXY,
    PUBLIC,
    Flow,
    Host,
    Interface,
    Network,
    Ports,
    Topology,
    TopologyError,
    build_topology,
    topology_from_dict,
)

IP = ipaddress.ip_address


@pytest.fixture
def topology() -> Topology:
    return build_topology(app_count=2)


def _rebuild(topology: Topology, **changes) -> Topology:
    return Topology(
        changes.get("networks", topology.networks),
        changes.get("hosts", topology.hosts),
        changes.get("flows", topology.flows),
        topology.ports,
    )


def test_hosts_and_addresses_derive_from_the_cidrs(topology: Topology) -> None:
    assert [h.name for h in topology.hosts] == ["proxy-1", "app-1", "app-2", "db-1", "mgmt-1"]
    assert topology.host("proxy-1").address(FRONTEND) == IP("10.10.1.10")
    assert topology.host("app-2").address(FRONTEND) == IP("10.10.1.21")
    assert topology.host("app-2").address(BACKEND) == IP("10.10.2.21")
    assert topology.host("db-1").address(BACKEND) == IP("10.10.2.30")
    assert topology.host("mgmt-1").address(FRONTEND) == IP("10.10.1.40")


@pytest.mark.control("NET-03")
def test_tier_attachment(topology: Topology) -> None:
    assert topology.host("db-1").networks == (BACKEND,)
    assert topology.host("proxy-1").networks == (FRONTEND,)
    assert set(topology.host("app-1").networks) == {FRONTEND, BACKEND}
    assert topology.host("mgmt-1").networks == (FRONTEND,)
    assert {h.tier for h in topology.hosts_on(BACKEND)} == {APP, DB}
    assert not topology.host("mgmt-1").has_public_address


@pytest.mark.parametrize("count", [1, 3, 9])
def test_any_number_of_app_servers(count: int) -> None:
    topology = build_topology(app_count=count, proxy_count=2)
    assert len(topology.hosts_in(APP)) == count
    assert len(topology.hosts_in(PROXY)) == 2


@pytest.mark.parametrize(
    ("tier", "networks"),
    [
        (DB, (FRONTEND, BACKEND)),
        (DB, (FRONTEND,)),
        (PROXY, (FRONTEND, BACKEND)),
        (PROXY, (BACKEND,)),
        (APP, (FRONTEND,)),
        (APP, (BACKEND,)),
        (MGMT, (FRONTEND, BACKEND)),
        (MGMT, (BACKEND,)),
    ],
)
def test_tier_on_wrong_network_is_rejected(topology: Topology, tier: str, networks: tuple[str, ...]) -> None:
    victim = topology.hosts_in(tier)[0]
    offsets = {FRONTEND: 100, BACKEND: 100}
    interfaces = tuple(Interface(n, topology.network(n).cidr.network_address + offsets[n]) for n in networks)
    hosts = tuple(replace(h, interfaces=interfaces) if h == victim else h for h in topology.hosts)
    with pytest.raises(TopologyError, match=f"{victim.name}.*must be attached to exactly"):
        _rebuild(topology, hosts=hosts)


def test_overlapping_cidrs_are_rejected() -> None:
    with pytest.raises(TopologyError, match="overlaps"):
        build_topology(frontend_cidr="10.10.0.0/16", backend_cidr="10.10.2.0/24")


@pytest.mark.parametrize("cidr", ["8.8.8.0/24", "100.64.0.0/24", "203.0.113.0/24"])
def test_public_cidrs_are_rejected(cidr: str) -> None:
    with pytest.raises(TopologyError, match="not private"):
        build_topology(backend_cidr=cidr)


@pytest.mark.parametrize("cidr", ["10.10.2.0/33", "10.10.2.5/24", "banana", "fd00::/64"])
def test_invalid_cidrs_are_rejected(cidr: str) -> None:
    with pytest.raises(TopologyError, match="backend CIDR"):
        build_topology(backend_cidr=cidr)


def test_too_small_network_is_rejected() -> None:
    with pytest.raises(TopologyError, match="too small"):
        build_topology(backend_cidr="10.10.2.0/27")


def test_address_outside_subnet_is_rejected(topology: Topology) -> None:
    db = topology.host("db-1")
    hosts = tuple(
        replace(h, interfaces=(Interface(BACKEND, IP("10.10.9.30")),)) if h == db else h
        for h in topology.hosts
    )
    with pytest.raises(TopologyError, match="outside backend"):
        _rebuild(topology, hosts=hosts)


def test_gateway_address_is_rejected(topology: Topology) -> None:
    db = topology.host("db-1")
    hosts = tuple(
        replace(h, interfaces=(Interface(BACKEND, IP("10.10.2.1")),)) if h == db else h
        for h in topology.hosts
    )
    with pytest.raises(TopologyError, match="gateway"):
        _rebuild(topology, hosts=hosts)


def test_duplicate_address_is_rejected(topology: Topology) -> None:
    db = topology.host("db-1")
    hosts = tuple(
        replace(h, interfaces=(Interface(BACKEND, IP("10.10.2.20")),)) if h == db else h
        for h in topology.hosts
    )
    with pytest.raises(TopologyError, match="already used by app-1"):
        _rebuild(topology, hosts=hosts)


def test_second_db_is_rejected(topology: Topology) -> None:
    extra = Host("db-2", DB, (Interface(BACKEND, IP("10.10.2.31")),))
    with pytest.raises(TopologyError, match="exactly 1 db"):
        _rebuild(topology, hosts=(*topology.hosts, extra))


def test_second_management_host_is_rejected(topology: Topology) -> None:
    extra = Host("mgmt-2", MGMT, (Interface(FRONTEND, IP("10.10.1.41")),))
    with pytest.raises(TopologyError, match="exactly 1 management"):
        _rebuild(topology, hosts=(*topology.hosts, extra))


@pytest.mark.parametrize("count", [1, 9])
def test_the_management_host_never_collides_with_a_full_tier(count: int) -> None:
    # Nine proxies and nine apps end at .18 and .28: the management host's .40 stays its own, even
    # on the smallest network the checks accept.
    topology = build_topology(frontend_cidr="10.10.1.0/26", proxy_count=count, app_count=count)
    assert topology.host("mgmt-1").address(FRONTEND) == IP("10.10.1.40")


@pytest.mark.parametrize("count", [0, 10, -1, True, "2"])
def test_host_counts_are_bounded(count: object) -> None:
    with pytest.raises(TopologyError, match="app count"):
        build_topology(app_count=count)  # type: ignore[arg-type]


@pytest.mark.control("NET-05")
def test_flow_matrix_keeps_db_to_app_only(topology: Topology) -> None:
    for flow in topology.flows:
        if DB in (flow.source, flow.destination):
            assert {flow.source, flow.destination} == {APP, DB}, flow
    assert topology.allows("app-1", "db-1", 5432)
    assert not topology.allows("proxy-1", "db-1", 5432)
    assert not topology.allows(INTERNET, APP, 8443)
    assert not topology.allows(DB, INTERNET, 443)
    # The db's trail reaches the archive only through the app's relay.
    assert topology.allows("db-1", "app-1", topology.ports.log_archive)
    assert not topology.allows("db-1", "mgmt-1", topology.ports.log_archive)


def test_the_management_host_is_reached_and_reaches_out_through_the_proxy_only(topology: Topology) -> None:
    port = topology.ports
    assert topology.allows("proxy-1", "mgmt-1", port.ssh)
    assert topology.allows("proxy-1", "mgmt-1", port.log_archive)
    assert topology.allows("app-1", "mgmt-1", port.log_archive)
    assert topology.allows("mgmt-1", "proxy-1", port.squid)
    assert topology.allows("mgmt-1", "proxy-1", port.ntp, "udp")
    assert not topology.allows(ADMIN, MGMT, port.ssh)
    assert not topology.allows(INTERNET, MGMT, port.https)
    assert not topology.allows(MGMT, INTERNET, port.https)
    assert not topology.allows("app-1", "mgmt-1", port.ssh)
    # Nothing on the management host opens a connection to the app tier or the db.
    assert {f.destination for f in topology.flows_from(MGMT)} == {PROXY}


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (Flow(PROXY, DB, 5432, "tcp", BACKEND, "x"), "share"),
        (Flow(INTERNET, DB, 5432, "tcp", PUBLIC, "x"), "only the proxy tier"),
        (Flow(DB, INTERNET, 443, "tcp", PUBLIC, "x"), "only the proxy tier"),
        (Flow(ADMIN, APP, 22, "tcp", PUBLIC, "x"), "only the proxy tier"),
        (Flow(ADMIN, MGMT, 22, "tcp", PUBLIC, "x"), "only the proxy tier"),
        (Flow(DB, MGMT, 6514, "tcp", BACKEND, "x"), "share"),
        (Flow(APP, APP, 22, "tcp", FRONTEND, "x"), "two different endpoints"),
        (Flow(APP, DB, 5432, "sctp", BACKEND, "x"), "tcp or udp"),
        (Flow(APP, DB, 5432, "tcp", BACKEND, "again"), "declared twice"),
        (Flow(PROXY, INTERNET, 8080, "tcp", FRONTEND, "x"), "public network"),
        (Flow("mars", DB, 1, "tcp", BACKEND, "x"), "endpoints must be"),
    ],
)
def test_flows_that_break_the_architecture_are_rejected(topology: Topology, flow: Flow, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        _rebuild(topology, flows=(*topology.flows, flow))


def test_ports_follow_one_edit() -> None:
    topology = build_topology(ports=Ports(app=9443))
    assert topology.allows(PROXY, APP, 9443)
    assert not topology.allows(PROXY, APP, 8443)
    assert topology.as_dict()["ports"]["app"] == 9443


def test_colliding_ports_are_rejected() -> None:
    with pytest.raises(TopologyError, match="collides"):
        Ports(app=5432)


def test_networks_must_be_frontend_and_backend(topology: Topology) -> None:
    extra = Network("dmz", ipaddress.ip_network("10.10.3.0/24"))
    with pytest.raises(TopologyError, match="exactly the networks"):
        _rebuild(topology, networks=(*topology.networks, extra))


def test_as_dict_is_plain_data(topology: Topology) -> None:
    data = topology.as_dict()
    assert data["hosts"]["db-1"] == {"tier": DB, "addresses": {BACKEND: "10.10.2.30"}}
    assert data["networks"][FRONTEND] == {"cidr": "10.10.1.0/24", "gateway": "10.10.1.1"}
    assert len(data["flows"]) == len(topology.flows)


def test_round_trip_through_plain_data() -> None:
    topology = build_topology(app_count=3, ports=Ports(app=9443))
    assert topology_from_dict(topology.as_dict()) == topology


def test_edited_plain_data_is_refused() -> None:
    data = build_topology().as_dict()
    data["hosts"]["db-1"]["addresses"]["backend"] = "10.10.2.99"
    with pytest.raises(TopologyError, match="differs"):
        topology_from_dict(data)

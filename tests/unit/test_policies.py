"""The CrossGuard policy pack (infra/policy): each policy passes a good resource and flags a bad one.

The policies' validate functions are called directly with constructed arguments: building the
PolicyPack would start its gRPC server and block. Resource policies get inputs with camelCase
property names (as the engine sends them); stack policies get resources linked by
``property_dependencies`` (the only way they can tell which network a server sits on).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from tierwall.paths import REPO

POLICY_DIR = REPO / "infra" / "policy"

SERVER = "hcloud:index/server:Server"
VOLUME = "hcloud:index/volume:Volume"
VOLUME_ATTACHMENT = "hcloud:index/volumeAttachment:VolumeAttachment"
FIREWALL = "hcloud:index/firewall:Firewall"
NETWORK = "hcloud:index/network:Network"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"
ROUTE = "hcloud:index/networkRoute:NetworkRoute"
SERVER_NETWORK = "hcloud:index/serverNetwork:ServerNetwork"
LOAD_BALANCER = "hcloud:index/loadBalancer:LoadBalancer"
PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp"
FLOATING_IP = "hcloud:index/floatingIp:FloatingIp"

ADMIN_CIDRS = ["198.51.100.7/32", "2001:db8:1::/48"]
PRIVATE = [{"ipv4Enabled": False, "ipv6Enabled": False}]
PUBLIC = [{"ipv4Enabled": True, "ipv6Enabled": True}]


def _load_policies() -> ModuleType:
    # The pack's folder is on sys.path when `pulumi preview --policy-pack infra/policy` runs it.
    sys.path.insert(0, str(POLICY_DIR))
    try:
        return importlib.import_module("policies")
    finally:
        sys.path.remove(str(POLICY_DIR))


policies = _load_policies()


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _urn(type_: str, name: str) -> str:
    return f"urn:pulumi:prod::tierwall::{type_}::{name}"


def check_resource(
    policy: ResourceValidationPolicy,
    type_: str,
    props: Mapping[str, Any],
    name: str = "res",
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """The violations ``policy`` reports for one resource."""
    found: list[str] = []
    args = ResourceValidationArgs(type_, dict(props), _urn(type_, name), name, _options(), None, config)
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def resource(type_: str, name: str, props: Mapping[str, Any], **deps: list[PolicyResource]) -> PolicyResource:
    """A stack resource whose properties depend on ``deps`` (property name -> resources)."""
    return PolicyResource(type_, dict(props), _urn(type_, name), name, _options(), None, None, [], dict(deps))


def check_stack(
    policy: StackValidationPolicy, resources: list[PolicyResource]
) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(resources), lambda message, urn=None: found.append((message, urn)))
    return found


def labelled(tier: str | None = None, network: str | None = None) -> dict[str, Any]:
    labels = {"tierwall.stack": "prod"}
    if tier:
        labels["tierwall.tier"] = tier
    if network:
        labels["tierwall.network"] = network
    return {"labels": labels}


# -- the pack as a whole ---------------------------------------------------------------------------


def test_every_policy_is_mandatory_named_and_traced_to_a_control() -> None:
    names = [p.name for p in policies.POLICIES]
    assert len(names) == len(set(names)), names
    for policy in policies.POLICIES:
        assert policy.enforcement_level == EnforcementLevel.MANDATORY, policy.name
        assert policy.tags, f"{policy.name}: no control id tag"
        assert all(t.split("-")[0] in ("NET", "LOC", "ENC") for t in policy.tags), policy.tags


def test_pack_files_are_what_the_cli_expects() -> None:
    manifest = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    # Resolved from the pack's own directory: the repository's virtualenv.
    venv = os.path.normpath(POLICY_DIR / manifest["runtime"]["options"]["virtualenv"])
    assert Path(venv) == REPO / ".venv"
    main = (POLICY_DIR / "__main__.py").read_text()
    assert "PolicyPack(" in main
    assert "POLICIES" in main


# -- LOC-01 ----------------------------------------------------------------------------------------


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize(
    ("type_", "props"),
    [
        (SERVER, {"location": "fsn1"}),
        (SERVER, {"location": "nbg1"}),
        (VOLUME, {"location": "nbg1", "size": 20}),
        (VOLUME, {"serverId": 42}),  # created where its (checked) server is
        (LOAD_BALANCER, {"location": "fsn1"}),
        (PRIMARY_IP, {"datacenter": "nbg1-dc3"}),
        (NETWORK, {"ipRange": "10.10.1.0/24"}),  # has no location
    ],
)
def test_german_locations_pass(type_: str, props: dict[str, Any]) -> None:
    assert check_resource(policies.german_locations, type_, props) == []


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize(
    ("type_", "props", "message"),
    [
        (SERVER, {"location": "hel1"}, "'hel1' is outside Germany"),
        (SERVER, {"datacenter": "hel1-dc2"}, "'hel1-dc2' is outside Germany"),
        (SERVER, {}, "no location"),
        (VOLUME, {"location": "ash"}, "'ash' is outside Germany"),
        (VOLUME, {"size": 20}, "no location"),
        (LOAD_BALANCER, {"networkZone": "eu-central"}, "no location"),
        (PRIMARY_IP, {"location": "hil"}, "'hil' is outside Germany"),
        (FLOATING_IP, {"homeLocation": "sin"}, "'sin' is outside Germany"),
    ],
)
def test_german_locations_flag_everything_else(type_: str, props: dict[str, Any], message: str) -> None:
    found = check_resource(policies.german_locations, type_, props, name="bad")
    assert len(found) == 1, found
    assert message in found[0]
    assert found[0].startswith("bad:")


# -- NET-01 / NET-02 -------------------------------------------------------------------------------


@pytest.mark.control("NET-01")
@pytest.mark.control("NET-02")
@pytest.mark.parametrize(
    "props",
    [
        {**labelled("db"), "publicNets": PRIVATE},
        {**labelled("app"), "publicNets": PRIVATE},
        {**labelled("mgmt"), "publicNets": PRIVATE},
        {**labelled("proxy"), "publicNets": PUBLIC},
    ],
    ids=["db", "app", "mgmt", "proxy"],
)
def test_private_tiers_without_public_address_pass(props: dict[str, Any]) -> None:
    assert check_resource(policies.app_db_no_public_address, SERVER, props) == []


@pytest.mark.control("NET-01")
@pytest.mark.control("NET-02")
@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({**labelled("db")}, "does not set public_nets"),
        ({**labelled("db"), "publicNets": [{"ipv6Enabled": False}]}, "public ipv4"),
        ({**labelled("app"), "publicNets": [{"ipv4Enabled": False, "ipv6Enabled": True}]}, "public ipv6"),
        ({**labelled("db"), "publicNets": [{**PRIVATE[0], "ipv4": 4711}]}, "public ipv4"),
        ({**labelled("mgmt")}, "does not set public_nets"),
        ({**labelled("mgmt"), "publicNets": [{"ipv4Enabled": True, "ipv6Enabled": False}]}, "public ipv4"),
        ({**labelled(), "publicNets": PUBLIC}, "label it proxy, app, db or mgmt"),
        # A tier the policy does not know (an "ops" box beside the management host) cannot be proved
        # private by its tier: refused whatever its addresses.
        ({**labelled("ops"), "publicNets": PUBLIC}, "tierwall.tier='ops'; label it proxy, app, db or mgmt"),
    ],
    ids=[
        "db-default",
        "db-v4-default-on",
        "app-v6",
        "db-primary-ip",
        "mgmt-default",
        "mgmt-v4",
        "unlabelled",
        "unknown-tier",
    ],
)
def test_private_tiers_with_a_public_address_are_flagged(props: dict[str, Any], message: str) -> None:
    found = check_resource(policies.app_db_no_public_address, SERVER, props, name="db-1")
    assert len(found) == 1, found
    assert message in found[0]


# -- NET-04 ----------------------------------------------------------------------------------------


def rule(port: str, sources: list[str], protocol: str = "tcp", direction: str = "in") -> dict[str, Any]:
    return {"direction": direction, "protocol": protocol, "port": port, "sourceIps": sources}


WEB_AND_ADMIN_SSH = [
    rule("80", ["0.0.0.0/0", "::/0"]),
    rule("443", ["0.0.0.0/0", "::/0"]),
    rule("22", ADMIN_CIDRS),
]


@pytest.mark.control("NET-04")
@pytest.mark.parametrize("config", [None, {"adminCidrs": ADMIN_CIDRS}], ids=["unconfigured", "configured"])
def test_public_firewall_with_web_and_admin_ssh_passes(config: dict[str, Any] | None) -> None:
    rules = [*WEB_AND_ADMIN_SSH, rule("any", ["0.0.0.0/0"], direction="out")]
    assert check_resource(policies.public_firewall, FIREWALL, {"rules": rules}, config=config) == []


@pytest.mark.control("NET-04")
@pytest.mark.parametrize(
    ("bad_rule", "message"),
    [
        (rule("22", ["0.0.0.0/0"]), "the whole internet"),
        (rule("22", ["198.51.100.7/32", "::/0"]), "the whole internet"),
        (rule("22", ["0::0/0"]), "the whole internet"),
        (rule("22", ["203.0.113.0/24"]), "not inside the admin CIDRs"),
        (rule("22", ["not-a-cidr"]), "is not a CIDR"),
        (rule("8443", ["0.0.0.0/0"]), "only tcp 80 and 443"),
        (rule("1-65535", ["0.0.0.0/0"]), "only tcp 80 and 443"),
        (rule("443", ["0.0.0.0/0"], protocol="udp"), "only tcp 80 and 443"),
        (rule("", ["0.0.0.0/0"], protocol="icmp"), "only tcp 80 and 443"),
    ],
    ids=[
        "ssh-v4-all",
        "ssh-v6-all",
        "ssh-v6-all-spelt-oddly",
        "ssh-not-admin",
        "garbage",
        "app-port",
        "all-ports",
        "udp",
        "icmp",
    ],
)
def test_public_firewall_flags_anything_more(bad_rule: dict[str, Any], message: str) -> None:
    props = {"rules": [*WEB_AND_ADMIN_SSH, bad_rule]}
    found = check_resource(
        policies.public_firewall, FIREWALL, props, "proxy-public", {"adminCidrs": ADMIN_CIDRS}
    )
    assert len(found) == 1, found
    assert message in found[0]
    assert found[0].startswith("firewall proxy-public rule 3")


# -- ENC-01 ----------------------------------------------------------------------------------------


@pytest.mark.control("ENC-01")
@pytest.mark.parametrize(
    ("type_", "props"),
    [
        (VOLUME, {**labelled("db"), "size": 20, "location": "fsn1", "deleteProtection": True}),
        (VOLUME, {**labelled("app"), "size": 10, "format": "ext4"}),  # not the db's volume
        (VOLUME_ATTACHMENT, {"volumeId": 1, "serverId": 2, "automount": False}),
    ],
    ids=["db-volume", "other-tier", "attachment"],
)
def test_db_volume_ready_for_luks_passes(type_: str, props: dict[str, Any]) -> None:
    assert check_resource(policies.db_volume_protected, type_, props) == []


@pytest.mark.control("ENC-01")
@pytest.mark.parametrize(
    ("type_", "props", "message"),
    [
        (VOLUME, {**labelled("db"), "size": 20}, "lacks delete_protection"),
        (VOLUME, {**labelled("db"), "deleteProtection": False}, "lacks delete_protection"),
        (VOLUME, {**labelled("db"), "deleteProtection": True, "format": "ext4"}, "create it unformatted"),
        (VOLUME, {**labelled("db"), "deleteProtection": True, "automount": True}, "automounts"),
        (VOLUME, {**labelled(), "size": 20}, "lacks delete_protection"),  # unlabelled: held to db rules
        (VOLUME_ATTACHMENT, {"volumeId": 1, "serverId": 2, "automount": True}, "automounts"),
    ],
    ids=["no-protection", "protection-off", "formatted", "automount", "unlabelled", "attachment-automount"],
)
def test_db_volume_not_ready_for_luks_is_flagged(type_: str, props: dict[str, Any], message: str) -> None:
    found = check_resource(policies.db_volume_protected, type_, props, name="db-1-data")
    assert len(found) == 1, found
    assert message in found[0]


# -- stack policies: a small graph like the program's ----------------------------------------------


class Stack:
    """Two networks with a subnet each, and helpers to attach servers like the program does."""

    def __init__(self) -> None:
        self.frontend = resource(
            NETWORK, "frontend", {**labelled(network="frontend"), "ipRange": "10.10.1.0/24"}
        )
        self.backend = resource(
            NETWORK, "backend", {**labelled(network="backend"), "ipRange": "10.10.2.0/24"}
        )
        self.subnets = {
            "frontend": resource(SUBNET, "frontend-subnet", {"type": "cloud"}, networkId=[self.frontend]),
            "backend": resource(SUBNET, "backend-subnet", {"type": "cloud"}, networkId=[self.backend]),
        }
        self.resources: list[PolicyResource] = [self.frontend, self.backend, *self.subnets.values()]

    def server(self, name: str, tier: str | None, *networks: str) -> PolicyResource:
        entries = [{"ip": "10.10.0.1"} for _ in networks]
        server = resource(
            SERVER,
            name,
            {**labelled(tier), "networks": entries},
            networks=[self.subnets[n] for n in networks],
        )
        self.resources.append(server)
        return server

    def add(self, item: PolicyResource) -> PolicyResource:
        self.resources.append(item)
        return item

    def good(self) -> Stack:
        self.server("proxy-1", "proxy", "frontend")
        self.server("app-1", "app", "frontend", "backend")
        self.server("db-1", "db", "backend")
        self.server("mgmt-1", "mgmt", "frontend")
        return self


@pytest.mark.control("NET-03")
def test_db_on_backend_only_passes() -> None:
    assert check_stack(policies.db_on_backend_only, Stack().good().resources) == []


@pytest.mark.control("NET-03")
def test_db_on_frontend_too_is_flagged() -> None:
    stack = Stack()
    db = stack.server("db-1", "db", "backend", "frontend")
    found = check_stack(policies.db_on_backend_only, stack.resources)
    assert found == [("db server db-1 is on frontend (frontend); backend only", db.urn)]


@pytest.mark.control("NET-03")
def test_db_attached_through_a_server_network_is_seen() -> None:
    stack = Stack()
    db = stack.server("db-1", "db", "backend")
    unlabelled = stack.add(resource(NETWORK, "legacy", {"ipRange": "10.99.0.0/24"}))
    stack.add(
        resource(SERVER_NETWORK, "db-1-legacy", {"ip": "10.99.0.5"}, serverId=[db], networkId=[unlabelled])
    )
    found = check_stack(policies.db_on_backend_only, stack.resources)
    assert found == [("db server db-1 is on legacy (unlabelled); backend only", db.urn)]


@pytest.mark.control("NET-03")
def test_db_on_a_network_the_policy_cannot_identify_is_flagged() -> None:
    stack = Stack()
    # Hard-coded network ids carry no dependency: the attachment cannot be proven harmless.
    db = stack.add(resource(SERVER, "db-1", {**labelled("db"), "networks": [{"networkId": 4711}]}))
    found = check_stack(policies.db_on_backend_only, stack.resources)
    assert len(found) == 1
    assert "on no network this policy can identify" in found[0][0]
    assert found[0][1] == db.urn


@pytest.mark.control("NET-03")
def test_backend_without_proxy_passes() -> None:
    assert check_stack(policies.proxy_never_on_backend, Stack().good().resources) == []


@pytest.mark.control("NET-03")
@pytest.mark.parametrize("tier", ["proxy", "mgmt", None], ids=["proxy", "mgmt", "unlabelled"])
def test_proxy_or_unlabelled_server_on_backend_is_flagged(tier: str | None) -> None:
    stack = Stack().good()
    intruder = stack.server("intruder", tier, "frontend", "backend")
    found = check_stack(policies.proxy_never_on_backend, stack.resources)
    assert len(found) == 1, found
    assert "intruder is attached to the backend network backend" in found[0][0]
    assert found[0][1] == intruder.urn


@pytest.mark.control("NET-03")
def test_proxy_attached_to_backend_through_a_server_network_is_flagged() -> None:
    stack = Stack().good()
    proxy = next(r for r in stack.resources if r.name == "proxy-1")
    stack.add(
        resource(
            SERVER_NETWORK, "proxy-backend", {"ip": "10.10.2.10"}, serverId=[proxy], networkId=[stack.backend]
        )
    )
    found = check_stack(policies.proxy_never_on_backend, stack.resources)
    assert [urn for _, urn in found] == [proxy.urn]


# -- NET-07 ----------------------------------------------------------------------------------------


def route(stack: Stack, destination: str, network: PolicyResource | None) -> PolicyResource:
    deps = {"networkId": [network]} if network is not None else {}
    props = {"destination": destination, "gateway": "10.10.1.10"}
    return stack.add(resource(ROUTE, f"route-{destination}", props, **deps))


@pytest.mark.control("NET-07")
def test_private_routes_and_routes_off_the_db_network_pass() -> None:
    stack = Stack().good()
    route(stack, "10.20.0.0/16", stack.backend)  # stays inside RFC 1918
    route(stack, "0.0.0.0/0", stack.frontend)  # the db is not on frontend
    assert check_stack(policies.no_internet_route_on_db_network, stack.resources) == []


@pytest.mark.control("NET-07")
@pytest.mark.parametrize("destination", ["0.0.0.0/0", "8.8.8.0/24", "0.0.0.0/1"])
def test_internet_route_on_the_backend_is_flagged(destination: str) -> None:
    stack = Stack().good()
    bad = route(stack, destination, stack.backend)
    found = check_stack(policies.no_internet_route_on_db_network, stack.resources)
    assert len(found) == 1, found
    assert "which carries the db" in found[0][0]
    assert found[0][1] == bad.urn


@pytest.mark.control("NET-07")
def test_internet_route_on_an_unlabelled_network_carrying_the_db_is_flagged() -> None:
    stack = Stack()
    legacy = stack.add(resource(NETWORK, "legacy", {"ipRange": "10.99.0.0/24"}))
    legacy_subnet = stack.add(resource(SUBNET, "legacy-subnet", {}, networkId=[legacy]))
    stack.add(resource(SERVER, "db-1", {**labelled("db")}, networks=[legacy_subnet]))
    bad = route(stack, "0.0.0.0/0", legacy)
    found = check_stack(policies.no_internet_route_on_db_network, stack.resources)
    assert [urn for _, urn in found] == [bad.urn]


@pytest.mark.control("NET-07")
def test_internet_route_on_an_unidentifiable_network_is_flagged() -> None:
    stack = Stack().good()
    bad = route(stack, "0.0.0.0/0", None)
    found = check_stack(policies.no_internet_route_on_db_network, stack.resources)
    assert [urn for _, urn in found] == [bad.urn]
    assert "unidentifiable network" in found[0][0]

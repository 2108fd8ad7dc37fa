"""The Pulumi program (infra/pulumi) under mocks: the resource graph keeps the security promises.

No Pulumi CLI exists here, so the program runs with ``pulumi.runtime.set_mocks``; the mocks answer
like the hcloud provider and record what the program asked for. Every assertion on the graph runs
inside the Output that the ``@pulumi.runtime.test`` function returns (an assertion in an Output
nobody awaits passes silently; ``test_a_false_assertion_in_a_graph_check_fails`` proves ours are
awaited), and every failure message starts with the URN of the resource at fault.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import json
import os
import runpy
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.resource import all_aliases
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from tierwall.config import ALLOWED_LOCATIONS, load_stack_file
from tierwall.inventory import load_outputs, proxy_public_from_outputs, topology_from_outputs
from tierwall.paths import REPO
from tierwall.topology import APP, DB, MGMT, PROXY, Topology, build_topology

PROGRAM_DIR = REPO / "infra" / "pulumi"
POLICY_DIR = REPO / "infra" / "policy"
FIXTURE = Path(__file__).parent / "fixtures" / "stack-outputs.json"

STACK = "prod"
KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq ops@example",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK9mQ3wZ8c3v7sFq0YH1d2NnR4uT6yB5xE0jL8pA1sWz second@example",
]
ADMIN_CIDRS = ["198.51.100.7/32", "2001:db8:1::/48"]
ANYWHERE = ["0.0.0.0/0", "::/0"]
SERVER_TYPES = {PROXY: "cx23", APP: "cpx22", DB: "cax11", MGMT: "cx33"}
BACKUP_REPOSITORIES = [
    {"location": "fsn1", "endpoint": "fsn1.your-objectstorage.com", "bucket": "notes-backups-fsn1"},
    {
        "location": "nbg1",
        "endpoint": "nbg1.your-objectstorage.com",
        "bucket": "notes-backups-nbg1",
        "region": "nbg1",
        "caFile": "certs/objectstorage-ca.pem",
    },
]
APP_COUNTS = [1, 3]

SERVER = "hcloud:index/server:Server"
NETWORK = "hcloud:index/network:Network"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"
ROUTE = "hcloud:index/networkRoute:NetworkRoute"
SERVER_NETWORK = "hcloud:index/serverNetwork:ServerNetwork"
FIREWALL = "hcloud:index/firewall:Firewall"
FIREWALL_ATTACHMENT = "hcloud:index/firewallAttachment:FirewallAttachment"
VOLUME = "hcloud:index/volume:Volume"
VOLUME_ATTACHMENT = "hcloud:index/volumeAttachment:VolumeAttachment"
PLACEMENT_GROUP = "hcloud:index/placementGroup:PlacementGroup"
SSH_KEY = "hcloud:index/sshKey:SshKey"
from tierwall.labels import NETWORK_LABEL, STACK_LABEL, TIER_LABEL  # noqa: E402


def stack_config(**overrides: Any) -> dict[str, Any]:
    """A valid ``tierwall:`` config (keys without the namespace), with overrides."""
    config: dict[str, Any] = {
        "location": "fsn1",
        "domain": "notes.example.org",
        "sshPublicKeys": KEYS,
        "adminCidrs": ADMIN_CIDRS,
        "serverTypes": SERVER_TYPES,
        "appCount": 2,
        "dbVolumeSize": 40,
        "appPort": 8443,
        "backupRepositories": BACKUP_REPOSITORIES,
    }
    config.update(overrides)
    return config


def engine_values(config: Mapping[str, Any]) -> dict[str, str]:
    """The config as the engine hands it over: full keys, strings as they are, the rest as JSON."""
    return {f"tierwall:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


# -- the mocked provider ---------------------------------------------------------------------------


class HetznerMocks(pulumi.runtime.Mocks):
    """Answers as the hcloud provider would and remembers each resource's inputs by id.

    Inputs arrive with camelCase keys and numbers as floats; ids are numeric strings so the
    program's ``.apply(int)`` works, and subnet ids are "<networkId>-<ipRange>" as at Hetzner.
    """

    def __init__(self) -> None:
        self.inputs_by_id: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self._next = 1000
        self._lock = threading.Lock()  # the mock monitor registers resources from several threads

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return "", {}
        with self._lock:
            self._next += 1
            number = self._next
        inputs = dict(args.inputs)
        outputs = dict(inputs)
        resource_id = str(number)
        if args.typ == SUBNET:
            resource_id = f"{int(inputs['networkId'])}-{inputs['ipRange']}"
        elif args.typ == SERVER:
            outputs.update(self._server_outputs(inputs, number))
        elif args.typ == VOLUME:
            outputs["linuxDevice"] = f"/dev/disk/by-id/scsi-0HC_Volume_{resource_id}"
        self.inputs_by_id[resource_id] = inputs
        return resource_id, outputs

    @staticmethod
    def _server_outputs(inputs: Mapping[str, Any], number: int) -> dict[str, Any]:
        public = (inputs.get("publicNets") or [{}])[0]
        # Omitted public_nets means public IPv4 and IPv6 at Hetzner; the mock behaves the same.
        v4 = public.get("ipv4Enabled", True) is not False
        v6 = public.get("ipv6Enabled", True) is not False
        return {
            "ipv4Address": f"203.0.113.{number % 250}" if v4 else "",
            "ipv6Address": f"2001:db8::{number:x}" if v6 else "",
            "networks": [
                {
                    "networkId": int(str(n["subnetId"]).split("-")[0]),
                    "subnetId": n["subnetId"],
                    "ip": n["ip"],
                    "aliasIps": [],
                }
                for n in inputs.get("networks") or []
            ],
        }

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append(args.token)
        return {}, None


# -- the resource graph as the tests see it --------------------------------------------------------


@dataclass(frozen=True)
class Node:
    urn: str
    type: str
    id: str
    inputs: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def labels(self) -> Mapping[str, str]:
        return self.inputs.get("labels") or {}

    @property
    def tier(self) -> str | None:
        return self.labels.get(TIER_LABEL)

    def __str__(self) -> str:
        return self.urn


@dataclass(frozen=True)
class Attachment:
    network: str  # the network's tierwall.network label
    ip: str
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]

    def of(self, type_: str) -> list[Node]:
        return [n for n in self.nodes if n.type == type_]

    def servers(self, tier: str | None = None) -> list[Node]:
        return [n for n in self.of(SERVER) if tier is None or n.tier == tier]

    def by_id(self, resource_id: Any) -> Node:
        key = str(int(resource_id)) if isinstance(resource_id, float) else str(resource_id)
        matches = [n for n in self.nodes if n.id == key]
        assert len(matches) == 1, f"no single resource with id {key}: {[str(m) for m in matches]}"
        return matches[0]

    def network_by_role(self, role: str) -> Node:
        matches = [n for n in self.of(NETWORK) if n.labels.get(NETWORK_LABEL) == role]
        assert len(matches) == 1, f"expected one {role} network, got {[str(m) for m in matches]}"
        return matches[0]

    def attachments(self, server: Node) -> list[Attachment]:
        result = []
        for entry in server.inputs.get("networks") or []:
            subnet = self.by_id(entry["subnetId"])
            network = self.by_id(subnet.inputs["networkId"])
            result.append(Attachment(network.labels.get(NETWORK_LABEL, "?"), entry["ip"], entry))
        return result


@contextmanager
def recording_resources() -> Iterator[list[pulumi.Resource]]:
    """Every resource the program constructs, wherever it sits in the component tree.

    Components without a parent are not children of the root stack, so walking the tree from
    the root would miss them; recording the constructor calls misses nothing. Each resource's
    options are kept in ``OPTIONS`` (the SDK keeps no parent link to compute aliases from).
    """
    created: list[pulumi.Resource] = []
    original = pulumi.Resource.__init__
    signature = inspect.signature(original)

    def record(self: pulumi.Resource, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        OPTIONS[self] = signature.bind(self, *args, **kwargs).arguments.get("opts")
        created.append(self)

    pulumi.Resource.__init__ = record  # type: ignore[method-assign]
    try:
        yield created
    finally:
        pulumi.Resource.__init__ = original  # type: ignore[method-assign]


OPTIONS: weakref.WeakKeyDictionary[pulumi.Resource, pulumi.ResourceOptions | None] = (
    weakref.WeakKeyDictionary()
)


class EngineUrnMonitor(MockMonitor):
    """The mock monitor, with URNs built as the Pulumi engine builds them.

    The engine leaves the root stack's type out of a URN and keeps every other ancestor's type
    (``tierwall:tier:Database$hcloud:index/server:Server::db-1``); the stock mock prefixes
    top-level components with ``pulumi:pulumi:Stack$``. Alias URNs, which the SDK derives from
    the parents' URNs, only compare with real stacks' URNs when the format is the engine's.
    """

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        if parent:
            qualified = parent.split("::")[2]
            if qualified != "pulumi:pulumi:Stack":
                type_ = f"{qualified}${type_}"
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])


@contextmanager
def engine_config(values: Mapping[str, str]) -> Iterator[None]:
    """PULUMI_CONFIG holds ``values`` while the block runs, as the CLI's Python language host sets it."""
    previous = os.environ.get("PULUMI_CONFIG")
    os.environ["PULUMI_CONFIG"] = json.dumps(values)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PULUMI_CONFIG"]
        else:
            os.environ["PULUMI_CONFIG"] = previous


class ProgramRun:
    """One run of infra/pulumi/__main__.py under fresh mocks, a fresh root stack and its config."""

    def __init__(self, config: Mapping[str, Any], stack: str = STACK) -> None:
        self.config = dict(config)
        self.stack = stack
        self.mocks = HetznerMocks()
        self.monitor = EngineUrnMonitor(self.mocks)
        self.created: list[pulumi.Resource] = []
        self.outputs: dict[str, Any] = {}

    def execute(self) -> ProgramRun:
        """Call inside a ``@pulumi.runtime.test`` function: the runtime then drains its RPCs."""
        # A new root stack for every run (its outputs start empty), then mocks and config.
        pulumi.runtime.reset_options(project="tierwall", stack=self.stack, preview=False)
        pulumi.runtime.set_mocks(
            self.mocks, project="tierwall", stack=self.stack, preview=False, monitor=self.monitor
        )
        # The config arrives as the Pulumi CLI passes it: the whole map in PULUMI_CONFIG, nothing
        # set in the runtime's own map (which a previous test may have filled).
        pulumi.runtime.set_all_config({})
        with recording_resources() as created, engine_config(engine_values(self.config)):
            # runpy executes __main__.py afresh on every run (an import would be cached), with the
            # program's folder on sys.path as the Pulumi CLI's Python executor does.
            runpy.run_path(str(PROGRAM_DIR), run_name="__main__")
        self.created = created
        root = pulumi.runtime.settings.get_root_resource()
        self.outputs = dict(root.outputs)  # type: ignore[union-attr]
        return self

    def graph(self) -> pulumi.Output[Graph]:
        """Resolves once every custom resource is registered, to what the program asked for."""
        custom = [r for r in self.created if isinstance(r, pulumi.CustomResource)]
        return pulumi.Output.all(*(r.urn for r in custom)).apply(self._graph_of)

    def _graph_of(self, urns: list[str]) -> Graph:
        registered = self.monitor.get_registered_resources()
        nodes = []
        for urn in urns:
            registration = registered[urn]
            type_ = urn.split("::")[2].split("$")[-1]
            nodes.append(Node(urn, type_, registration.id, self.mocks.inputs_by_id[registration.id]))
        return Graph(tuple(nodes))

    def check(self, assertion: Callable[[Graph], None]) -> pulumi.Output[None]:
        return self.graph().apply(assertion)

    def check_outputs(self, assertion: Callable[[Graph, dict[str, Any]], None]) -> pulumi.Output[None]:
        return pulumi.Output.all(self.graph(), pulumi.Output.from_input(self.outputs)).apply(
            lambda values: assertion(values[0], values[1])
        )

    def topology(self) -> Topology:
        return build_topology(app_count=self.config.get("appCount", 2))


@pytest.fixture(autouse=True)
def _no_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program reads PULUMI_CONFIG (the CLI's channel); a stray one must not leak in."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)


# -- NET-01 / NET-02: only the proxy has a public address ------------------------------------------

PRIVATE = [{"ipv4Enabled": False, "ipv6Enabled": False}]
PUBLIC = [{"ipv4Enabled": True, "ipv6Enabled": True}]


def _assert_public_nets(graph: Graph, expected_counts: Mapping[str, int]) -> None:
    for tier, count in expected_counts.items():
        servers = graph.servers(tier)
        assert len(servers) == count, f"expected {count} {tier} server(s), got {[str(s) for s in servers]}"
    for server in graph.servers():
        expected = PUBLIC if server.tier == PROXY else PRIVATE
        assert server.inputs.get("publicNets") == expected, (
            f"{server}: publicNets {server.inputs.get('publicNets')}, expected {expected} "
            "(omitting it gives a server public IPv4 and IPv6)"
        )


@pytest.mark.control("NET-01")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_db_server_has_no_public_address(app_count: int) -> pulumi.Output[None]:
    """The db is created with public IPv4 and IPv6 explicitly disabled: the internet can't address it."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()

    def check(graph: Graph) -> None:
        _assert_public_nets(graph, {DB: 1})
        for db in graph.servers(DB):
            primary_ips = {"ipv4", "ipv6"} & set(db.inputs)
            assert not primary_ips, f"{db}: primary IP(s) {sorted(primary_ips)} assigned"

    return run.check(check)


@pytest.mark.control("NET-02")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_app_servers_have_private_addresses_only(app_count: int) -> pulumi.Output[None]:
    """App servers have no public address and sit on frontend and backend at the topology's addresses."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()
    topology = run.topology()

    def check(graph: Graph) -> None:
        _assert_public_nets(graph, {PROXY: 1, APP: app_count, DB: 1})
        for server in graph.servers(APP):
            host = topology.host(server.name)
            got = {a.network: a.ip for a in graph.attachments(server)}
            expected = {i.network: str(i.address) for i in host.interfaces}
            assert got == expected, f"{server}: attached {got}, the topology says {expected}"
            for attachment in graph.attachments(server):
                assert attachment.entry.get("aliasIps") == [], f"{server}: set alias_ips=[] to avoid churn"
                assert "networkId" not in attachment.entry, f"{server}: attach with subnet_id, not network_id"

    return run.check(check)


@pytest.mark.control("NET-02")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_the_management_host_has_a_private_address_only(app_count: int) -> pulumi.Output[None]:
    """One management server, no public address, on the frontend at the topology's address, behind
    no Cloud Firewall (it has no public interface to filter)."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()
    topology = run.topology()

    def check(graph: Graph) -> None:
        _assert_public_nets(graph, {PROXY: 1, APP: app_count, DB: 1, MGMT: 1})
        (mgmt,) = graph.servers(MGMT)
        primary_ips = {"ipv4", "ipv6"} & set(mgmt.inputs)
        assert not primary_ips, f"{mgmt}: primary IP(s) {sorted(primary_ips)} assigned"
        got = {a.network: a.ip for a in graph.attachments(mgmt)}
        expected = {i.network: str(i.address) for i in topology.host(mgmt.name).interfaces}
        assert got == expected == {"frontend": "10.10.1.40"}, f"{mgmt}: attached {got}"
        assert not mgmt.inputs.get("firewallIds"), f"{mgmt}: firewalls {mgmt.inputs.get('firewallIds')}"

    return run.check(check)


# -- NET-03: the tiers on two networks; the db on the backend only ---------------------------------


@pytest.mark.control("NET-03")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_db_is_on_the_backend_network_only(app_count: int) -> pulumi.Output[None]:
    """The db is on backend only; backend carries only app and db; proxy and mgmt are on frontend only."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()
    topology = run.topology()

    def check(graph: Graph) -> None:
        for server in graph.servers():
            host = topology.host(server.name)
            got = {a.network: a.ip for a in graph.attachments(server)}
            expected = {i.network: str(i.address) for i in host.interfaces}
            assert got == expected, f"{server}: attached {got}, the topology says {expected}"
        (db,) = graph.servers(DB)
        assert [a.network for a in graph.attachments(db)] == ["backend"], f"{db}: not on backend only"
        (mgmt,) = graph.servers(MGMT)
        assert [a.network for a in graph.attachments(mgmt)] == ["frontend"], f"{mgmt}: not on frontend only"
        on_backend = {
            s.tier for s in graph.servers() if "backend" in {a.network for a in graph.attachments(s)}
        }
        assert on_backend == {APP, DB}, f"the backend network carries {sorted(on_backend)}, not app and db"
        for proxy in graph.servers(PROXY):
            assert [a.network for a in graph.attachments(proxy)] == ["frontend"], (
                f"{proxy}: not frontend only"
            )
        assert not graph.of(SERVER_NETWORK), "attach servers inline only (mixing with ServerNetwork churns)"

    return run.check(check)


# -- NET-04: the only firewall, on the proxy, opens 80/443 and admin SSH ---------------------------


@pytest.mark.control("NET-04")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_only_the_proxy_firewall_exists_and_opens_web_and_admin_ssh(app_count: int) -> pulumi.Output[None]:
    """Exactly one Cloud Firewall: inbound tcp 80/443 from anywhere, tcp 22 from the admin CIDRs only."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()

    def check(graph: Graph) -> None:
        firewalls = graph.of(FIREWALL)
        assert len(firewalls) == 1, f"expected one firewall, got {[str(f) for f in firewalls]}"
        (firewall,) = firewalls
        rules = sorted(
            (r["direction"], r["protocol"], r["port"], sorted(r["sourceIps"]))
            for r in firewall.inputs["rules"]
        )
        expected = sorted(
            [
                ("in", "tcp", "22", sorted(ADMIN_CIDRS)),
                ("in", "tcp", "443", sorted(ANYWHERE)),
                ("in", "tcp", "80", sorted(ANYWHERE)),
            ]
        )
        assert rules == expected, f"{firewall}: rules {rules}, expected exactly {expected}"
        assert not firewall.inputs.get("applyTos"), f"{firewall}: attach through the proxy's firewall_ids"
        assert not graph.of(FIREWALL_ATTACHMENT), (
            "no FirewallAttachment: the proxy gets its firewall at creation"
        )
        for server in graph.servers():
            attached = [graph.by_id(i).urn for i in server.inputs.get("firewallIds") or []]
            expected_ids = [firewall.urn] if server.tier == PROXY else []
            assert attached == expected_ids, f"{server}: firewalls {attached}, expected {expected_ids}"

    return run.check(check)


# -- NET-07: no route at all, so none to the internet on the backend -------------------------------


@pytest.mark.control("NET-07")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_no_network_has_a_route(app_count: int) -> pulumi.Output[None]:
    """Two networks with the topology's ranges, one eu-central cloud subnet each, and no route."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()
    topology = run.topology()

    def check(graph: Graph) -> None:
        routes = graph.of(ROUTE)
        assert not routes, f"{[str(r) for r in routes]}: no NetworkRoute may exist (0.0.0.0/0 on backend!)"
        networks = graph.of(NETWORK)
        assert len(networks) == 2, f"expected frontend and backend, got {[str(n) for n in networks]}"
        for network in topology.networks:
            node = graph.network_by_role(network.name)
            assert node.inputs["ipRange"] == str(network.cidr), f"{node}: ipRange {node.inputs['ipRange']}"
            subnets = [s for s in graph.of(SUBNET) if graph.by_id(s.inputs["networkId"]) == node]
            assert len(subnets) == 1, f"{node}: expected one subnet, got {[str(s) for s in subnets]}"
            (subnet,) = subnets
            assert (subnet.inputs["type"], subnet.inputs["networkZone"], subnet.inputs["ipRange"]) == (
                "cloud",
                "eu-central",
                str(network.cidr),
            ), f"{subnet}: {subnet.inputs}"

    return run.check(check)


# -- LOC-01: hosted in Germany ---------------------------------------------------------------------


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize("location", sorted(ALLOWED_LOCATIONS))
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_every_server_and_volume_is_in_germany(app_count: int, location: str) -> pulumi.Output[None]:
    """Every server and volume is placed by location (fsn1/nbg1), never by zone or datacenter."""
    run = ProgramRun(stack_config(appCount=app_count, location=location)).execute()
    topology = run.topology()

    def check(graph: Graph) -> None:
        located = graph.servers() + graph.of(VOLUME)
        # One server per host of the topology, and the db's volume.
        assert sorted(s.name for s in graph.servers()) == sorted(h.name for h in topology.hosts), (
            f"unexpected servers: {[str(n) for n in graph.servers()]}"
        )
        assert len(located) == len(topology.hosts) + 1, f"unexpected volumes: {[str(n) for n in located]}"
        for node in located:
            assert node.inputs.get("location") == location, f"{node}: location {node.inputs.get('location')}"
            assert node.inputs["location"] in ALLOWED_LOCATIONS, f"{node}: not in Germany"
            assert "datacenter" not in node.inputs, f"{node}: datacenter is deprecated, use location"

    return run.check(check)


# -- ENC-01: the db volume is ready for LUKS; the db is protected ----------------------------------


@pytest.mark.control("ENC-01")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_db_server_is_delete_and_rebuild_protected(app_count: int) -> pulumi.Output[None]:
    """Hetzner refuses to delete or rebuild the db server, and the management host that keeps the
    audit trail, until someone lifts the protection; the replaceable proxy and app servers are not."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()

    def check(graph: Graph) -> None:
        assert graph.servers(DB), [str(s) for s in graph.servers()]
        assert graph.servers(MGMT), [str(s) for s in graph.servers()]
        for server in graph.servers():
            protected = server.tier in (DB, MGMT)
            got = (server.inputs.get("deleteProtection"), server.inputs.get("rebuildProtection"))
            assert got == (protected, protected), f"{server}: delete/rebuild protection {got}"

    return run.check(check)


@pulumi.runtime.test
def test_no_server_is_replaced_for_what_acts_only_at_creation() -> pulumi.Output[None]:
    """A new image (a release upgrade moves servers in place), new operator keys or new user data
    would otherwise replace every server, and fail on the delete-protected db."""
    run = ProgramRun(stack_config(appCount=2)).execute()
    servers = [r for r in run.created if type(r).__name__ == "Server"]
    assert len(servers) == len(run.topology().hosts), servers
    for server in servers:
        options = OPTIONS[server]
        assert options is not None, server
        assert {"image", "ssh_keys", "user_data"} <= set(options.ignore_changes or ()), options.ignore_changes
    return pulumi.Output.from_input(None)


@pytest.mark.control("ENC-01")
@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_db_volume_is_unformatted_delete_protected_and_attached(app_count: int) -> pulumi.Output[None]:
    """One volume, unformatted (LUKS2 goes on it) and never automounted, delete-protected, on the db."""
    run = ProgramRun(stack_config(appCount=app_count, dbVolumeSize=40)).execute()

    def check(graph: Graph) -> None:
        volumes = graph.of(VOLUME)
        assert len(volumes) == 1, f"expected one volume, got {[str(v) for v in volumes]}"
        (volume,) = volumes
        assert "format" not in volume.inputs, (
            f"{volume}: format={volume.inputs.get('format')} (LUKS goes on it)"
        )
        assert volume.inputs.get("automount") is not True, f"{volume}: automount"
        assert volume.inputs.get("deleteProtection") is True, f"{volume}: not delete-protected"
        assert volume.inputs.get("size") == 40, f"{volume}: size {volume.inputs.get('size')}"
        assert volume.tier == DB, f"{volume}: labels {volume.labels}"
        (db,) = graph.servers(DB)
        assert volume.inputs["location"] == db.inputs["location"], f"{volume}: not where {db} is"
        attachments = graph.of(VOLUME_ATTACHMENT)
        assert len(attachments) == 1, f"expected one attachment, got {[str(a) for a in attachments]}"
        (attachment,) = attachments
        assert graph.by_id(attachment.inputs["volumeId"]) == volume, f"{attachment}: attaches another volume"
        assert graph.by_id(attachment.inputs["serverId"]) == db, f"{attachment}: not attached to {db}"
        assert attachment.inputs.get("automount") is not True, f"{attachment}: automount"

    return run.check(check)


# -- every server's common settings ----------------------------------------------------------------


@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_servers_carry_labels_type_image_keys_and_placement(app_count: int) -> pulumi.Output[None]:
    """Labels name tier and stack (the policy pack reads them); types per tier; spread groups."""
    run = ProgramRun(stack_config(appCount=app_count, image="debian-13")).execute()

    def check(graph: Graph) -> None:
        keys = graph.of(SSH_KEY)
        assert sorted(k.inputs["publicKey"] for k in keys) == sorted(KEYS), (
            "one hcloud SshKey per operator key"
        )
        for server in graph.servers():
            tier = server.tier
            assert server.labels == {TIER_LABEL: tier, STACK_LABEL: STACK}, (
                f"{server}: labels {server.labels}"
            )
            assert server.inputs["serverType"] == SERVER_TYPES[tier], (
                f"{server}: {server.inputs['serverType']}"
            )
            assert server.inputs["image"] == "debian-13", f"{server}: image {server.inputs['image']}"
            assert server.inputs["name"] == f"tierwall-{STACK}-{server.name}", f"{server}: Hetzner name"
            assert sorted(server.inputs["sshKeys"]) == sorted(k.id for k in keys), f"{server}: ssh keys"
            group_id = server.inputs.get("placementGroupId")
            if tier in (DB, MGMT):
                # One host each: a spread group has nothing to spread.
                assert group_id is None, f"{server}: in placement group {group_id}"
                continue
            assert group_id is not None, f"{server}: no placement group"
            group = graph.by_id(group_id)
            assert (group.inputs["type"], group.tier) == ("spread", tier), (
                f"{server}: in {group} {group.inputs}"
            )

    return run.check(check)


@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_user_data_creates_the_ops_user(app_count: int) -> pulumi.Output[None]:
    """cloud-init creates the key-only ops user (the operators' keys) and disables root, everywhere."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()

    def check(graph: Graph) -> None:
        for server in graph.servers():
            text = server.inputs["userData"]
            assert text.startswith("#cloud-config\n"), f"{server}: user data is not a cloud-config"
            document = yaml.safe_load(text)
            users = {u["name"]: u for u in document["users"]}
            assert set(users) == {"ops"}, f"{server}: users {sorted(users)}"
            ops = users["ops"]
            assert ops["ssh_authorized_keys"] == KEYS, f"{server}: ops keys {ops['ssh_authorized_keys']}"
            assert ops["lock_passwd"] is True, f"{server}: ops has a usable password"
            assert document["disable_root"] is True, f"{server}: root login stays enabled"
            assert document["ssh_pwauth"] is False, f"{server}: password login stays enabled"

    return run.check(check)


# -- the stack outputs -----------------------------------------------------------------------------

OUTPUT_KEYS = {
    "stack",
    "location",
    "domain",
    "admin_cidrs",
    "app_port",
    "networks",
    "hosts",
    "db_volume_id",
    "db_volume_linux_device",
    "verify_ssh_public_key",
    "backup_repositories",
    "backup_retention_days",
}


@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_outputs_have_the_documented_shape(app_count: int) -> pulumi.Output[None]:
    """The outputs tierwall.inventory reads: names, types, the real addresses, and they round-trip."""
    run = ProgramRun(stack_config(appCount=app_count)).execute()
    topology = run.topology()

    def check(graph: Graph, outputs: dict[str, Any]) -> None:
        where = f"urn:pulumi:{STACK}::tierwall::pulumi:pulumi:Stack::tierwall-{STACK} outputs"
        assert set(outputs) == OUTPUT_KEYS, f"{where}: keys {sorted(outputs)}"
        assert (outputs["stack"], outputs["location"], outputs["domain"]) == (
            STACK,
            "fsn1",
            "notes.example.org",
        )
        assert outputs["admin_cidrs"] == ADMIN_CIDRS, f"{where}: admin_cidrs {outputs['admin_cidrs']}"
        assert type(outputs["app_port"]) is int, f"{where}: app_port {outputs['app_port']!r} is not an int"
        assert outputs["app_port"] == 8443, f"{where}: app_port {outputs['app_port']}"
        # Where the backups go, as the inventory needs them (the region defaults to the location).
        assert outputs["backup_repositories"] == [
            {"location": r["location"], "endpoint": r["endpoint"], "bucket": r["bucket"],
             "region": r.get("region", r["location"]), "ca_file": r.get("caFile", "")}
            for r in BACKUP_REPOSITORIES
        ], f"{where}: backup_repositories {outputs['backup_repositories']}"
        assert outputs["backup_retention_days"] == 7, f"{where}: {outputs['backup_retention_days']}"
        for network in topology.networks:
            exported = outputs["networks"][network.name]
            node = graph.network_by_role(network.name)
            assert exported == {"id": node.id, "cidr": str(network.cidr)}, f"{node}: exported as {exported}"
        assert set(outputs["hosts"]) == {h.name for h in topology.hosts}, (
            f"{where}: hosts {sorted(outputs['hosts'])}"
        )
        for host in topology.hosts:
            exported = outputs["hosts"][host.name]
            expected_ips = {i.network: str(i.address) for i in host.interfaces}
            assert exported["tier"] == host.tier, f"{where}: hosts.{host.name}.tier {exported['tier']}"
            assert exported["private_ips"] == expected_ips, f"{where}: hosts.{host.name} {exported}"
            public_keys = {"public_ipv4", "public_ipv6"} & set(exported)
            if host.tier == PROXY:
                assert public_keys == {"public_ipv4", "public_ipv6"}, f"{where}: hosts.{host.name} {exported}"
                assert ipaddress.ip_address(exported["public_ipv4"]).version == 4
                assert ipaddress.ip_address(exported["public_ipv6"]).version == 6
            else:
                assert not public_keys, f"{where}: hosts.{host.name} exports a public address"
        (volume,) = graph.of(VOLUME)
        assert outputs["db_volume_id"] == volume.id, f"{volume}: exported as {outputs['db_volume_id']}"
        assert outputs["db_volume_linux_device"].endswith(f"HC_Volume_{volume.id}"), f"{volume}: linux device"
        # What `pulumi stack output --json` prints is what the inventory generator reads.
        recorded = json.loads(json.dumps(outputs))
        assert topology_from_outputs(recorded).as_dict() == topology.as_dict(), f"{where}: topology differs"
        assert set(proxy_public_from_outputs(recorded)) == {h.name for h in topology.hosts_in(PROXY)}

    return run.check_outputs(check)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pulumi.runtime.test
def test_recorded_outputs_fixture_has_the_programs_shape() -> pulumi.Output[None]:
    """The fixture tests/unit/test_inventory.py reads looks exactly like this program's outputs."""
    recorded = load_outputs(FIXTURE)
    run = ProgramRun(
        stack_config(appCount=2, adminCidrs=recorded["admin_cidrs"], appPort=recorded["app_port"])
    ).execute()

    def check(graph: Graph, outputs: dict[str, Any]) -> None:
        assert _shape(recorded) == _shape(outputs), f"{FIXTURE}: {_shape(recorded)} != {_shape(outputs)}"

    return run.check_outputs(check)


def test_recorded_outputs_fixture_is_a_consistent_prod_stack() -> None:
    """The fixture matches build_topology(app_count=2) and uses documentation address ranges only."""
    recorded = load_outputs(FIXTURE)
    assert topology_from_outputs(recorded).as_dict() == build_topology(app_count=2).as_dict()
    assert (recorded["stack"], recorded["location"], recorded["domain"]) == (
        "prod",
        "fsn1",
        "notes.example.org",
    )
    assert recorded["admin_cidrs"] == ["198.51.100.7/32"]
    # The example stack's repositories, as the program exports them.
    example = load_stack_file(REPO / "Pulumi.example.yaml")
    assert recorded["backup_repositories"] == [
        {"location": r.location, "endpoint": r.endpoint, "bucket": r.bucket, "region": r.region,
         "ca_file": r.ca_file}
        for r in example.backup_repositories
    ]  # fmt: skip
    assert recorded["backup_retention_days"] == example.backup_retention_days
    proxy = recorded["hosts"]["proxy-1"]
    assert (proxy["public_ipv4"], proxy["public_ipv6"]) == ("203.0.113.10", "2001:db8::1")
    documentation = [
        ipaddress.ip_network(n)
        for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    ]
    for address in (proxy["public_ipv4"], proxy["public_ipv6"], *recorded["admin_cidrs"]):
        network = ipaddress.ip_network(address, strict=False)
        assert any(network.version == d.version and network.subnet_of(d) for d in documentation), address  # type: ignore[arg-type]
    assert recorded["db_volume_linux_device"] == f"/dev/disk/by-id/scsi-0HC_Volume_{recorded['db_volume_id']}"


# -- the checks themselves can fail, and a bad config stops everything -----------------------------


def test_a_false_assertion_in_a_graph_check_fails() -> None:
    """Guards every test above: an assertion inside ProgramRun.check is awaited and fails the test."""

    def deliberately_false(graph: Graph) -> None:
        (db,) = graph.servers(DB)
        assert db.inputs["publicNets"] == PUBLIC, f"{db}: deliberately false"

    @pulumi.runtime.test
    def must_fail() -> pulumi.Output[None]:
        return ProgramRun(stack_config()).execute().check(deliberately_false)

    with pytest.raises(
        AssertionError, match=r"urn:pulumi:prod::tierwall::.*Server::db-1: deliberately false"
    ):
        must_fail()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        pytest.param(
            {"location": "hel1"}, "tierwall:location", marks=pytest.mark.control("LOC-01"), id="hel1"
        ),
        pytest.param({"appCont": 3}, "tierwall:appCont", id="unknown-key"),
        pytest.param(
            {"adminCidrs": ["0.0.0.0/0"]},
            "tierwall:adminCidrs",
            marks=pytest.mark.control("NET-04"),
            id="ssh-to-all",
        ),
    ],
)
def test_invalid_config_stops_the_program_before_any_resource(override: dict[str, Any], key: str) -> None:
    """The whole config is validated first: the error names the key, and nothing is registered."""
    run = ProgramRun(stack_config(**override))

    @pulumi.runtime.test
    def deploy() -> None:
        run.execute()

    with pytest.raises(pulumi.RunError) as info:
        deploy()
    assert f"{key}:" in str(info.value)
    assert run.created == []
    assert run.mocks.inputs_by_id == {}
    assert run.monitor.get_registered_resources() == {}


def test_without_the_clis_whole_config_map_the_program_refuses() -> None:
    """Config set only in the runtime's map (an inline Automation API program) is not enough.

    Unknown keys can only be found in the whole map the CLI passes in PULUMI_CONFIG; without it the
    program stops before any resource rather than deploy with the unknown-key check skipped.
    """
    run = ProgramRun(stack_config(appCont=3))

    @pulumi.runtime.test
    def deploy() -> None:
        pulumi.runtime.reset_options(project="tierwall", stack=STACK, preview=False)
        pulumi.runtime.set_mocks(
            run.mocks, project="tierwall", stack=STACK, preview=False, monitor=run.monitor
        )
        pulumi.runtime.set_all_config(engine_values(run.config))
        try:
            runpy.run_path(str(PROGRAM_DIR), run_name="__main__")
        finally:
            pulumi.runtime.set_all_config({})

    with pytest.raises(pulumi.RunError, match="PULUMI_CONFIG is not set"):
        deploy()
    assert run.monitor.get_registered_resources() == {}


def test_a_stack_name_hetzner_cannot_use_is_refused() -> None:
    """The stack name becomes part of server names and label values: refused before any resource."""
    run = ProgramRun(stack_config(), stack="Prod_EU")

    @pulumi.runtime.test
    def deploy() -> None:
        run.execute()

    with pytest.raises(pulumi.RunError, match="stack name 'Prod_EU'"):
        deploy()
    assert run.created == []


# -- the program's own graph passes the policy pack ------------------------------------------------


def _policies() -> ModuleType:
    # The pack's folder is on sys.path when `pulumi preview --policy-pack infra/policy` runs it.
    sys.path.insert(0, str(POLICY_DIR))
    try:
        return importlib.import_module("policies")
    finally:
        sys.path.remove(str(POLICY_DIR))


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _stack_args(graph: Graph) -> StackValidationArgs:
    """What the engine would hand the stack policies, dependencies rebuilt from the ids."""
    resources = {
        n.urn: PolicyResource(n.type, n.inputs, n.urn, n.name, _options(), None, None, [], {})
        for n in graph.nodes
    }
    for node in graph.nodes:
        deps = resources[node.urn].property_dependencies
        if node.type == SERVER:
            deps["networks"] = [
                resources[graph.by_id(e["subnetId"]).urn] for e in node.inputs.get("networks") or []
            ]
        if node.type in (SUBNET, ROUTE):
            deps["networkId"] = [resources[graph.by_id(node.inputs["networkId"]).urn]]
    return StackValidationArgs(list(resources.values()))


@pytest.mark.parametrize("app_count", APP_COUNTS)
@pulumi.runtime.test
def test_the_programs_graph_passes_every_policy(app_count: int) -> pulumi.Output[None]:
    """The policy pack and the program agree (labels, property names): no policy objects."""
    policies = _policies()
    run = ProgramRun(stack_config(appCount=app_count)).execute()

    def check(graph: Graph) -> None:
        violations: list[str] = []
        for policy in policies.POLICIES:
            if isinstance(policy, policies.StackValidationPolicy):
                policy.validate(
                    _stack_args(graph), lambda m, u=None, p=policy.name: violations.append(f"{u} {p}: {m}")
                )
                continue
            for node in graph.nodes:
                args = ResourceValidationArgs(
                    node.type, node.inputs, node.urn, node.name, _options(), None, {"adminCidrs": ADMIN_CIDRS}
                )
                policy.validate(
                    args, lambda m, u=None, p=policy.name, n=node.urn: violations.append(f"{n} {p}: {m}")
                )
        assert violations == [], "\n".join(violations)

    return run.check(check)


# -- resource identity: child names, aliases, type renames -----------------------------------------

# The URNs of a prod stack (two app servers) deployed before children were named from their
# component. Every one must stay in the program's graph, as a URN or as an alias of one: anything
# else is a resource `pulumi up` would create anew and delete (the db server and volume included).
DEPLOYED_URNS = (
    "urn:pulumi:prod::tierwall::tierwall:access:OperatorKeys::operators",
    "urn:pulumi:prod::tierwall::tierwall:tier:App::app",
    "urn:pulumi:prod::tierwall::tierwall:tier:Database::db",
    "urn:pulumi:prod::tierwall::tierwall:tier:Networks::networks",
    "urn:pulumi:prod::tierwall::tierwall:tier:Proxy::proxy",
    "urn:pulumi:prod::tierwall::tierwall:access:OperatorKeys$hcloud:index/sshKey:SshKey::operator-1",
    "urn:pulumi:prod::tierwall::tierwall:access:OperatorKeys$hcloud:index/sshKey:SshKey::operator-2",
    "urn:pulumi:prod::tierwall::tierwall:tier:App$hcloud:index/placementGroup:PlacementGroup::app",
    "urn:pulumi:prod::tierwall::tierwall:tier:App$hcloud:index/server:Server::app-1",
    "urn:pulumi:prod::tierwall::tierwall:tier:App$hcloud:index/server:Server::app-2",
    "urn:pulumi:prod::tierwall::tierwall:tier:Database$hcloud:index/server:Server::db-1",
    "urn:pulumi:prod::tierwall::tierwall:tier:Database$hcloud:index/volume:Volume::db-1-data",
    "urn:pulumi:prod::tierwall::tierwall:tier:Database$hcloud:index/volumeAttachment:VolumeAttachment::db-1-data",
    "urn:pulumi:prod::tierwall::tierwall:tier:Networks$hcloud:index/network:Network::backend",
    "urn:pulumi:prod::tierwall::tierwall:tier:Networks$hcloud:index/network:Network::frontend",
    "urn:pulumi:prod::tierwall::tierwall:tier:Networks$hcloud:index/networkSubnet:NetworkSubnet::backend-subnet",
    "urn:pulumi:prod::tierwall::tierwall:tier:Networks$hcloud:index/networkSubnet:NetworkSubnet::frontend-subnet",
    "urn:pulumi:prod::tierwall::tierwall:tier:Proxy$hcloud:index/firewall:Firewall::proxy-public",
    "urn:pulumi:prod::tierwall::tierwall:tier:Proxy$hcloud:index/placementGroup:PlacementGroup::proxy",
    "urn:pulumi:prod::tierwall::tierwall:tier:Proxy$hcloud:index/server:Server::proxy-1",
)
DB_CHILD_URNS = tuple(u for u in DEPLOYED_URNS if "tierwall:tier:Database$" in u)


def _program_module(name: str) -> ModuleType:
    """A module of infra/pulumi, the same object the program's own imports get (sys.modules)."""
    sys.path.insert(0, str(PROGRAM_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(PROGRAM_DIR))


def _alias_urns(resource: pulumi.Resource) -> pulumi.Output[list[str]]:
    """The alias URNs the SDK derives for ``resource``: its own and those inherited from its parent.

    This is pulumi.runtime.resource.all_aliases, the SDK's rule (a child named ``<parent>-x`` follows
    a renamed parent; a retyped parent carries its children along), applied to engine-format URNs.
    """
    opts = OPTIONS.get(resource) or pulumi.ResourceOptions()
    urns = all_aliases(opts.aliases, resource._name, resource._type, opts.parent)
    return pulumi.Output.all(*urns)


def _urns_and_aliases(resources: list[pulumi.Resource]) -> pulumi.Output[list[Any]]:
    return pulumi.Output.all(
        pulumi.Output.all(*(r.urn for r in resources)), *(_alias_urns(r) for r in resources)
    )


@pulumi.runtime.test
def test_a_deployed_stack_keeps_every_resource() -> pulumi.Output[None]:
    """Every URN of a stack deployed before this naming rule is a URN or an alias of the graph.

    The db's children keep their URNs outright; networks, subnets and the keys' component are
    kept by aliases. No alias is claimed twice (the engine refuses that). What this does not prove:
    the engine's own matching against a state file, which needs the Pulumi CLI.
    """
    run = ProgramRun(stack_config(appCount=2)).execute()

    def check(values: list[Any]) -> None:
        urns, *aliases = values
        claimed = [alias for group in aliases for alias in group]
        assert len(claimed) == len(set(claimed)), f"an alias is claimed twice: {sorted(claimed)}"
        lost = sorted(set(DEPLOYED_URNS) - set(urns) - set(claimed))
        assert not lost, "resources pulumi up would replace:\n" + "\n".join(lost)
        renamed = sorted(set(DB_CHILD_URNS) - set(urns))
        assert not renamed, f"db children no longer under their own URNs: {renamed}"

    return _urns_and_aliases(run.created).apply(check)


@pytest.mark.parametrize(
    ("previous_types", "kept"),
    [pytest.param(("tierwall:tier:Database",), True, id="alias"), pytest.param((), False, id="no-alias")],
)
def test_renaming_the_db_tiers_type_keeps_its_server_and_volume(
    monkeypatch: pytest.MonkeyPatch, previous_types: tuple[str, ...], kept: bool
) -> None:
    """A new type token for the db tier, with its old one in PREVIOUS_TYPES, keeps server and volume.

    The renamed component's children get new URNs (``tierwall:tier:PostgresDatabase$...``); with
    the alias, the URNs the SDK derives for them include every old db child URN, which is what the
    engine looks up in the state. Without it (the control case) none does: a rename would replace
    the delete-protected server and volume. It does not run the engine's state lookup itself.
    """
    db_tier = _program_module("db_tier")
    renamed = type(
        "RenamedDatabaseTier",
        (db_tier.DatabaseTier,),
        {"TYPE": "tierwall:tier:PostgresDatabase", "PREVIOUS_TYPES": previous_types},
    )
    monkeypatch.setattr(db_tier, "DatabaseTier", renamed)

    def check(values: list[Any]) -> None:
        urns, *aliases = values
        assert len(urns) == len(DB_CHILD_URNS), f"db children: {urns}"
        assert not set(urns) & set(DB_CHILD_URNS), f"the new type left URNs unchanged: {urns}"
        claimed = {alias for group in aliases for alias in group}
        if kept:
            missing = sorted(set(DB_CHILD_URNS) - claimed)
            assert not missing, f"{urns}: no alias to {missing}"
        else:
            assert not set(DB_CHILD_URNS) & claimed, f"{urns}: aliased without PREVIOUS_TYPES"

    @pulumi.runtime.test
    def deploy() -> pulumi.Output[None]:
        run = ProgramRun(stack_config()).execute()
        children = [r for r in run.created if getattr(OPTIONS.get(r), "parent", None).__class__ is renamed]
        return _urns_and_aliases(children).apply(check)

    deploy()


def _declare_twice(component: str, topology: Topology) -> None:
    """Two instances, ``blue`` and ``green``, of one of the program's components."""
    network_tier, host_server = _program_module("network_tier"), _program_module("host_server")
    networks = network_tier.Networks("shared", network_tier.NetworksArgs(stack=STACK, topology=topology))
    common = host_server.ServerCommon(STACK, "fsn1", "debian-12", [], "#cloud-config\n")
    for name in ("blue", "green"):
        if component == "networks":
            network_tier.Networks(name, network_tier.NetworksArgs(stack=STACK, topology=topology))
        elif component == "operator-keys":
            keys = _program_module("operator_keys")
            keys.OperatorKeys(name, keys.OperatorKeysArgs(stack=STACK, public_keys=KEYS))
        elif component == "proxy":
            proxy = _program_module("proxy_tier")
            args = proxy.ProxyTierArgs(
                topology.hosts_in(PROXY), topology, common, "cx23", ADMIN_CIDRS, networks.subnets
            )
            proxy.ProxyTier(name, args)
        elif component == "app":
            app = _program_module("app_tier")
            app.AppTier(name, app.AppTierArgs(topology.hosts_in(APP), common, "cx23", networks.subnets))
        elif component == "mgmt":
            mgmt = _program_module("mgmt_tier")
            mgmt.MgmtTier(name, mgmt.MgmtTierArgs(topology.hosts_in(MGMT), common, "cx23", networks.subnets))
        else:
            db = _program_module("db_tier")
            args = db.DatabaseTierArgs(topology.hosts_in(DB), common, "cx23", 10, networks.subnets)
            db.DatabaseTier(name, args)


@pytest.mark.parametrize("component", ["networks", "operator-keys", "proxy", "app", "db", "mgmt"])
@pulumi.runtime.test
def test_two_instances_of_a_component_never_collide(component: str) -> pulumi.Output[None]:
    """Children are named from their component's name: no URN and no Hetzner name is used twice."""
    mocks = HetznerMocks()
    monitor = EngineUrnMonitor(mocks)
    pulumi.runtime.reset_options(project="tierwall", stack=STACK, preview=False)
    pulumi.runtime.set_mocks(mocks, project="tierwall", stack=STACK, preview=False, monitor=monitor)
    with recording_resources() as created:
        _declare_twice(component, build_topology(app_count=2))
    custom = [r for r in created if isinstance(r, pulumi.CustomResource)]

    def check(urns: list[str]) -> None:
        instances = [u for u in urns if u.rsplit("::", 1)[-1].startswith(("blue", "green"))]
        assert instances, f"{component}: no child named from its component: {urns}"
        assert len(urns) == len(set(urns)), f"{component}: URN used twice: {sorted(urns)}"
        registered = monitor.get_registered_resources()
        names = [mocks.inputs_by_id[registered[u].id].get("name") for u in urns]
        hetzner = [n for n in names if n]
        assert len(hetzner) == len(set(hetzner)), f"{component}: Hetzner name used twice: {sorted(hetzner)}"

    return pulumi.Output.all(*(r.urn for r in custom)).apply(check)

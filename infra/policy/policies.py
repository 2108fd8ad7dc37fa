"""tierwall's security promises as CrossGuard policies, one policy per promise.

Resource policies see a resource's inputs (camelCase property names, as the engine sends them);
stack policies see every resource with its outputs and dependencies, for promises that span
several resources (which network carries the db). Each policy carries its audit control id as a
tag. Unit tests call ``policy.validate(args, report_violation)`` directly; only ``__main__.py``
builds the PolicyPack, because constructing one starts a gRPC server and blocks.
"""

from __future__ import annotations

import ipaddress

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from stack_graph import (
    BACKEND,
    FIREWALL,
    FLOATING_IP,
    LOAD_BALANCER,
    NETWORK,
    PRIMARY_IP,
    ROUTE,
    SERVER,
    TIER_LABEL,
    VOLUME,
    VOLUME_ATTACHMENT,
    network_role,
    networks_named_by,
    reaches_beyond_private,
    server_networks,
    tier_of,
)

from tierwall.config import ALLOWED_LOCATIONS
from tierwall.topology import subnet_of

MANDATORY = EnforcementLevel.MANDATORY
_GERMANY = ", ".join(f"{k} ({v})" for k, v in ALLOWED_LOCATIONS.items())

# -- LOC-01: everything that has a location is in Germany ---------------------------------------

# Resources that hold data or addresses somewhere, and the properties that say where.
_LOCATED = {
    SERVER: "location",
    VOLUME: "location",
    LOAD_BALANCER: "location",
    PRIMARY_IP: "location",
    FLOATING_IP: "homeLocation",
}


def _german_location(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in _LOCATED:
        return
    props = args.props
    location = props.get(_LOCATED[args.resource_type])
    datacenter = props.get("datacenter")  # deprecated spelling, e.g. "fsn1-dc14"
    if datacenter is not None and str(datacenter).split("-")[0] not in ALLOWED_LOCATIONS:
        report(f"{args.name}: datacenter {datacenter!r} is outside Germany; use location {_GERMANY}", None)
    if location is None and datacenter is None:
        if args.resource_type in (VOLUME, FLOATING_IP) and props.get("serverId") is not None:
            return  # created where its server is, and the server's location is checked
        # A network zone is not enough: eu-central includes hel1 (Finland).
        report(f"{args.name}: no location, so Hetzner may choose one outside Germany; set {_GERMANY}", None)
        return
    if location is not None and location not in ALLOWED_LOCATIONS:
        report(f"{args.name}: location {location!r} is outside Germany; allowed: {_GERMANY}", None)


german_locations = ResourceValidationPolicy(
    name="tierwall-german-locations",
    description="Every server, volume, load balancer and IP is in fsn1 or nbg1 (Germany), never hel1.",
    validate=_german_location,
    enforcement_level=MANDATORY,
    tags=["LOC-01"],
)

# -- NET-01 / NET-02: app, db and management servers have no public address ----------------------


def _no_public_address(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SERVER:
        return
    tier = tier_of(args.props)
    if tier == "proxy":
        return
    if tier not in ("app", "db", "mgmt"):
        # Fail closed: a server whose tier is unknown cannot be proven entitled to a public address.
        report(f"server {args.name} has {TIER_LABEL}={tier!r}; label it proxy, app, db or mgmt", None)
        return
    public_nets = args.props.get("publicNets")
    if not public_nets:
        report(
            f"{tier} server {args.name} does not set public_nets, so Hetzner gives it public IPv4 and "
            "IPv6; set ServerPublicNetArgs(ipv4_enabled=False, ipv6_enabled=False)",
            None,
        )
        return
    for entry in public_nets:
        for family in ("ipv4", "ipv6"):
            # The provider's default for *_enabled is true: only an explicit False is private.
            if entry.get(f"{family}Enabled") is not False or entry.get(family) is not None:
                report(f"{tier} server {args.name} has a public {family} address; disable it", None)


app_db_no_public_address = ResourceValidationPolicy(
    name="tierwall-app-db-no-public-address",
    description="App, db and management servers are created with public IPv4 and IPv6 explicitly disabled.",
    validate=_no_public_address,
    enforcement_level=MANDATORY,
    tags=["NET-01", "NET-02"],
)

# -- NET-04: the public firewall opens 80/443 to anyone and 22 to the admins only ---------------

_WEB_PORTS = ("80", "443")
_SSH_PORT = "22"


def _whole_internet(source: str) -> bool:
    """0.0.0.0/0, ::/0 and every other spelling of "everyone" (prefix length 0)."""
    return ipaddress.ip_network(source, strict=False).prefixlen == 0


def _within(source: str, allowed: list[str]) -> bool:
    network = ipaddress.ip_network(source, strict=False)
    for entry in allowed:
        candidate = ipaddress.ip_network(entry, strict=False)
        if subnet_of(network, candidate):
            return True
    return False


def _ssh_sources(where: str, sources: list[str], admin_cidrs: list[str], report: ReportViolation) -> None:
    if not sources:
        report(f"{where}: SSH rule without source_ips; list the admin CIDRs", None)
    for source in sources:
        try:
            everyone = _whole_internet(source)
        except ValueError:
            report(f"{where}: source {source!r} is not a CIDR", None)
            continue
        if everyone:
            report(f"{where}: SSH is open to {source} (the whole internet); allow the admin CIDRs only", None)
        elif admin_cidrs and not _within(source, admin_cidrs):
            report(f"{where}: SSH source {source} is not inside the admin CIDRs {admin_cidrs}", None)


def _public_firewall(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != FIREWALL:
        return
    admin_cidrs = list(args.get_config().get("adminCidrs") or [])
    for index, rule in enumerate(args.props.get("rules") or []):
        if rule.get("direction") != "in":
            continue  # an outbound rule narrows egress; it opens nothing to the internet
        protocol, port = rule.get("protocol"), str(rule.get("port"))
        where = f"firewall {args.name} rule {index} ({protocol}/{port})"
        if protocol == "tcp" and port in _WEB_PORTS:
            continue
        if protocol == "tcp" and port == _SSH_PORT:
            _ssh_sources(where, list(rule.get("sourceIps") or []), admin_cidrs, report)
            continue
        report(f"{where}: only tcp 80 and 443 (from anywhere) and tcp 22 (admin CIDRs) may be opened", None)


public_firewall = ResourceValidationPolicy(
    name="tierwall-public-firewall",
    description="Inbound firewall rules open only tcp 80/443 (anyone) and tcp 22 (admin CIDRs, never /0).",
    validate=_public_firewall,
    enforcement_level=MANDATORY,
    config_schema=PolicyConfigSchema(
        properties={
            "adminCidrs": {
                "type": "array",
                "items": {"type": "string"},
                "description": "If set, SSH sources must lie inside these CIDRs (tierwall:adminCidrs).",
            }
        }
    ),
    tags=["NET-04"],
)

# -- ENC-01: the db volume is ready for LUKS and cannot be deleted by accident -------------------


def _db_volume(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = args.props
    if args.resource_type == VOLUME_ATTACHMENT:
        if props.get("automount") is True:
            report(f"attachment {args.name} automounts; the LUKS volume is opened by the db role", None)
        return
    if args.resource_type != VOLUME:
        return
    tier = tier_of(props)
    if tier is not None and tier != "db":
        return
    # An unlabelled volume is held to the db's standard: every volume here may carry health data.
    if props.get("deleteProtection") is not True:
        report(f"db volume {args.name} lacks delete_protection=True", None)
    if props.get("format") is not None:
        report(
            f"db volume {args.name} has format={props.get('format')!r}: Hetzner would put a plain filesystem "
            "on it; create it unformatted, the db role puts LUKS2 on it",
            None,
        )
    if props.get("automount") is True:
        report(f"db volume {args.name} automounts; the LUKS volume is opened by the db role", None)


db_volume_protected = ResourceValidationPolicy(
    name="tierwall-db-volume-protected",
    description="The db volume is delete-protected, unformatted (LUKS2 goes on it) and never automounted.",
    validate=_db_volume,
    enforcement_level=MANDATORY,
    tags=["ENC-01"],
)

# -- NET-03: the db sits on the backend only; the backend carries app and db only ----------------


def _servers(args: StackValidationArgs, tier: str | None = None) -> list[PolicyResource]:
    servers = [r for r in args.resources if r.resource_type == SERVER]
    return [s for s in servers if tier is None or tier_of(s.props) == tier]


def _db_on_backend_only(args: StackValidationArgs, report: ReportViolation) -> None:
    attached = server_networks(args.resources)
    for server in _servers(args, "db"):
        networks = attached.get(server.urn, {})
        if not networks:
            report(
                f"db server {server.name} is on no network this policy can identify; attach it with "
                "subnet_id=<backend subnet>.id",
                server.urn,
            )
        for network in networks.values():
            if network_role(network) != BACKEND:
                role = network_role(network) or "unlabelled"
                report(f"db server {server.name} is on {network.name} ({role}); backend only", server.urn)


db_on_backend_only = StackValidationPolicy(
    name="tierwall-db-on-backend-only",
    description="The db server is attached to the backend network and to no other network.",
    validate=_db_on_backend_only,
    enforcement_level=MANDATORY,
    tags=["NET-03"],
)


def _backend_only_app_and_db(args: StackValidationArgs, report: ReportViolation) -> None:
    attached = server_networks(args.resources)
    for server in _servers(args):
        tier = tier_of(server.props)
        if tier in ("app", "db"):
            continue
        for network in attached.get(server.urn, {}).values():
            if network_role(network) == BACKEND:
                report(
                    f"{tier or 'unlabelled'} server {server.name} is attached to the backend network "
                    f"{network.name}; only app and db servers may be (the proxy reaches the app on frontend)",
                    server.urn,
                )


proxy_never_on_backend = StackValidationPolicy(
    name="tierwall-proxy-never-on-backend",
    description="The proxy, or any server not labelled app or db, is never attached to the backend network.",
    validate=_backend_only_app_and_db,
    enforcement_level=MANDATORY,
    tags=["NET-03"],
)

# -- NET-07: no route out of the private space on a network that carries the db -----------------


def _no_internet_route(args: StackValidationArgs, report: ReportViolation) -> None:
    attached = server_networks(args.resources)
    carriers = {r.urn for r in args.resources if r.resource_type == NETWORK and network_role(r) == BACKEND}
    for server in _servers(args, "db"):
        carriers.update(attached.get(server.urn, {}))
    for route in (r for r in args.resources if r.resource_type == ROUTE):
        destination = route.props.get("destination")
        if not reaches_beyond_private(str(destination)):
            continue
        networks = networks_named_by(route)
        if not networks:
            report(f"route {route.name} to {destination} is on an unidentifiable network", route.urn)
        elif carriers.intersection(networks):
            names = ", ".join(n.name for n in networks.values())
            report(
                f"route {route.name} sends {destination} (beyond the private networks, like 0.0.0.0/0) "
                f"out of {names}, which carries the db: the db must have no way to the internet",
                route.urn,
            )


no_internet_route_on_db_network = StackValidationPolicy(
    name="tierwall-no-internet-route-on-db-network",
    description="No network that carries the db (the backend) has a route to 0.0.0.0/0 or any public range.",
    validate=_no_internet_route,
    enforcement_level=MANDATORY,
    tags=["NET-07"],
)

POLICIES: tuple[ResourceValidationPolicy | StackValidationPolicy, ...] = (
    german_locations,
    app_db_no_public_address,
    public_firewall,
    db_volume_protected,
    db_on_backend_only,
    proxy_never_on_backend,
    no_internet_route_on_db_network,
)

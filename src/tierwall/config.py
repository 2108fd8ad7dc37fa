"""The stack configuration (``Pulumi.<stack>.yaml``, namespace ``tierwall:``) and its validation.

The same validation runs in ``tierwall check-config`` (without Pulumi) and in the Pulumi
program before it declares any resource. Every error names the key it concerns and the fix;
all errors are collected and reported together.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tierwall.topology import (
    APP,
    DB,
    MAX_HOSTS_PER_TIER,
    MGMT,
    PROXY,
    RFC1918,
    TIERS,
    Ports,
    Topology,
    TopologyError,
    build_topology,
    subnet_of,
)

NAMESPACE = "tierwall"

# Hosted in Germany: Falkenstein and Nuremberg. hel1 shares the eu-central network zone but
# is in Finland; ash/hil are in the USA and sin in Singapore.
ALLOWED_LOCATIONS: dict[str, str] = {"fsn1": "Falkenstein, DE", "nbg1": "Nuremberg, DE"}
NETWORK_ZONE = "eu-central"
# Hetzner's image names and the Debian release (debootstrap's suite) each one is: the lab builds
# its machines from the suite of the image it runs.
DEBIAN_SUITES: dict[str, str] = {"debian-12": "bookworm", "debian-13": "trixie"}
# A stack runs Debian 13, the release CI builds and proves. Debian 12 is oldstable (its security
# updates come from the LTS team only): a new stack on it is refused, and it stays only as the
# release an existing stack is upgraded from (docs/operations/debian-13.md).
ALLOWED_IMAGES = ("debian-13",)
DEFAULT_IMAGE = "debian-13"
UPGRADE_ONLY_IMAGES = {
    "debian-12": "Debian 12 is oldstable, its security updates come from the LTS team only, and CI "
    "proves Debian 13 only: set image to debian-13 (an existing Debian 12 stack moves as "
    "docs/operations/debian-13.md describes)",
}
DEPRECATED_SERVER_TYPES = ("cx11", "cx21", "cx31", "cx41", "cx51", "cx22", "cx32", "cx42", "cx52")
_SERVER_TYPE = re.compile(r"^[a-z]{2,4}[0-9]{2,3}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
    r" [A-Za-z0-9+/=]{16,}( .*)?$"
)
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Not the internet: an admin CIDR here could never match the bastion's public firewall.
_NON_PUBLIC = (
    *RFC1918,
    *(ipaddress.ip_network(c) for c in ("127.0.0.0/8", "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128")),
)
# Hetzner Volumes: 10 GB to 10 TB.
VOLUME_MIN_GB, VOLUME_MAX_GB = 10, 10240
# The db's backup repositories (pgBackRest's repo1, repo2... in the stack file's order): each one
# more copy the db uploads through the relays, so a few, not many.
MAX_BACKUP_REPOSITORIES = 4
BACKUP_RETENTION_MIN_DAYS, BACKUP_RETENTION_MAX_DAYS = 1, 35
DEFAULT_BACKUP_RETENTION_DAYS = 7
# Hetzner Object Storage's endpoints are <location>.your-objectstorage.com: for them the endpoint
# itself says where the data goes, and it must be where the entry's location says.
HETZNER_OBJECT_STORAGE = "your-objectstorage.com"
_BACKUP_FIELDS = ("location", "endpoint", "bucket", "region", "caFile")
_BACKUP_REQUIRED = {
    "location": "fsn1 or nbg1",
    "endpoint": "the S3 endpoint's host name, e.g. nbg1.your-objectstorage.com",
    "bucket": "the S3 bucket, e.g. tierwall-backups-nbg1",
}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_BACKUP_EXAMPLE = "{location: nbg1, endpoint: nbg1.your-objectstorage.com, bucket: tierwall-backups-nbg1}"


@dataclass(frozen=True)
class ConfigIssue:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{NAMESPACE}:{self.key}: {self.message}"


class ConfigError(ValueError):
    """The stack configuration is invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue], source: str = "stack config") -> None:
        self.issues = issues
        self.source = source
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


@dataclass(frozen=True)
class BackupRepository:
    """One S3 bucket the db's pgBackRest pushes its encrypted backups and WAL to."""

    location: str  # fsn1 or nbg1: where the bucket is
    endpoint: str  # the S3 endpoint's host name (no scheme, port or path)
    bucket: str
    region: str  # the S3 region pgBackRest signs with; the location unless the stack file says
    # A PEM CA bundle the db verifies the endpoint with, as written in the stack file (relative
    # paths are relative to the repository root); empty: the system's trust store.
    ca_file: str = ""


@dataclass(frozen=True)
class StackConfig:
    location: str
    domain: str
    ssh_public_keys: tuple[str, ...]
    admin_cidrs: tuple[str, ...]
    # pgBackRest's repositories, in its order (repo1, repo2...).
    backup_repositories: tuple[BackupRepository, ...]
    server_types: Mapping[str, str] = field(
        default_factory=lambda: {PROXY: "cx23", APP: "cx23", DB: "cx23", MGMT: "cx23"}
    )
    image: str = DEFAULT_IMAGE
    proxy_count: int = 1
    app_count: int = 2
    db_volume_size: int = 20
    frontend_cidr: str = "10.10.1.0/24"
    backend_cidr: str = "10.10.2.0/24"
    app_port: int = 8443
    # The scheduled production check's own key (the `verify` account); empty: no such account.
    verify_ssh_public_key: str = ""
    # Days a full backup and the WAL to restore from it are kept in every repository.
    backup_retention_days: int = DEFAULT_BACKUP_RETENTION_DAYS

    def topology(self) -> Topology:
        return build_topology(
            frontend_cidr=self.frontend_cidr,
            backend_cidr=self.backend_cidr,
            proxy_count=self.proxy_count,
            app_count=self.app_count,
            ports=Ports(app=self.app_port),
        )


# -- the schema: one entry per key ---------------------------------------------------------------

Validator = Callable[[Any], Any]


@dataclass(frozen=True)
class Key:
    name: str  # the key as written in the stack file (camelCase, Pulumi's convention)
    attribute: str  # the StackConfig field
    validate: Validator
    required: bool = False
    help: str = ""


class _Invalid(Exception):
    """A refused value; each argument is one problem, reported as an issue of its own."""


def _location(value: Any) -> str:
    if not isinstance(value, str) or value not in ALLOWED_LOCATIONS:
        allowed = ", ".join(f"{k} ({v})" for k, v in ALLOWED_LOCATIONS.items())
        hint = ""
        if value == "hel1":
            hint = " hel1 is in the eu-central zone but in Finland."
        raise _Invalid(f"{value!r} is not a German location.{hint} Allowed: {allowed}")
    return value


def _server_types(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _Invalid(
            f"must be a mapping of tier to server type (e.g. proxy: cx23), got {value!r}"
        )
    unknown = sorted(set(value) - set(TIERS))
    if unknown:
        raise _Invalid(f"unknown tier(s) {unknown}; allowed tiers: {list(TIERS)}")
    result = {PROXY: "cx23", APP: "cx23", DB: "cx23", MGMT: "cx23"}
    for tier, server_type in value.items():
        if not isinstance(server_type, str) or not _SERVER_TYPE.match(server_type):
            raise _Invalid(f"{tier}: {server_type!r} is not a Hetzner server type (e.g. cx23, cpx22, cax11)")
        if server_type in DEPRECATED_SERVER_TYPES:
            raise _Invalid(f"{tier}: {server_type} is deprecated by Hetzner; use cx23, cpx22 or cax11")
        result[tier] = server_type
    return result


def _image(value: Any) -> str:
    if value in UPGRADE_ONLY_IMAGES:
        raise _Invalid(f"{value!r} is refused: {UPGRADE_ONLY_IMAGES[value]}")
    if value not in ALLOWED_IMAGES:
        raise _Invalid(f"{value!r} is not supported; allowed: {', '.join(ALLOWED_IMAGES)}")
    return value


def _ssh_keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid(
            "at least one SSH public key is required (a list of 'ssh-ed25519 AAAA... comment' lines)"
        )
    keys = []
    for index, key in enumerate(value):
        if not isinstance(key, str) or not _SSH_KEY.match(key.strip()):
            raise _Invalid(
                f"entry {index} is not an OpenSSH public key; expected 'ssh-ed25519 AAAA... comment'"
            )
        if key.startswith("ssh-rsa") and len(key.split()[1]) < 370:
            raise _Invalid(f"entry {index} is an RSA key shorter than 2048 bits; use ed25519")
        keys.append(key.strip())
    return tuple(keys)


def _verify_key(value: Any) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _SSH_KEY.match(value.strip()):
        raise _Invalid("must be one OpenSSH public key ('ssh-ed25519 AAAA... verify@ci') for verify")
    if value.startswith("ssh-rsa") and len(value.split()[1]) < 370:
        raise _Invalid("is an RSA key shorter than 2048 bits; use ed25519")
    return value.strip()


def _admin_cidrs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid("at least one admin CIDR is required (the operators' addresses, e.g. 198.51.100.7/32)")
    cidrs = []
    for entry in value:
        try:
            network = ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            raise _Invalid(f"{entry!r} is not a CIDR; write e.g. 198.51.100.7/32") from None
        if network.prefixlen == 0:
            raise _Invalid(
                f"{entry} would open the bastion's SSH to the whole internet; "
                "list your operators' own addresses (e.g. 198.51.100.7/32)"
            )
        if any(subnet_of(network, r) for r in _NON_PUBLIC):
            raise _Invalid(
                f"{entry} is not a public address range (private, loopback or link-local); "
                "the bastion's firewall filters its public interface, list the operators' public addresses"
            )
        cidrs.append(str(network))
    return tuple(cidrs)


def _domain(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a domain name such as notes.example.org, got {value!r}")
    labels = value.rstrip(".").lower().split(".")
    if len(labels) < 2 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise _Invalid(f"{value!r} is not a valid domain name (e.g. notes.example.org)")
    return value.rstrip(".").lower()


def _count(tier: str) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, got {value!r}")
        if not 1 <= value <= MAX_HOSTS_PER_TIER:
            raise _Invalid(f"must be between 1 and {MAX_HOSTS_PER_TIER} {tier} servers, got {value}")
        return value

    return check


def _volume_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer number of GB, got {value!r}")
    if not VOLUME_MIN_GB <= value <= VOLUME_MAX_GB:
        raise _Invalid(
            f"must be between {VOLUME_MIN_GB} and {VOLUME_MAX_GB} GB (Hetzner Volume limits), got {value}"
        )
    return value


def _private_cidr(value: Any) -> str:
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise _Invalid(f"{value!r} is not a network CIDR ({exc}); write e.g. 10.10.1.0/24") from None
    if (
        not isinstance(network, ipaddress.IPv4Network)
        or not network.is_private
        or network.is_loopback
        or network.is_link_local
    ):
        raise _Invalid(
            f"{value} is not a private IPv4 range; use RFC 1918 (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
        )
    if not any(network.subnet_of(r) for r in RFC1918):
        raise _Invalid(f"{value} is not inside an RFC 1918 range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
    return str(network)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 65535:
        raise _Invalid(f"must be an unprivileged TCP port 1024-65535, got {value!r}")
    return value


def _backup_repositories(value: Any) -> tuple[BackupRepository, ...]:
    """Every entry's problems are reported together, each named by its pgBackRest number."""
    if not isinstance(value, list) or not value:
        raise _Invalid(
            f"must list 1 to {MAX_BACKUP_REPOSITORIES} S3 repositories for the db's backups, each a mapping "
            f"with location, endpoint and bucket (e.g. {_BACKUP_EXAMPLE}), got {value!r}"
        )
    if len(value) > MAX_BACKUP_REPOSITORIES:
        raise _Invalid(
            f"lists {len(value)} repositories; at most {MAX_BACKUP_REPOSITORIES} (every one is another full "
            "copy the db uploads through the relays): remove some"
        )
    problems: list[str] = []
    parsed = [_backup_repository(f"repo{n}", entry, problems) for n, entry in enumerate(value, start=1)]
    seen: dict[tuple[str, str], int] = {}
    for number, repository in enumerate(parsed, start=1):
        if repository is None:
            continue
        pair = (repository.endpoint, repository.bucket)
        if pair in seen:
            problems.append(
                f"repo{number} is bucket {repository.bucket} at {repository.endpoint}, "
                f"like repo{seen[pair]}: each repository must be a bucket of its own "
                "(remove the duplicate or name another bucket)"
            )
        seen.setdefault(pair, number)
    if problems:
        raise _Invalid(*problems)  # one issue each
    return tuple(r for r in parsed if r is not None)


def _backup_repository(name: str, entry: Any, problems: list[str]) -> BackupRepository | None:
    """One entry of backupRepositories, or None with its problems appended to ``problems``."""
    if not isinstance(entry, Mapping):
        problems.append(
            f"{name} must be a mapping with location, endpoint and bucket (e.g. {_BACKUP_EXAMPLE}), "
            f"got {entry!r}"
        )
        return None
    found: list[str] = []
    for field_name in entry:
        if field_name not in _BACKUP_FIELDS:
            close = _closest(str(field_name), _BACKUP_FIELDS)
            fix = f" Did you mean '{close}'?" if close else ""
            found.append(f"{name}: unknown key {field_name!r}.{fix} Known keys: {', '.join(_BACKUP_FIELDS)}")
    for field_name, what in _BACKUP_REQUIRED.items():
        if field_name not in entry:
            found.append(f"{name}: {field_name} is required ({what})")
    checks: dict[str, Validator] = {
        "location": _location,
        "endpoint": _endpoint,
        "bucket": _bucket,
        "region": _region,
        "caFile": _ca_file,
    }
    values: dict[str, str] = {}
    for field_name, check in checks.items():
        if field_name in entry:
            try:
                values[field_name] = check(entry[field_name])
            except _Invalid as exc:
                found.append(f"{name}: {field_name}: {exc}")
    location, endpoint = values.get("location"), values.get("endpoint")
    if location and endpoint and endpoint.endswith(f".{HETZNER_OBJECT_STORAGE}"):
        site = endpoint.removesuffix(f".{HETZNER_OBJECT_STORAGE}").split(".")[-1]
        if site != location:
            found.append(
                f"{name}: endpoint {endpoint} is Hetzner Object Storage in {site}, "
                f"but location says {location}: the endpoint decides where the data goes, "
                f"use {location}.{HETZNER_OBJECT_STORAGE} (or set location to the endpoint's, fsn1 or nbg1)"
            )
    problems += found
    if found:
        return None
    return BackupRepository(
        location=values["location"],
        endpoint=values["endpoint"],
        bucket=values["bucket"],
        region=values.get("region", values["location"]),
        ca_file=values.get("caFile", ""),
    )


def _endpoint(value: Any) -> str:
    example = "e.g. nbg1.your-objectstorage.com"
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be the S3 endpoint's host name ({example}), got {value!r}")
    if "://" in value:
        raise _Invalid(f"{value!r}: write the host name only, without the scheme ({example})")
    if "/" in value:
        raise _Invalid(f"{value!r}: write the host name only, without a path ({example})")
    if ":" in value:
        raise _Invalid(
            f"{value!r}: write the host name only, without a port ({example}): the relays reach the "
            "repositories on HTTPS, port 443"
        )
    name = value.rstrip(".").lower()
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise _Invalid(f"{value!r} is not a valid DNS host name ({example})")
    if all(label.isdigit() for label in labels):
        raise _Invalid(f"{value!r} is an IP address; write the endpoint's host name ({example})")
    return name


def _bucket(value: Any) -> str:
    rule = (
        "3 to 63 lowercase letters, digits, hyphens and dots, starting and ending with a letter or "
        "digit, not an IP address (e.g. tierwall-backups-nbg1)"
    )
    if not isinstance(value, str) or not _BUCKET.match(value) or ".." in value:
        raise _Invalid(f"{value!r} is not a valid S3 bucket name: use {rule}")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return value
    raise _Invalid(f"{value!r} is an IP address, not an S3 bucket name: use {rule}")


def _region(value: Any) -> str:
    if not isinstance(value, str) or not _REGION.match(value):
        raise _Invalid(
            f"{value!r} is not an S3 region name (lowercase letters, digits and hyphens, e.g. nbg1); "
            "leave it out to use the repository's location"
        )
    return value


def _ca_file(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _Invalid(
            f"must be the path of a PEM CA bundle the db verifies the endpoint with (relative to the "
            f"repository root, e.g. certs/objectstorage-ca.pem), got {value!r}; leave it out to use the "
            "system's trust store"
        )
    return value


def _retention_days(value: Any) -> int:
    meaning = (
        "the number of days a full backup and the WAL needed to restore from it are kept in every repository"
    )
    low, high = BACKUP_RETENTION_MIN_DAYS, BACKUP_RETENTION_MAX_DAYS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Invalid(f"must be a whole number of days from {low} to {high} ({meaning}), got {value!r}")
    return value


SCHEMA: tuple[Key, ...] = (
    Key("location", "location", _location, required=True, help="fsn1 or nbg1"),
    Key("domain", "domain", _domain, required=True, help="public name of the platform"),
    Key("sshPublicKeys", "ssh_public_keys", _ssh_keys, required=True, help="operators' SSH public keys"),
    Key("adminCidrs", "admin_cidrs", _admin_cidrs, required=True, help="who may SSH to the bastion"),
    Key("serverTypes", "server_types", _server_types, help="server type per tier"),
    Key("image", "image", _image, help="debian-13 (the default and the only one; debian-12 is refused)"),
    Key("proxyCount", "proxy_count", _count(PROXY), help="number of proxy servers"),
    Key("appCount", "app_count", _count(APP), help="number of application servers"),
    Key("dbVolumeSize", "db_volume_size", _volume_size, help="database volume size in GB"),
    Key("frontendCidr", "frontend_cidr", _private_cidr, help="proxy <-> app network"),
    Key("backendCidr", "backend_cidr", _private_cidr, help="app <-> db network"),
    Key("appPort", "app_port", _port, help="TCP port of the application servers"),
    Key("verifySshPublicKey", "verify_ssh_public_key", _verify_key, help="the production check's own key"),
    Key(
        "backupRepositories",
        "backup_repositories",
        _backup_repositories,
        required=True,
        help=f"the db's backups' S3 buckets, at least one off the stack's location, e.g. {_BACKUP_EXAMPLE}",
    ),
    Key(
        "backupRetentionDays",
        "backup_retention_days",
        _retention_days,
        help="days a full backup and its WAL are kept in every repository",
    ),
)
KEYS = {k.name: k for k in SCHEMA}


def parse_config(raw: Mapping[str, Any], source: str = "stack config") -> StackConfig:
    """Validate the ``tierwall:`` keys (given without the namespace) and build a StackConfig.

    Raises :class:`ConfigError` listing every problem at once.
    """
    issues: list[ConfigIssue] = []
    values: dict[str, Any] = {}
    for name in raw:
        if name not in KEYS:
            close = _closest(name)
            fix = f" Did you mean '{close}'?" if close else ""
            issues.append(ConfigIssue(name, f"unknown key.{fix} Known keys: {', '.join(KEYS)}"))
    for key in SCHEMA:
        if key.name not in raw:
            if key.required:
                issues.append(ConfigIssue(key.name, f"is required ({key.help})"))
            continue
        try:
            values[key.attribute] = key.validate(raw[key.name])
        except _Invalid as exc:
            issues += [ConfigIssue(key.name, str(problem)) for problem in exc.args]
    issues += _cross_key_issues(values)
    if not issues:
        config = StackConfig(**values)
        try:
            config.topology()
        except TopologyError as exc:
            issues.append(ConfigIssue(_topology_key(str(exc)), str(exc)))
        else:
            return config
    raise ConfigError(issues, source)


def _cross_key_issues(values: Mapping[str, Any]) -> list[ConfigIssue]:
    """Rules between keys: the verify account reads, the operators' keys may sudo anything, so one
    key must never be both; and one backup repository must be off the stack's own site."""
    issues: list[ConfigIssue] = []
    verify = values.get("verify_ssh_public_key")
    if verify and verify.split()[:2] in [k.split()[:2] for k in values.get("ssh_public_keys", ())]:
        message = (
            "is one of sshPublicKeys; give the verify account a key of its own "
            "(ssh-keygen -t ed25519 -f verify), used only by the production check"
        )
        issues.append(ConfigIssue("verifySshPublicKey", message))
    location = values.get("location")
    repositories = values.get("backup_repositories")
    if location and repositories and all(r.location == location for r in repositories):
        other = next(site for site in ALLOWED_LOCATIONS if site != location)
        message = (
            f"every repository is in {location}, the stack's location: a copy must survive the loss of the "
            f"whole {location} site, add a repository in {other} ({ALLOWED_LOCATIONS[other]}), e.g. "
            f"{{location: {other}, endpoint: {other}.{HETZNER_OBJECT_STORAGE}, "
            f"bucket: tierwall-backups-{other}}}"
        )
        issues.append(ConfigIssue("backupRepositories", message))
    return issues


def from_pulumi_values(values: Mapping[str, str], source: str = "pulumi config") -> StackConfig:
    """Validate the config the Pulumi engine hands the program (full keys, string values)."""
    raw: dict[str, Any] = {}
    prefix = f"{NAMESPACE}:"
    for full_key, value in values.items():
        if not full_key.startswith(prefix):
            continue
        name = full_key[len(prefix) :]
        # The engine passes structured values as JSON and scalars as strings.
        try:
            raw[name] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            raw[name] = value
    return parse_config(raw, source)


def load_stack_file(path: str | Path) -> StackConfig:
    """Read ``Pulumi.<stack>.yaml`` and validate its ``tierwall:`` keys."""
    path = Path(path)
    source = str(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("*", f"file not found: {path}")], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("*", f"not valid YAML: {exc}")], source) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(
            [ConfigIssue("*", "a stack file needs a top-level 'config:' mapping of 'tierwall:<key>: value'")],
            source,
        )
    raw: dict[str, Any] = {}
    for full_key, value in document["config"].items():
        namespace, _, name = str(full_key).partition(":")
        if namespace != NAMESPACE:
            continue  # hcloud:token and other providers' keys are not ours to check
        # An encrypted value ({secure: ...}) is left to the validators, which refuse it: no
        # tierwall key is a secret, so none should be stored encrypted.
        raw[name] = value
    return parse_config(raw, source)


def _topology_key(message: str) -> str:
    for token, key in (("frontend", "frontendCidr"), ("backend", "backendCidr"), ("port", "appPort")):
        if token in message:
            return key
    return "*"


def _closest(name: str, known: Sequence[str] | None = None) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, list(KEYS if known is None else known), n=1, cutoff=0.6)
    return matches[0] if matches else None

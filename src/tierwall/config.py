"""The stack configuration (``Pulumi.<stack>.yaml``, namespace ``tierwall:``) and its validation.

The same validation runs in ``tierwall check-config`` (without Pulumi) and in the Pulumi
program before it declares any resource. Every error names the key it concerns and the fix;
all errors are collected and reported together.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tierwall.topology import (
    APP,
    DB,
    MAX_HOSTS_PER_TIER,
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
class StackConfig:
    location: str
    domain: str
    ssh_public_keys: tuple[str, ...]
    admin_cidrs: tuple[str, ...]
    server_types: Mapping[str, str] = field(default_factory=lambda: {PROXY: "cx23", APP: "cx23", DB: "cx23"})
    image: str = DEFAULT_IMAGE
    proxy_count: int = 1
    app_count: int = 2
    db_volume_size: int = 20
    frontend_cidr: str = "10.10.1.0/24"
    backend_cidr: str = "10.10.2.0/24"
    app_port: int = 8443
    # The scheduled production check's own key (the `verify` account); empty: no such account.
    verify_ssh_public_key: str = ""

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
    pass


def _location(value: Any) -> str:
    if value not in ALLOWED_LOCATIONS:
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
    result = {PROXY: "cx23", APP: "cx23", DB: "cx23"}
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
            issues.append(ConfigIssue(key.name, str(exc)))
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
    """The verify account reads; the operators' keys may sudo anything: one key must never be both."""
    verify = values.get("verify_ssh_public_key")
    if verify and verify.split()[:2] in [k.split()[:2] for k in values.get("ssh_public_keys", ())]:
        message = (
            "is one of sshPublicKeys; give the verify account a key of its own "
            "(ssh-keygen -t ed25519 -f verify), used only by the production check"
        )
        return [ConfigIssue("verifySshPublicKey", message)]
    return []


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


def _closest(name: str) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, list(KEYS), n=1, cutoff=0.6)
    return matches[0] if matches else None

"""Pulumi.yaml's `config:` block declares exactly the tierwall: keys config.py validates.

The CLI reads the block (types, defaults, required keys) before the program runs; config.py's
schema is what the program and ``tierwall check-config`` enforce. These tests keep the two from
drifting, and show that the CLI's looser view (an integer is any integer) never replaces
config.py's strict checks.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tierwall.config import KEYS, NAMESPACE, SCHEMA, BackupRepository, ConfigError, StackConfig, parse_config
from tierwall.paths import REPO

PROJECT = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
DECLARED: dict[str, dict[str, Any]] = PROJECT["config"]
FIELDS = {f.name: f for f in dataclasses.fields(StackConfig)}
HINTS = typing.get_type_hints(StackConfig)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq ops@example"
VALID = {
    "location": "fsn1",
    "domain": "notes.example.org",
    "sshPublicKeys": [KEY],
    "adminCidrs": ["198.51.100.7/32"],
    "backupRepositories": [
        {"location": "fsn1", "endpoint": "fsn1.your-objectstorage.com", "bucket": "notes-backups-fsn1"},
        {"location": "nbg1", "endpoint": "nbg1.your-objectstorage.com", "bucket": "notes-backups-nbg1"},
    ],
}


def _pulumi_type(attribute: str) -> dict[str, Any]:
    """The project-file type of a StackConfig field: Pulumi knows string, integer and array only."""
    hint = HINTS[attribute]
    origin = typing.get_origin(hint)
    if hint is str:
        return {"type": "string"}
    if hint is int:
        return {"type": "integer"}
    if origin is tuple and typing.get_args(hint) == (str, ...):
        return {"type": "array", "items": {"type": "string"}}
    if origin is tuple and typing.get_args(hint) == (BackupRepository, ...):
        return {}  # an array of mappings: an array's items have no map type, so declared without a type
    if origin is Mapping:
        return {}  # no map type in Pulumi.yaml: declared without one
    raise AssertionError(f"StackConfig.{attribute}: no project-file type for {hint}")


def _default(attribute: str) -> Any:
    field = FIELDS[attribute]
    if field.default_factory is not dataclasses.MISSING:
        return dict(field.default_factory())
    return field.default


def test_every_key_of_the_schema_is_declared_and_nothing_else() -> None:
    assert sorted(DECLARED) == sorted(f"{NAMESPACE}:{k}" for k in KEYS)


@pytest.mark.parametrize("key", SCHEMA, ids=lambda k: k.name)
def test_declared_type_and_default_are_config_pys(key: Any) -> None:
    declared = DECLARED[f"{NAMESPACE}:{key.name}"]
    typed = {k: v for k, v in declared.items() if k in ("type", "items")}
    assert typed == _pulumi_type(key.attribute), f"{key.name}: declared {typed}"
    assert declared.get("description"), f"{key.name}: no description"
    if key.required:
        # No default is what makes the CLI refuse a stack without the key.
        assert "default" not in declared, f"{key.name} is required but declares a default"
        assert FIELDS[key.attribute].default is dataclasses.MISSING
    else:
        assert declared.get("default") == _default(key.attribute), f"{key.name}: default differs"


def test_declared_defaults_pass_config_pys_validation() -> None:
    """What the CLI fills in for unset keys is accepted by the program's own validation."""
    defaults = {k.name: DECLARED[f"{NAMESPACE}:{k.name}"]["default"] for k in SCHEMA if not k.required}
    assert parse_config({**defaults, **VALID}) == parse_config(VALID)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("location", "hel1"),  # a string to the CLI; in Finland to config.py
        ("proxyCount", 12),  # an integer to the CLI; more than 9 servers to config.py
        ("adminCidrs", ["0.0.0.0/0"]),  # an array of strings to the CLI; SSH open to all to config.py
        ("frontendCidr", "10.10.2.0/24"),  # a string to the CLI; overlaps the backend to config.py
        ("backupRetentionDays", 90),  # an integer to the CLI; more than 35 days to config.py
        # Untyped to the CLI; a bucket in Finland to config.py.
        ("backupRepositories", [{"location": "hel1", "endpoint": "hel1.example.org", "bucket": "b-1"}]),
    ],
)
def test_values_the_clis_types_accept_are_still_refused_by_config_py(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**VALID, key: value})
    assert key in {issue.key for issue in info.value.issues}


def test_the_template_prompts_for_the_required_scalar_keys() -> None:
    """`pulumi new` stores a prompt's answer as one string: only string keys can be prompted for."""
    prompted = PROJECT["template"]["config"]
    required = {f"{NAMESPACE}:{k.name}" for k in SCHEMA if k.required}
    scalar = {k for k in required if DECLARED[k].get("type") == "string"}
    assert set(prompted) == scalar, f"template prompts for {sorted(prompted)}"
    assert all(entry.get("description") for entry in prompted.values())
    for key in required - scalar:
        assert key in PROJECT["template"]["quickstart"], f"the quickstart does not say how to set {key}"

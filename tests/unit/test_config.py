"""Stack config validation: every bad input is refused with the key it concerns, before anything exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.cli import main
from tierwall.config import ConfigError, from_pulumi_values, load_stack_file, parse_config
from tierwall.paths import EXAMPLE_STACK

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq ops@example"


def _valid() -> dict[str, Any]:
    return {
        "location": "nbg1",
        "domain": "notes.example.org",
        "sshPublicKeys": [KEY],
        "adminCidrs": ["198.51.100.7/32", "2001:db8::/48"],
    }


def _errors(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return {issue.key: issue.message for issue in info.value.issues}


def _write_stack(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    config = {f"tierwall:{k}": v for k, v in raw.items()}
    config["hcloud:token"] = {"secure": "v1:AAAA"}  # another namespace: not ours to check
    path.write_text(yaml.safe_dump({"config": config}))
    return path


# The example the README tells operators to copy is held to the same rules: in Germany, and SSH
# open only to its admin ranges.
@pytest.mark.control("LOC-01")
@pytest.mark.control("NET-04")
def test_example_stack_is_valid() -> None:
    config = load_stack_file(EXAMPLE_STACK)
    assert config.location in ("fsn1", "nbg1")
    assert config.topology().hosts_in("app")


def test_defaults_fill_optional_keys() -> None:
    config = parse_config(_valid())
    assert config.image == "debian-13"
    assert config.server_types == {"proxy": "cx23", "app": "cx23", "db": "cx23"}
    assert (config.frontend_cidr, config.backend_cidr) == ("10.10.1.0/24", "10.10.2.0/24")


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize("location", ["hel1", "ash", "hil", "sin", "FSN1", ""])
def test_non_german_locations_are_refused(location: str) -> None:
    errors = _errors({**_valid(), "location": location})
    assert list(errors) == ["location"]
    assert "fsn1" in errors["location"]
    assert "nbg1" in errors["location"]


def test_hel1_message_explains_the_zone_trap() -> None:
    assert "Finland" in _errors({**_valid(), "location": "hel1"})["location"]


def test_overlapping_cidrs_are_refused() -> None:
    errors = _errors({**_valid(), "frontendCidr": "10.10.0.0/16", "backendCidr": "10.10.2.0/24"})
    assert "overlaps" in errors["frontendCidr"]


@pytest.mark.parametrize("cidr", ["8.8.8.0/24", "203.0.113.0/24", "fd00::/64", "127.0.0.0/24"])
def test_public_or_non_rfc1918_backend_cidr_is_refused(cidr: str) -> None:
    assert "backendCidr" in _errors({**_valid(), "backendCidr": cidr})


@pytest.mark.control("NET-04")
@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/8"])
def test_admin_cidr_open_to_world_or_private_is_refused(cidr: str) -> None:
    message = _errors({**_valid(), "adminCidrs": ["198.51.100.7/32", cidr]})["adminCidrs"]
    assert cidr in message


@pytest.mark.parametrize("count", [0, 10, "2", 1.5, True])
def test_app_count_out_of_range_or_wrong_type_is_refused(count: object) -> None:
    assert "appCount" in _errors({**_valid(), "appCount": count})


@pytest.mark.parametrize("keys", [[], None, ["not a key"], "ssh-dss AAAAB3NzaC1kc3MAAACBAP== x"])
def test_missing_or_bad_ssh_keys_are_refused(keys: object) -> None:
    assert "sshPublicKeys" in _errors({**_valid(), "sshPublicKeys": keys})


def test_unknown_key_is_refused_with_a_suggestion() -> None:
    errors = _errors({**_valid(), "appCont": 2})
    assert "unknown key" in errors["appCont"]
    assert "appCount" in errors["appCont"]


@pytest.mark.parametrize("key", ["location", "domain", "sshPublicKeys", "adminCidrs"])
def test_required_keys(key: str) -> None:
    raw = _valid()
    del raw[key]
    assert "is required" in _errors(raw)[key]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("serverTypes", "cx23"),
        ("serverTypes", {"db": "cx22"}),
        ("serverTypes", {"cache": "cx23"}),
        ("image", "ubuntu-24.04"),
        ("dbVolumeSize", 5),
        ("dbVolumeSize", "20"),
        ("domain", "localhost"),
        ("appPort", 80),
        ("proxyCount", None),
    ],
)
def test_wrong_values_and_types_are_refused(key: str, value: object) -> None:
    assert key in _errors({**_valid(), key: value})


def test_debian_12_is_refused_with_the_reason_and_the_fix() -> None:
    """Debian 12 is oldstable and no test builds a stack on it: the error says why and what to set."""
    message = _errors({**_valid(), "image": "debian-12"})["image"]
    assert "oldstable" in message
    assert "set image to debian-13" in message
    assert "docs/operations/debian-13.md" in message


def test_all_errors_are_reported_together() -> None:
    errors = _errors({"location": "sin", "appCount": 0, "typo": 1})
    assert {"location", "appCount", "typo", "domain", "sshPublicKeys", "adminCidrs"} <= set(errors)


def test_pulumi_engine_values_are_decoded() -> None:
    # The engine hands the program strings: scalars as they are, lists and maps as JSON.
    values = {f"tierwall:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in _valid().items()}
    values["tierwall:appCount"] = "3"
    values["hcloud:token"] = "secret"
    config = from_pulumi_values(values)
    assert config.app_count == 3
    assert config.admin_cidrs == ("198.51.100.7/32", "2001:db8::/48")


def test_check_config_command_accepts_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE_STACK)]) == 0
    bad = _write_stack(tmp_path, {**_valid(), "location": "hel1", "adminCidrs": ["0.0.0.0/0"]})
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "tierwall:location" in err
    assert "tierwall:adminCidrs" in err


def test_unreadable_stack_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_stack_file(tmp_path / "missing.yaml")
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_stack_file(broken)
    broken.write_text("tierwall:location: fsn1\n")
    with pytest.raises(ConfigError, match="top-level 'config:'"):
        load_stack_file(broken)

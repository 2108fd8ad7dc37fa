"""Stack config validation: every bad input is refused with the key it concerns, before anything exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.cli import main
from tierwall.config import BackupRepository, ConfigError, from_pulumi_values, load_stack_file, parse_config
from tierwall.paths import EXAMPLE_STACK, LAB_CONFIG

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq ops@example"


def _repository(location: str, **fields: Any) -> dict[str, Any]:
    return {
        "location": location,
        "endpoint": f"{location}.your-objectstorage.com",
        "bucket": f"notes-backups-{location}",
        **fields,
    }


def _valid() -> dict[str, Any]:
    return {
        "location": "nbg1",
        "domain": "notes.example.org",
        "sshPublicKeys": [KEY],
        "adminCidrs": ["198.51.100.7/32", "2001:db8::/48"],
        "backupRepositories": [_repository("nbg1"), _repository("fsn1")],
    }


def _errors(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return {issue.key: issue.message for issue in info.value.issues}


def _messages(raw: dict[str, Any], key: str) -> list[str]:
    """Every issue about ``key`` (backupRepositories reports one per problem)."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return [issue.message for issue in info.value.issues if issue.key == key]


def _repository_errors(*entries: Any) -> list[str]:
    return _messages({**_valid(), "backupRepositories": list(entries)}, "backupRepositories")


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
    assert config.server_types == {"proxy": "cx23", "app": "cx23", "db": "cx23", "mgmt": "cx23"}
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


@pytest.mark.parametrize("key", ["location", "domain", "sshPublicKeys", "adminCidrs", "backupRepositories"])
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
    assert {
        "location",
        "appCount",
        "typo",
        "domain",
        "sshPublicKeys",
        "adminCidrs",
        "backupRepositories",
    } <= set(errors)


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


# -- backupRepositories and backupRetentionDays ----------------------------------------------------


def test_backup_defaults_region_ca_file_and_retention() -> None:
    config = parse_config(_valid())
    assert config.backup_repositories == (
        BackupRepository("nbg1", "nbg1.your-objectstorage.com", "notes-backups-nbg1", "nbg1", ""),
        BackupRepository("fsn1", "fsn1.your-objectstorage.com", "notes-backups-fsn1", "fsn1", ""),
    )
    assert config.backup_retention_days == 7


def test_backup_region_ca_file_and_retention_are_taken_as_written() -> None:
    repositories = [
        _repository("nbg1"),
        {
            "location": "fsn1",
            "endpoint": "S3.Example.ORG.",
            "bucket": "a.b-1",
            "region": "eu-central-1",
            "caFile": "certs/s3 ca.pem",
        },
    ]
    config = parse_config({**_valid(), "backupRepositories": repositories, "backupRetentionDays": 35})
    assert config.backup_repositories[1] == BackupRepository(
        "fsn1", "s3.example.org", "a.b-1", "eu-central-1", "certs/s3 ca.pem"
    )
    assert config.backup_retention_days == 35
    assert parse_config({**_valid(), "backupRetentionDays": 1}).backup_retention_days == 1


def test_the_example_and_the_lab_keep_a_copy_off_their_site() -> None:
    example = load_stack_file(EXAMPLE_STACK)
    assert {r.location for r in example.backup_repositories} == {"fsn1", "nbg1"}
    assert all(
        r.endpoint == f"{r.location}.your-objectstorage.com" and not r.ca_file
        for r in example.backup_repositories
    )
    lab = yaml.safe_load(LAB_CONFIG.read_text())["config"]
    raw = {k.partition(":")[2]: v for k, v in lab.items()}
    config = parse_config({**raw, "sshPublicKeys": [KEY]})
    assert [(r.location, r.endpoint, r.bucket, r.region, r.ca_file) for r in config.backup_repositories] == [
        ("fsn1", "fsn1.objectstorage.lab.test", "tierwall-lab-fsn1", "fsn1", ".lab/offsite/ca.pem"),
        ("nbg1", "nbg1.objectstorage.lab.test", "tierwall-lab-nbg1", "nbg1", ".lab/offsite/ca.pem"),
    ]
    assert config.backup_retention_days == 7


@pytest.mark.parametrize("value", [[], None, "nbg1.your-objectstorage.com", {"location": "nbg1"}])
def test_backup_repositories_must_be_a_non_empty_list(value: object) -> None:
    (message,) = _messages({**_valid(), "backupRepositories": value}, "backupRepositories")
    assert "must list 1 to 4" in message
    assert "location, endpoint and bucket" in message
    assert "nbg1.your-objectstorage.com" in message


def test_more_than_four_backup_repositories_are_refused() -> None:
    entries = [_repository("nbg1", bucket=f"b-{n}") for n in range(4)] + [_repository("fsn1")]
    (message,) = _repository_errors(*entries)
    assert "lists 5 repositories; at most 4" in message
    assert "remove some" in message


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize("location", ["hel1", "ash", "sin", "FSN1", "", ["fsn1"]])
def test_a_backup_repository_outside_germany_is_refused(location: object) -> None:
    (message,) = _repository_errors(_repository("nbg1"), {**_repository("fsn1"), "location": location})
    assert message.startswith("repo2: location:")
    assert "is not a German location" in message
    assert "Allowed: fsn1 (Falkenstein, DE), nbg1 (Nuremberg, DE)" in message


@pytest.mark.control("LOC-01")
def test_a_hetzner_endpoint_must_be_in_its_entrys_location() -> None:
    (message,) = _repository_errors(
        _repository("nbg1"), _repository("fsn1", endpoint="hel1.your-objectstorage.com")
    )
    assert "repo2: endpoint hel1.your-objectstorage.com is Hetzner Object Storage in hel1" in message
    assert "use fsn1.your-objectstorage.com" in message


@pytest.mark.control("LOC-01")
@pytest.mark.parametrize("location", ["fsn1", "nbg1"])
def test_a_copy_must_survive_the_loss_of_the_stacks_site(location: str) -> None:
    other = {"fsn1": "nbg1", "nbg1": "fsn1"}[location]
    raw = {**_valid(), "location": location, "backupRepositories": [_repository(location)]}
    (message,) = _messages(raw, "backupRepositories")
    assert f"every repository is in {location}, the stack's location" in message
    assert f"add a repository in {other}" in message
    assert f"endpoint: {other}.your-objectstorage.com" in message
    # One repository, off the stack's site, is enough.
    assert (
        parse_config({**raw, "backupRepositories": [_repository(other)]}).backup_repositories[0].location
        == other
    )


@pytest.mark.parametrize(
    ("endpoint", "fix"),
    [
        ("https://nbg1.your-objectstorage.com", "without the scheme"),
        ("nbg1.your-objectstorage.com:443", "without a port"),
        ("nbg1.your-objectstorage.com/bucket", "without a path"),
        ("objectstorage", "is not a valid DNS host name"),
        ("-bad.example.org", "is not a valid DNS host name"),
        ("s3_host.example.org", "is not a valid DNS host name"),
        ("192.0.2.10", "is an IP address"),
        ("", "must be the S3 endpoint's host name"),
        (443, "must be the S3 endpoint's host name"),
    ],
)
def test_a_bad_endpoint_is_refused(endpoint: object, fix: str) -> None:
    (message,) = _repository_errors(_repository("nbg1"), _repository("fsn1", endpoint=endpoint))
    assert message.startswith("repo2: endpoint:")
    assert fix in message
    assert "e.g. nbg1.your-objectstorage.com" in message


@pytest.mark.parametrize(
    "bucket",
    [
        "ab",
        "a" * 64,
        "Notes",
        "notes_backups",
        "-notes",
        "notes-",
        ".notes",
        "notes..backups",
        "192.168.5.4",
        7,
    ],
)
def test_a_bad_bucket_name_is_refused(bucket: object) -> None:
    (message,) = _repository_errors(_repository("nbg1"), _repository("fsn1", bucket=bucket))
    assert message.startswith("repo2: bucket:")
    assert "3 to 63 lowercase letters, digits, hyphens and dots" in message
    assert "e.g. tierwall-backups-nbg1" in message


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "notes.backups-2", "1-2"])
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    config = parse_config(
        {**_valid(), "backupRepositories": [_repository("nbg1"), _repository("fsn1", bucket=bucket)]}
    )
    assert config.backup_repositories[1].bucket == bucket


@pytest.mark.parametrize("region", ["", "EU", "eu_central", "-fsn1", 1])
def test_a_bad_region_is_refused(region: object) -> None:
    (message,) = _repository_errors(_repository("nbg1"), _repository("fsn1", region=region))
    assert message.startswith("repo2: region:")
    assert "leave it out to use the repository's location" in message


@pytest.mark.parametrize("ca_file", ["", "  ", "certs/ca\0.pem", None, ["ca.pem"]])
def test_a_bad_ca_file_is_refused(ca_file: object) -> None:
    (message,) = _repository_errors(_repository("nbg1"), _repository("fsn1", caFile=ca_file))
    assert message.startswith("repo2: caFile:")
    assert "PEM CA bundle" in message
    assert "relative to the repository root" in message


def test_ca_file_is_not_checked_for_existence() -> None:
    """The lab's CA bundle is created by `tierwall lab up`, after the config was read."""
    raw = {
        **_valid(),
        "backupRepositories": [_repository("nbg1"), _repository("fsn1", caFile="no/such/ca.pem")],
    }
    assert parse_config(raw).backup_repositories[1].ca_file == "no/such/ca.pem"


def test_an_unknown_key_in_a_repository_is_refused_with_a_suggestion() -> None:
    (message,) = _repository_errors(_repository("nbg1"), _repository("fsn1", cafile="ca.pem"))
    assert message.startswith("repo2: unknown key 'cafile'.")
    assert "Did you mean 'caFile'?" in message
    assert "Known keys: location, endpoint, bucket, region, caFile" in message


@pytest.mark.parametrize("field", ["location", "endpoint", "bucket"])
def test_a_repository_without_a_required_field_is_refused(field: str) -> None:
    entry = _repository("fsn1")
    del entry[field]
    (message,) = _repository_errors(_repository("nbg1"), entry)
    assert message.startswith(f"repo2: {field} is required (")


def test_a_repository_that_is_not_a_mapping_is_refused() -> None:
    (message,) = _repository_errors(_repository("nbg1"), "fsn1.your-objectstorage.com")
    assert message.startswith("repo2 must be a mapping with location, endpoint and bucket")


def test_the_same_bucket_at_the_same_endpoint_twice_is_refused() -> None:
    messages = _repository_errors(_repository("nbg1"), _repository("fsn1"), _repository("nbg1"))
    assert messages == [
        "repo3 is bucket notes-backups-nbg1 at nbg1.your-objectstorage.com, like repo1: "
        "each repository must be a bucket of its own (remove the duplicate or name another bucket)"
    ]
    # The same bucket name at another endpoint is another bucket.
    parse_config(
        {
            **_valid(),
            "backupRepositories": [_repository("nbg1"), _repository("fsn1", bucket="notes-backups-nbg1")],
        }
    )


def test_every_repositorys_problems_are_reported_together() -> None:
    messages = _repository_errors(
        {"location": "hel1", "endpoint": "https://x", "bucket": "AB"}, "x", _repository("fsn1", regoin="fsn1")
    )
    assert [m.split(":")[0].split(" ")[0] for m in messages] == ["repo1", "repo1", "repo1", "repo2", "repo3"]


@pytest.mark.parametrize("days", [0, 36, -1, "7", 7.0, True, None])
def test_backup_retention_days_out_of_range_or_wrong_type_is_refused(days: object) -> None:
    message = _errors({**_valid(), "backupRetentionDays": days})["backupRetentionDays"]
    assert "must be a whole number of days from 1 to 35" in message
    assert (
        "the number of days a full backup and the WAL needed to restore from it are kept in every repository"
        in message
    )


def test_backup_repositories_arrive_from_the_engine_as_json() -> None:
    values = {f"tierwall:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in _valid().items()}
    values["tierwall:backupRetentionDays"] = "14"
    config = from_pulumi_values(values)
    assert [r.location for r in config.backup_repositories] == ["nbg1", "fsn1"]
    assert config.backup_retention_days == 14

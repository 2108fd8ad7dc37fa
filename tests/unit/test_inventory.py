"""The inventory generator on a recorded `pulumi stack output --json`: groups, jump chain, topology."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.cli import main
from tierwall.config import BackupRepository
from tierwall.inventory import (
    Access,
    InventoryError,
    backup_from_outputs,
    backup_repositories_var,
    build_inventory,
    load_outputs,
    proxy_public_from_outputs,
    topology_from_outputs,
)
from tierwall.paths import REPO
from tierwall.topology import TIERS

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"


@pytest.fixture
def outputs() -> dict[str, Any]:
    return load_outputs(OUTPUTS)


@pytest.fixture
def inventory(outputs: dict[str, Any]) -> dict[str, Any]:
    access = Access(
        proxy_public=proxy_public_from_outputs(outputs),
        admin_cidrs=tuple(outputs["admin_cidrs"]),
        domain=outputs["domain"],
        private_key_file="~/.ssh/tierwall",
        target=outputs["stack"],
        db_volume_device=outputs["db_volume_linux_device"],
    )
    return build_inventory(topology_from_outputs(outputs), access)


def _hosts(inventory: dict[str, Any], group: str) -> dict[str, Any]:
    return inventory["all"]["children"][group]["hosts"]


def _proxy_command(hostvars: dict[str, Any]) -> str:
    args = shlex.split(hostvars["ansible_ssh_common_args"])
    commands = [a.split("=", 1)[1] for a in args if a.startswith("ProxyCommand=")]
    assert len(commands) == 1, args
    return commands[0]


def test_groups_match_the_topology(inventory: dict[str, Any]) -> None:
    assert sorted(_hosts(inventory, "proxy")) == ["proxy-1"]
    assert sorted(_hosts(inventory, "app")) == ["app-1", "app-2"]
    assert sorted(_hosts(inventory, "db")) == ["db-1"]
    assert sorted(_hosts(inventory, "mgmt")) == ["mgmt-1"]
    assert sorted(inventory["all"]["children"]) == sorted(TIERS)


@pytest.mark.control("AC-03")
def test_proxy_is_reached_directly_on_its_public_address(inventory: dict[str, Any]) -> None:
    proxy = _hosts(inventory, "proxy")["proxy-1"]
    assert proxy["ansible_host"] == "203.0.113.10"
    assert "ProxyCommand" not in proxy["ansible_ssh_common_args"]


@pytest.mark.control("AC-03")
def test_app_is_reached_through_the_proxy(inventory: dict[str, Any]) -> None:
    app = _hosts(inventory, "app")["app-2"]
    assert app["ansible_host"] == "10.10.1.21"
    command = _proxy_command(app)
    assert command.endswith("-W %h:%p ops@203.0.113.10")
    assert command.count("-W %h:%p") == 1


@pytest.mark.control("AC-03")
def test_the_management_host_is_reached_through_the_proxy(inventory: dict[str, Any]) -> None:
    mgmt = _hosts(inventory, "mgmt")["mgmt-1"]
    assert mgmt["ansible_host"] == "10.10.1.40"
    command = _proxy_command(mgmt)
    assert command.endswith("-W %h:%p ops@203.0.113.10")
    assert command.count("-W %h:%p") == 1
    assert mgmt["tierwall_addresses"] == {"frontend": "10.10.1.40"}


@pytest.mark.control("AC-03")
def test_db_is_reached_through_proxy_then_app(inventory: dict[str, Any]) -> None:
    db = _hosts(inventory, "db")["db-1"]
    assert db["ansible_host"] == "10.10.2.30"
    command = _proxy_command(db)
    # Outer hop: the app's frontend address, itself reached through the proxy.
    assert command.endswith("-W %h:%p ops@10.10.1.20")
    inner = shlex.split(command)
    nested = [a.split("=", 1)[1] for a in inner if a.startswith("ProxyCommand=")]
    assert len(nested) == 1
    # Escaped once: the outer ssh turns %%h into %h for the inner one, which must reach the app.
    assert nested[0].endswith("-W %%h:%%p ops@203.0.113.10")
    assert "-o IdentityFile=~/.ssh/tierwall" in nested[0]


def test_the_db_knows_its_volume(inventory: dict[str, Any], outputs: dict[str, Any]) -> None:
    """The postgresql role encrypts the Hetzner Volume the stack attached, found by its device."""
    db = _hosts(inventory, "db")["db-1"]
    assert db["tierwall_volume_device"] == outputs["db_volume_linux_device"]
    assert db["tierwall_volume_device"].startswith("/dev/disk/by-id/scsi-0HC_Volume_")


def test_topology_and_access_travel_to_every_host(inventory: dict[str, Any]) -> None:
    all_vars = inventory["all"]["vars"]
    assert all_vars["ansible_user"] == "ops"
    assert all_vars["tierwall_target"] == "prod"
    assert all_vars["tierwall_admin_cidrs"] == ["198.51.100.7/32"]
    assert all_vars["tierwall_topology"]["hosts"]["db-1"]["addresses"] == {"backend": "10.10.2.30"}
    assert _hosts(inventory, "app")["app-1"]["tierwall_addresses"] == {
        "frontend": "10.10.1.20",
        "backend": "10.10.2.20",
    }


def test_production_inventory_keeps_host_key_checking(inventory: dict[str, Any]) -> None:
    for group in TIERS:
        for hostvars in _hosts(inventory, group).values():
            assert "StrictHostKeyChecking=yes" in hostvars["ansible_ssh_common_args"]


def test_outputs_that_disagree_with_the_topology_are_refused(outputs: dict[str, Any]) -> None:
    drifted = copy.deepcopy(outputs)
    drifted["hosts"]["db-1"]["private_ips"]["backend"] = "10.10.2.99"
    with pytest.raises(InventoryError, match=r"db-1 has 10\.10\.2\.99 on backend"):
        topology_from_outputs(drifted)


def test_outputs_without_hosts_are_refused(outputs: dict[str, Any]) -> None:
    broken = {k: v for k, v in outputs.items() if k != "hosts"}
    with pytest.raises(InventoryError, match="hosts"):
        topology_from_outputs(broken)


def test_inventory_command_writes_yaml(tmp_path: Path) -> None:
    target = tmp_path / "inventory.yml"
    assert main(["inventory", "--pulumi-outputs", str(OUTPUTS), "-o", str(target)]) == 0
    written = yaml.safe_load(target.read_text())
    assert sorted(written["all"]["children"]) == ["app", "db", "mgmt", "proxy"]


def test_inventory_command_reports_bad_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "outputs.json"
    bad.write_text(json.dumps({"stack": "prod"}))
    assert main(["inventory", "--pulumi-outputs", str(bad)]) == 1
    assert "error:" in capsys.readouterr().err


# -- the backup repositories ---------------------------------------------------------------------

REPOSITORIES = (
    BackupRepository("fsn1", "fsn1.your-objectstorage.com", "notes-backups-fsn1", "fsn1"),
    BackupRepository("nbg1", "nbg1.objectstorage.lab.test", "lab-nbg1", "eu-central", ".lab/offsite/ca.pem"),
    BackupRepository("nbg1", "s3.example.org", "third", "nbg1", "/etc/ssl/s3/../s3/ca.pem"),
)


def _with_backups(outputs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    access = Access(
        proxy_public=proxy_public_from_outputs(outputs),
        admin_cidrs=tuple(outputs["admin_cidrs"]),
        domain=outputs["domain"],
        **fields,
    )
    return build_inventory(topology_from_outputs(outputs), access)["all"]["vars"]


def test_backup_repositories_travel_in_pgbackrests_order(outputs: dict[str, Any]) -> None:
    all_vars = _with_backups(outputs, backup_repositories=REPOSITORIES, backup_retention_days=14)
    assert all_vars["tierwall_backup_repositories"] == [
        {
            "name": "repo1",
            "location": "fsn1",
            "endpoint": "fsn1.your-objectstorage.com",
            "bucket": "notes-backups-fsn1",
            "region": "fsn1",
            "ca_file": "",
        },
        {
            "name": "repo2",
            "location": "nbg1",
            "endpoint": "nbg1.objectstorage.lab.test",
            "bucket": "lab-nbg1",
            "region": "eu-central",
            "ca_file": str(REPO / ".lab" / "offsite" / "ca.pem"),
        },
        {
            "name": "repo3",
            "location": "nbg1",
            "endpoint": "s3.example.org",
            "bucket": "third",
            "region": "nbg1",
            "ca_file": "/etc/ssl/s3/ca.pem",
        },
    ]
    assert all_vars["tierwall_backup_retention_days"] == 14


def test_backup_vars_are_plain_yaml(outputs: dict[str, Any], tmp_path: Path) -> None:
    """Plain lists, mappings and strings: the written inventory reads back as it was built."""
    all_vars = _with_backups(outputs, backup_repositories=REPOSITORIES)
    written = yaml.safe_load(yaml.safe_dump(all_vars))
    assert written["tierwall_backup_repositories"] == all_vars["tierwall_backup_repositories"]
    assert written["tierwall_backup_retention_days"] == 7


def test_without_repositories_the_vars_are_empty_and_the_default_retention(outputs: dict[str, Any]) -> None:
    """An inventory built without the stack's repositories says so: the backup role refuses an empty list."""
    all_vars = _with_backups(outputs)
    assert all_vars["tierwall_backup_repositories"] == []
    assert all_vars["tierwall_backup_retention_days"] == 7


def test_a_relative_ca_file_is_resolved_against_the_given_root(tmp_path: Path) -> None:
    (entry,) = backup_repositories_var(REPOSITORIES[1:2], root=tmp_path)
    assert entry["ca_file"] == str(tmp_path / ".lab" / "offsite" / "ca.pem")
    assert Path(entry["ca_file"]).is_absolute()


def test_a_stacks_inventory_carries_the_backup_repositories_it_was_deployed_with(tmp_path: Path) -> None:
    target = tmp_path / "inventory.yml"
    assert main(["inventory", "--pulumi-outputs", str(OUTPUTS), "-o", str(target)]) == 0
    all_vars = yaml.safe_load(target.read_text())["all"]["vars"]
    recorded = load_outputs(OUTPUTS)
    written = all_vars["tierwall_backup_repositories"]
    assert [(r["name"], r["endpoint"], r["bucket"], r["region"]) for r in written] == [
        (f"repo{n}", r["endpoint"], r["bucket"], r["region"])
        for n, r in enumerate(recorded["backup_repositories"], start=1)
    ]
    assert all_vars["tierwall_backup_retention_days"] == recorded["backup_retention_days"]


def test_outputs_of_a_stack_deployed_before_backups_are_refused_with_the_fix(outputs: dict[str, Any]) -> None:
    older = {k: v for k, v in outputs.items() if not k.startswith("backup_")}
    with pytest.raises(InventoryError, match="pulumi up"):
        backup_from_outputs(older)

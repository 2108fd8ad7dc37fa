"""`tierwall ssh-config` read back by OpenSSH itself: `ssh -G` prints the configuration it resolves
for a host and exits without connecting anywhere."""

from __future__ import annotations

import copy
import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall import cli
from tierwall.lab import inventory as lab_inventory
from tierwall.topology import PROXY, build_topology

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"
KEY = "/home/operator/.ssh/tierwall"

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's client reads the config")


def resolved(config: Path, host: str) -> dict[str, str]:
    """What ssh would use for ``host``: ``ssh -G`` evaluates the file and connects nowhere."""
    result = subprocess.run(
        ["ssh", "-G", "-F", str(config), host],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    pairs = (line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return dict(pairs)


def write_inventory(outputs: dict[str, Any], tmp_path: Path) -> Path:
    """The inventory `tierwall inventory` writes for these outputs."""
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    inventory = tmp_path / "inventory.yml"
    argv = ["inventory", "--pulumi-outputs", str(outputs_file), "--private-key", KEY, "-o", str(inventory)]
    assert cli.main(argv) == 0
    return inventory


def ssh_config(tmp_path: Path, *source: str) -> Path:
    config = tmp_path / "ssh_config"
    assert cli.main(["ssh-config", *source, "-o", str(config)]) == 0
    return config


def scaled_outputs(proxies: int, apps: int) -> dict[str, Any]:
    """The recorded outputs of a stack with more proxies and app servers, addressed by the topology."""
    outputs = json.loads(OUTPUTS.read_text())
    topology = build_topology(
        frontend_cidr=outputs["networks"]["frontend"]["cidr"],
        backend_cidr=outputs["networks"]["backend"]["cidr"],
        proxy_count=proxies,
        app_count=apps,
    )
    hosts = {}
    for number, host in enumerate(topology.hosts):
        entry: dict[str, Any] = {
            "tier": host.tier,
            "private_ips": {i.network: str(i.address) for i in host.interfaces},
        }
        if host.tier == PROXY:
            entry["public_ipv4"] = f"203.0.113.{10 + number}"  # documentation range, never contacted
        hosts[host.name] = entry
    outputs["hosts"] = hosts
    return outputs


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(json.loads(OUTPUTS.read_text()), tmp_path)


@needs_ssh
def test_db_goes_through_the_proxy_then_the_first_app_server(inventory: Path, tmp_path: Path) -> None:
    db = resolved(ssh_config(tmp_path, "--inventory", str(inventory)), "db-1")
    assert db["hostname"] == "10.10.2.30"
    assert db["user"] == "ops"
    assert db["proxyjump"] == "proxy-1,app-1"
    assert db["identityfile"] == KEY
    assert db["identitiesonly"] == "yes"
    assert db["stricthostkeychecking"] == "true"
    assert db["userknownhostsfile"].endswith("/.ssh/known_hosts")


@needs_ssh
def test_the_proxy_is_reached_directly_and_an_app_server_through_it(inventory: Path, tmp_path: Path) -> None:
    config = ssh_config(tmp_path, "--inventory", str(inventory))
    proxy = resolved(config, "proxy-1")
    assert proxy["hostname"] == "203.0.113.10"
    assert "proxyjump" not in proxy
    app = resolved(config, "app-2")
    assert (app["hostname"], app["proxyjump"]) == ("10.10.1.21", "proxy-1")


@needs_ssh
def test_two_proxies_and_three_app_servers(tmp_path: Path) -> None:
    config = ssh_config(tmp_path, "--inventory", str(write_inventory(scaled_outputs(2, 3), tmp_path)))
    text = config.read_text()
    assert [line.split()[1] for line in text.splitlines() if line.startswith("Host ")] == [
        "proxy-1",
        "proxy-2",
        "app-1",
        "app-2",
        "app-3",
        "db-1",
        "mgmt-1",
    ]
    second_proxy = resolved(config, "proxy-2")
    assert second_proxy["hostname"] == "203.0.113.11"
    assert "proxyjump" not in second_proxy
    third_app = resolved(config, "app-3")
    assert (third_app["hostname"], third_app["proxyjump"]) == ("10.10.1.22", "proxy-1")
    db = resolved(config, "db-1")
    assert (db["hostname"], db["proxyjump"]) == ("10.10.2.30", "proxy-1,app-1")
    mgmt = resolved(config, "mgmt-1")
    assert (mgmt["hostname"], mgmt["proxyjump"]) == ("10.10.1.40", "proxy-1")


@needs_ssh
def test_the_management_host_is_one_jump_through_the_proxy(inventory: Path, tmp_path: Path) -> None:
    mgmt = resolved(ssh_config(tmp_path, "--inventory", str(inventory)), "mgmt-1")
    assert mgmt["hostname"] == "10.10.1.40"
    assert mgmt["user"] == "ops"
    assert mgmt["proxyjump"] == "proxy-1"
    assert mgmt["identityfile"] == KEY
    assert mgmt["stricthostkeychecking"] == "true"


@needs_ssh
def test_the_jumps_follow_the_inventorys_chain_not_a_rule_of_their_own(
    inventory: Path, tmp_path: Path
) -> None:
    """An inventory whose db goes through app-2 gets ProxyJump proxy-1,app-2."""
    document = yaml.safe_load(inventory.read_text())
    db = document["all"]["children"]["db"]["hosts"]["db-1"]
    db["ansible_ssh_common_args"] = db["ansible_ssh_common_args"].replace("ops@10.10.1.20", "ops@10.10.1.21")
    inventory.write_text(yaml.safe_dump(document))
    config = ssh_config(tmp_path, "--inventory", str(inventory))
    assert resolved(config, "db-1")["proxyjump"] == "proxy-1,app-2"


def test_a_hop_no_host_has_is_refused(
    inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(inventory.read_text())
    broken = copy.deepcopy(document)
    app = broken["all"]["children"]["app"]["hosts"]["app-1"]
    app["ansible_ssh_common_args"] = app["ansible_ssh_common_args"].replace("203.0.113.10", "192.0.2.99")
    inventory.write_text(yaml.safe_dump(broken))
    assert cli.main(["ssh-config", "--inventory", str(inventory)]) == 1
    err = capsys.readouterr().err
    assert "host app-1 jumps through 192.0.2.99, which no host of the inventory has" in err


def test_the_file_is_written_for_its_owner_only(inventory: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("")
    config.chmod(0o664)
    ssh_config(tmp_path, "--inventory", str(inventory))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


@needs_ssh
def test_lab_reads_the_labs_inventory_with_its_key_and_known_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--lab reads the inventory file only; the lab itself is not touched."""
    known_hosts = tmp_path / "known_hosts"
    document = yaml.safe_load(write_inventory(json.loads(OUTPUTS.read_text()), tmp_path).read_text())
    for group in document["all"]["children"].values():
        for hostvars in group["hosts"].values():
            hostvars["ansible_ssh_common_args"] += f" -o UserKnownHostsFile={known_hosts}"
    lab_file = tmp_path / "lab-inventory.yml"
    lab_file.write_text(yaml.safe_dump(document))
    monkeypatch.setattr(lab_inventory, "INVENTORY", lab_file)
    db = resolved(ssh_config(tmp_path, "--lab"), "db-1")
    assert db["userknownhostsfile"] == str(known_hosts)
    assert db["proxyjump"] == "proxy-1,app-1"


def test_lab_without_an_inventory_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lab_inventory, "INVENTORY", tmp_path / "missing.yml")
    assert cli.main(["ssh-config", "--lab"]) == 1
    assert "`tierwall lab up`" in capsys.readouterr().err

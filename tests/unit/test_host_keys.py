"""Every server has one host key, Ed25519, from its first boot on: cloud-init on Hetzner, the lab's
first boot, and the known_hosts the lab writes. The common role keeps sshd offering only it
(tests/unit/test_common_role.py); the live suites read what sshd really offers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tierwall import cloud_init
from tierwall.lab import machines


@pytest.mark.control("AC-03")
def test_cloud_init_makes_only_an_ed25519_host_key() -> None:
    document = yaml.safe_load(cloud_init.user_data(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIkey ops"]))
    assert document["ssh_deletekeys"] is True
    assert document["ssh_genkeytypes"] == ["ed25519"]
    dropin = next(f for f in document["write_files"] if f["path"] == cloud_init.SSHD_DROPIN_PATH)
    host_keys = [line for line in dropin["content"].splitlines() if line.startswith("HostKey")]
    assert host_keys == ["HostKey /etc/ssh/ssh_host_ed25519_key"]


def test_the_lab_generates_one_ed25519_host_key(tmp_path: Path) -> None:
    argv = machines.host_key_argv(tmp_path, "proxy-1")
    assert argv[:4] == ["ssh-keygen", "-q", "-t", "ed25519"]
    assert "-A" not in argv
    assert argv[-1] == str(tmp_path / "etc/ssh/ssh_host_ed25519_key")


def test_known_hosts_lists_the_offered_key_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine built with `ssh-keygen -A` keeps RSA and ECDSA files its sshd no longer offers."""
    ssh = tmp_path / "etc/ssh"
    ssh.mkdir(parents=True)
    for kind, name in (("ssh-rsa", "rsa"), ("ecdsa-sha2-nistp256", "ecdsa"), ("ssh-ed25519", "ed25519")):
        (ssh / f"ssh_host_{name}_key.pub").write_text(f"{kind} AAAA{name} root@proxy-1\n")
    monkeypatch.setattr(machines, "rootfs", lambda host: tmp_path)
    assert machines.host_public_keys("proxy-1") == ["ssh-ed25519 AAAAed25519"]

"""Configuration that holds an allow-list or a secret is readable by its service and by no one else.

On the hosts as they are: each file's mode has no bit for others, its service's user can read it,
and an unprivileged account (nobody) cannot (HARD-03). squid's and apt-cacher-ng's allow-lists,
apt-cacher-ng's admin credentials, sshd's AllowUsers and PermitOpen, chrony's NTP clients,
pg_hba.conf, the nftables ruleset.
"""

from __future__ import annotations

from typing import Any

import pytest

TIER_GROUP = "all"

# tier (or "all") -> (path, the account that must read it)
ACNG = "/etc/apt-cacher-ng"
FILES = {
    "all": [("/etc/ssh/sshd_config.d/10-tierwall.conf", "root"), ("/etc/chrony/chrony.conf", "_chrony"),
            ("/etc/nftables.conf", "root"), ("/etc/rsyslog.d/50-tierwall-ship.conf", "root")],
    "proxy": [("/etc/squid/squid.conf", "proxy")],
    "app": [(f"{ACNG}/acng.conf", "apt-cacher-ng"), (f"{ACNG}/security.conf", "apt-cacher-ng")],
    "db": [],
    "mgmt": [("/etc/rsyslog.d/40-tierwall-archive.conf", "root")],
}  # fmt: skip


def _files(host: Any, tier: str) -> list[tuple[str, str]]:
    found = FILES["all"] + FILES[tier]
    if tier == "db":
        conf = host.run("ls -d /etc/postgresql/*/main").stdout.split()
        assert conf, "no PostgreSQL cluster configuration on the db"
        found.append((f"{conf[0]}/pg_hba.conf", "postgres"))
    return found


@pytest.mark.control("HARD-03")
@pytest.mark.verify_never("tries each file as its service's user and as nobody (runuser needs root)")
def test_allow_lists_and_secrets_are_readable_by_their_service_only(
    host: Any, hostvars: dict[str, Any]
) -> None:
    problems = []
    for path, reader in _files(host, hostvars["tierwall_tier"]):
        stat = host.file(path)
        if not stat.exists:
            problems.append(f"{path} is missing")
            continue
        if stat.mode & 0o007:
            problems.append(f"{path} is mode {stat.mode:04o}: others may read it")
        if host.run("runuser -u %s -- test -r %s", reader, path).rc != 0:
            problems.append(f"{path}: {reader} cannot read it")
        if host.run("runuser -u nobody -- test -r %s", path).rc == 0:
            problems.append(f"{path}: nobody can read it")
    assert problems == []

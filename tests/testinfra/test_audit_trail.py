"""Every host's own audit trail, read from the running host (AUD-01): sudo's log names the person
who ran each command; the rules compiled for auditd watch the host's accounts, sudoers, sshd's and
the firewall's configuration, logins, its key material (found where its services take it from)
and every root command in a person's session; auditd keeps its records root-only and bounded.

Where the kernel lets the host audit (a VM), the kernel's rules must equal the compiled ones and
auditd must run. The lab's machines are containers: the kernel refuses their rules, and the check
asserts that refusal and that auditd is skipped, not failed, there (never that rules are in
force). tests/integration/test_audit_trail_kernel.py proves the same rules on a real kernel.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

TIER_GROUP = "all"

SUDO_LOG = "/var/log/sudo/sudo.log"
COMPILED = "/etc/audit/audit.rules"
KEY_HELPER = "/usr/local/lib/tierwall/tierwall-pgdata-key"  # the postgresql role's, on a fscrypt db
TLS_KEYS = "/etc/ssl/tierwall/private"  # the pki role's, on every host
CHANGES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/x",
           "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/x", "/var/log/wtmp",
           "/etc/audit/auditd.conf")  # fmt: skip
PRIVILEGED = re.compile(
    r"^-a always,exit -F arch=b64 -S execve -F euid=0 -F auid>=1000 -F auid!=-1 "
    r"-F key=\S+$"
)
WATCH = re.compile(r"^-w (\S+) -p (\S+) -k \S+$")
# systemd-nspawn's seccomp filter refuses audit netlink sockets (auditctl reads EAFNOSUPPORT as "audit
# support not in kernel"); past it, the kernel refuses audit control outside its first PID namespace.
REFUSED = re.compile(r"Cannot open netlink audit socket|Operation not permitted")
ROOT_ONLY = "reads root-only audit files and runs a command as the operator through sudo"


def _in_container(host: Any) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


def _compiled(host: Any) -> list[str]:
    text = host.file(COMPILED).content_string
    return [line for line in text.splitlines() if line.startswith(("-w ", "-a "))]


def _watched(rules: list[str], path: str, perms: str) -> bool:
    """A watch on ``path`` or a directory above it records each of ``perms``."""
    for rule in rules:
        match = WATCH.match(rule)
        if match and (path == match[1] or path.startswith(match[1] + "/")) and set(perms) <= set(match[2]):
            return True
    return False


def _key_material(host: Any) -> list[str]:
    """The key files this host's services use, found on the host: its TLS keys, the app's
    credentials (its unit's LoadCredential), the db's volume (where the data directory is)."""
    found = [f"{TLS_KEYS}/{name}" for name in host.run("ls %s", TLS_KEYS).stdout.split()]
    unit = host.run("systemctl cat tierwall-notes.service")
    found += re.findall(r"^LoadCredential=[^:\s]+:(\S+)$", unit.stdout, re.M) if unit.rc == 0 else []
    # Every cluster's volume: the db's one; the restore drill's host lists none.
    clusters = host.run("pg_lsclusters -h")
    if clusters.rc == 0:
        for line in clusters.stdout.splitlines():
            data = line.split()[5]
            found.append(host.run("findmnt -nro SOURCE --target %s", data).stdout.strip())
    return found


def _configuration(host: Any) -> list[str]:
    """The firewall's ruleset as nftables.service loads it; PostgreSQL's clusters' configuration."""
    unit = host.run("systemctl cat nftables.service").stdout
    found = re.findall(r"^ExecStart=\S*nft -f (\S+)$", unit, re.M)
    # Every cluster's: the db has one; the restore drill's host has PostgreSQL's tools but none.
    clusters = host.run("pg_lsclusters -h")
    if clusters.rc == 0:
        for line in clusters.stdout.splitlines():
            version, cluster = line.split()[:2]
            found.append(f"/etc/postgresql/{version}/{cluster}/postgresql.conf")
    return found


@pytest.mark.control("AUD-01")
@pytest.mark.verify_never(ROOT_ONLY)
def test_a_command_run_through_sudo_is_logged_with_the_person_who_ran_it(
    host: Any, hostvars: dict[str, Any]
) -> None:
    """The operator runs a command through sudo: sudo's root-only log has one line naming the
    operator, root as the target and the command with its arguments; use_pty is in force."""
    person, marker = hostvars.get("ansible_user", "ops"), f"tierwall-audit-{uuid.uuid4().hex}"
    done = host.run("runuser -u %s -- sudo -n /usr/bin/true %s", person, marker)
    assert done.rc == 0, done.stderr
    logged = host.run("grep -F -- %s %s", marker, SUDO_LOG)
    assert logged.rc == 0, f"{marker} is not in {SUDO_LOG}: {logged.stderr}"
    # The suite's own commands reach the host through sudo too, so the marker is on their lines as well.
    command = rf" : {person} : .*USER=root ; COMMAND=/usr/bin/true {marker}$"
    assert re.search(command, logged.stdout, re.M), logged.stdout
    for path in (SUDO_LOG.rsplit("/", 1)[0], SUDO_LOG):
        found = host.file(path)
        assert (found.user, found.mode & 0o077) == ("root", 0), f"{path}: {found.user} {oct(found.mode)}"
    assert "use_pty" in host.run("sudo -l -U %s", person).stdout


@pytest.mark.control("AUD-01")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_rules_watch_the_hosts_configuration_keys_and_root_commands(host: Any) -> None:
    """The rules auditd loads at boot record changes of accounts, sudoers, sshd, logins, the audit
    and firewall configuration (and PostgreSQL's on the db), every read of the key files the
    host's services use, every run of the data key's helper, and root commands in a person's session."""
    rules = _compiled(host)
    missing = [p for p in (*CHANGES, *_configuration(host)) if not _watched(rules, p, "wa")]
    missing += [p for p in _key_material(host) if not _watched(rules, p, "r")]
    if host.file(KEY_HELPER).exists:
        missing += [] if _watched(rules, KEY_HELPER, "xw") else [KEY_HELPER]
    assert missing == [], f"not watched as promised: {missing}"
    assert [r for r in rules if PRIVILEGED.match(r)], "no rule records root commands in a person's session"


@pytest.mark.control("AUD-01")
@pytest.mark.verify_never(ROOT_ONLY)
def test_the_rules_are_in_force_where_the_kernel_lets_the_host_audit(host: Any) -> None:
    """On a VM auditd runs and the kernel's rules are the compiled ones, line for line. In a
    container audit control is refused (by nspawn's seccomp filter, and by the kernel outside its
    first PID namespace), and auditd is skipped by its condition, not failed: nothing claims rules
    that are not in force."""
    status = host.run("auditctl -s")
    unit = host.run("systemctl show -p ActiveState -p ConditionResult auditd.service").stdout
    if _in_container(host):
        assert status.rc != 0, status.stdout
        assert REFUSED.search(status.stdout + status.stderr), status.stdout + status.stderr
        assert "ConditionResult=no" in unit, unit
        assert "ActiveState=inactive" in unit, unit
        return
    assert status.rc == 0, status.stderr
    assert "ActiveState=active" in unit, unit
    assert host.run("auditctl -l").stdout.splitlines() == _compiled(host)


@pytest.mark.control("AUD-01")
@pytest.mark.verify_never(ROOT_ONLY)
def test_auditd_keeps_its_records_root_only_and_bounded(host: Any) -> None:
    """Only root reads the records; a bounded number of rotated files; suspended before a full disk."""
    text = host.file("/etc/audit/auditd.conf").content_string
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)", text, re.M))
    assert settings["log_group"] == "root"
    assert settings["max_log_file_action"] == "ROTATE"
    assert 256 <= int(settings["max_log_file"]) * int(settings["num_logs"]) <= 1024
    assert settings["disk_full_action"] == "SUSPEND"
    directory = host.file("/var/log/audit")
    assert (directory.user, directory.mode & 0o077) == ("root", 0), oct(directory.mode)

"""Every host's kernel and file system baseline, as the host applies it (HARD-02).

Router advertisements ignored, core dumps off for services and logins, unused file systems and
network protocols unloadable, and the shared temporary directories without devices, setuid or
executables. Read from the running host: /proc, the mount table, the limits a new session gets,
modprobe's own view of its configuration, a script that tries to run from each directory.
"""

from __future__ import annotations

from typing import Any

import pytest

TIER_GROUP = "all"

BLOCKED = ("cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "squashfs", "udf", "usb-storage", "firewire-core",
           "dccp", "sctp", "rds", "tipc")  # fmt: skip
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")
FLAGS = {"nodev", "nosuid", "noexec"}


def _in_container(host: Any) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


@pytest.mark.control("HARD-02")
def test_router_advertisements_are_ignored(host: Any) -> None:
    """accept_ra is 0 for all, default and every interface: no route or address from whoever sends an RA."""
    result = host.run("for f in /proc/sys/net/ipv6/conf/*/accept_ra; do echo \"$f $(cat $f)\"; done")
    assert result.rc == 0, result.stderr
    values = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines() if " " in line)
    if not values:
        pytest.skip("this kernel has no IPv6: there is no router advertisement to ignore")
    assert set(values) >= {f"/proc/sys/net/ipv6/conf/{name}/accept_ra" for name in ("all", "default")}
    assert {path for path, value in values.items() if value != "0"} == set()


@pytest.mark.control("HARD-02")
def test_core_dumps_are_off(host: Any) -> None:
    """systemd-coredump keeps nothing (its merged configuration), services start with a core limit
    of 0, and a new session (sudo applies pam_limits) cannot raise its own above 0."""
    merged = host.run("systemd-analyze cat-config systemd/coredump.conf")
    assert merged.rc == 0, merged.stderr
    lines = [line for line in merged.stdout.splitlines() if "=" in line and not line.startswith("#")]
    settings = dict(line.split("=", 1) for line in lines)
    assert settings.get("Storage") == "none"
    assert settings.get("ProcessSizeMax") == "0"
    assert host.run("systemctl show -p DefaultLimitCORE --value").stdout.strip() == "0"
    assert host.run("sh -c 'ulimit -H -c'").stdout.strip() == "0"
    # Every statement of a core limit for all sessions says 0: none that a reader (or a grader
    # that reads them in another order than pam_limits) could take for the one in force.
    every_session = r"^\*\s+(hard|soft|-)\s+core\s"
    stated = host.run("grep -rhE %s /etc/security/limits.conf /etc/security/limits.d", every_session)
    values = {line.split()[3] for line in stated.stdout.splitlines()}
    assert values == {"0"}, stated.stdout


@pytest.mark.control("HARD-02")
def test_unused_modules_cannot_be_loaded(host: Any) -> None:
    """modprobe's configuration as it reads it maps each module to /bin/false; on a VM none of them is
    loaded (a container shares the host's kernel and its module list)."""
    # By its path: /usr/sbin is not on an unprivileged account's PATH (the verify account's).
    config = host.run("/usr/sbin/modprobe --showconfig")
    assert config.rc == 0, config.stderr
    lines = set(config.stdout.splitlines())
    for module in BLOCKED:
        name = module.replace("-", "_")
        assert f"install {name} /bin/false" in lines or f"install {module} /bin/false" in lines, module
    if not _in_container(host):
        loaded = {line.split()[0] for line in host.file("/proc/modules").content_string.splitlines()}
        assert loaded.isdisjoint(m.replace("-", "_") for m in BLOCKED)


@pytest.mark.control("HARD-02")
@pytest.mark.parametrize("path", SHARED_TMP)
def test_shared_temporary_directories_are_nodev_nosuid_noexec(host: Any, path: str) -> None:
    """Mounted with nodev, nosuid and noexec now and in fstab for the next boot; an executable
    written there does not run."""
    live = host.run("findmnt -rn -o TARGET,OPTIONS -T %s", path)
    assert live.rc == 0, live.stderr
    # The mount on top (the last line) where several are stacked on the path.
    target, options = live.stdout.strip().splitlines()[-1].split()[:2]
    assert target == path, f"{path} is not a mount point of its own (it is on {target})"
    assert set(options.split(",")) >= FLAGS, options
    fstab = host.run("findmnt -s -rn -o OPTIONS --mountpoint %s", path)
    assert set(fstab.stdout.strip().split(",")) >= FLAGS, f"fstab: {fstab.stdout}"
    script = ("f=$(mktemp -p %s) && printf '#!/bin/sh\\necho ran\\n' >\"$f\" && chmod 0755 \"$f\"; "
              "\"$f\"; echo \"rc=$?\"; rm -f \"$f\"")  # fmt: skip
    tried = host.run("sh -c %s", script % path)
    assert "ran" not in tried.stdout.split()
    assert "rc=126" in tried.stdout, tried.stdout + tried.stderr


@pytest.mark.control("HARD-02")
def test_a_persons_home_is_not_open_to_other_accounts(host: Any, hostvars: dict[str, Any]) -> None:
    """login.defs makes every new home 0750 and ages any password set later; the account running the
    suite has a home other accounts cannot enter."""
    settings = dict(
        line.split(None, 1) for line in host.file("/etc/login.defs").content_string.splitlines()
        if line.strip() and not line.startswith("#") and len(line.split(None, 1)) == 2
    )  # fmt: skip
    assert settings.get("HOME_MODE", "").strip() == "0750"
    # A password set in an emergency ages out (CIS 5.4.1).
    assert 0 < int(settings.get("PASS_MAX_DAYS", "99999")) <= 365
    assert int(settings.get("PASS_MIN_DAYS", "0")) >= 1
    person = hostvars.get("ansible_user", "ops")
    home = host.user(person).home
    assert host.file(home).mode & 0o007 == 0, f"{home} is open to other accounts"


@pytest.mark.control("HARD-02")
@pytest.mark.verify_never("opens a login shell as the operator (runuser needs root)")
def test_a_persons_own_login_shell_keeps_new_files_from_others(host: Any, hostvars: dict[str, Any]) -> None:
    """The operator's own login shell has umask 027; root's sessions (sudo, Ansible) keep 022, so a
    file a role installs stays readable to the service that runs it."""
    person = hostvars.get("ansible_user", "ops")
    own = host.run("runuser -l %s -s /bin/bash -c umask", person)
    assert own.rc == 0, own.stderr
    assert own.stdout.strip() == "0027", f"{person}'s login shell: umask {own.stdout.strip()}"
    root = host.run("sh -c umask")
    assert root.stdout.strip() == "0022", f"a root session: umask {root.stdout.strip()}"


def test_a_legal_notice_precedes_a_login(host: Any) -> None:
    """/etc/issue and /etc/issue.net carry the operator's notice, not Debian's release banner."""
    for path in ("/etc/issue", "/etc/issue.net"):
        text = host.file(path).content_string
        assert "Authorised access only" in text or "Debian" not in text, f"{path}: {text!r}"
        assert len(text.split()) > 10, f"{path} holds no notice: {text!r}"


def test_the_hosts_resource_use_is_recorded(host: Any) -> None:
    """sysstat's collector is enabled, its timer waits, and its history directory exists."""
    assert host.run("grep -qx 'ENABLED=\"true\"' /etc/default/sysstat").rc == 0
    assert host.run("systemctl is-active sysstat-collect.timer").stdout.strip() == "active"
    assert host.service("sysstat.service").is_enabled


@pytest.mark.control("HARD-02")
def test_an_idle_login_shell_ends_and_cannot_lift_the_limit(host: Any) -> None:
    """A login shell gets TMOUT from the profile, read-only: unsetting it fails."""
    shell = host.run("bash -l -c %s", 'echo "TMOUT=$TMOUT"; unset TMOUT 2>/dev/null; echo "after=$TMOUT"')
    assert shell.rc == 0, shell.stderr
    values = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    assert values.get("TMOUT", "").isdigit(), shell.stdout
    assert 0 < int(values["TMOUT"]) <= 3600
    assert values.get("after") == values["TMOUT"], "TMOUT could be unset"

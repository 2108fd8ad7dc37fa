"""The app role's promises on each app server, checked live (control HARD-01).

The unit's sandbox as systemd applies it (``systemctl show``, ``systemd-analyze security``), the
running process (user, capabilities, sockets), the credentials (root-only at rest, service-only at
run time), nothing sensitive written to disk, and the restart after a crash.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from probes import exposure

TIER_GROUP = "app"
SERVICE = "tierwall-notes.service"
USER = "tierwall-notes"
CREDENTIALS_DIR = "/etc/tierwall-notes/credentials"
CREDENTIALS = ("notes-master-key", "api-token", "notes-db-password", "identity-db-password")
MAX_EXPOSURE = 2.0

pytestmark = [pytest.mark.control("HARD-01")]
# What the verify account may never do here: look at the secrets (docs/operations/verification.md).
SECRETS = ("reads the service's secrets or where they lie (root's 0700 directories, runuser, the "
           "process environment)")


def _show(host: Any, *properties: str) -> dict[str, str]:
    done = host.run("systemctl show %s --property=%s", SERVICE, ",".join(properties))
    assert done.rc == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _main_pid(host: Any) -> int:
    pid = int(_show(host, "MainPID")["MainPID"])
    assert pid > 0, f"{SERVICE} is not running"
    return pid


def test_the_service_runs_and_starts_at_boot(host: Any) -> None:
    service = host.service("tierwall-notes")
    assert service.is_running
    assert service.is_enabled


def test_systemd_analyze_exposure_is_at_most_2(host: Any) -> None:
    """systemd's own scoring of the sandbox: 2.0 or lower is HARD-01's bar (audit/controls.yaml)."""
    assert exposure(host, SERVICE) <= MAX_EXPOSURE


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ("User", USER),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("ReadWritePaths", ""),
        ("Restart", "on-failure"),
        ("UMask", "0077"),
    ],
)
def test_unit_hardening_as_systemd_applies_it(host: Any, prop: str, expected: str) -> None:
    """Each setting as the manager reports it (what runs, not what a file says)."""
    assert sorted(_show(host, prop)[prop].split()) == sorted(expected.split())


def test_system_call_filter_is_an_allow_list(host: Any) -> None:
    value = _show(host, "SystemCallFilter")["SystemCallFilter"]
    assert value, "no SystemCallFilter"
    assert not value.startswith("~"), f"SystemCallFilter is not an allow list: {value[:200]}"
    for forbidden in ("mount", "reboot", "kexec_load", "init_module", "ptrace", "setuid"):
        assert not re.search(rf"(^|\s){forbidden}(\s|$)", value), f"{forbidden} is allowed"


def test_the_process_is_unprivileged(host: Any) -> None:
    """The server runs as the service user with no capabilities at all, and cannot gain any."""
    status = host.file(f"/proc/{_main_pid(host)}/status").content_string
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = host.user(USER).uid
    assert fields["Uid"].split() == [str(uid)] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap].strip(), 16) == 0, f"{cap}={fields[cap].strip()}"
    assert fields["NoNewPrivs"].strip() == "1"
    user = host.user(USER)
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.uid < 1000, "not a system account"


def test_listens_only_on_the_frontend_address(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """Only the proxy's network can reach the app: one TLS socket, on the frontend address."""
    done = host.run("/usr/bin/ss -H -l -n -p -t -u")  # the verify account: through sudo
    assert done.rc == 0, done.stderr
    sockets = sorted(line.split()[4] for line in done.stdout.splitlines() if '"tierwall-notes"' in line)
    assert sockets == [f"{hostvars['tierwall_addresses']['frontend']}:{topology['ports']['app']}"]


@pytest.mark.verify_never(SECRETS)
def test_credentials_at_rest_are_root_only(host: Any) -> None:
    directory = host.file(CREDENTIALS_DIR)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o700)
    for name in CREDENTIALS:
        secret = host.file(f"{CREDENTIALS_DIR}/{name}")
        assert secret.is_file, name
        assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600), name


@pytest.mark.verify_never(SECRETS)
def test_the_service_user_cannot_read_the_files_behind_its_credentials(host: Any) -> None:
    """The service reads its secrets only from systemd's per-service copy, never from the files."""
    key = host.run("ls /etc/ssl/tierwall/private/").stdout.split()
    paths = [f"{CREDENTIALS_DIR}/{name}" for name in CREDENTIALS] + [
        f"/etc/ssl/tierwall/private/{k}" for k in key
    ]
    for path in paths:
        done = host.run("runuser -u %s -- head -c1 %s", USER, path)
        assert done.rc != 0, f"{USER} can read {path}"


@pytest.mark.verify_never(SECRETS)
def test_runtime_credentials_belong_to_the_service_alone(host: Any) -> None:
    """$CREDENTIALS_DIRECTORY holds the secrets (and the TLS key), readable by the service user
    only, on a non-swappable in-memory file system that disappears with the service. systemd 252
    (Debian 12) makes the service user the files' owner; systemd 257 (Debian 13) leaves them to
    root and grants the service user by an ACL entry: either way, read from the owner, the mode
    and the ACL, no account but root and the service user may read them."""
    directory = f"/run/credentials/{SERVICE}"
    for name in (*CREDENTIALS, "tls-key"):
        credential = host.file(f"{directory}/{name}")
        assert credential.exists, name
        readers = _readers(host, f"{directory}/{name}")
        assert readers - {"root"} == {USER}, f"{name}: readable by {sorted(readers)}"
    fs = host.run("findmnt -n -o FSTYPE -T %s", directory).stdout.strip()
    assert fs in ("ramfs", "tmpfs"), fs


# Prints who may read a file: its owner, its group's members and the ACL's named users and
# groups, each only where the mode (or the ACL's mask) grants read; "*" when others may.
_READERS = """
import grp, os, pwd, stat, struct, sys
path = sys.argv[1]; st = os.stat(path); mode = st.st_mode
def members(gid):
    group = grp.getgrgid(gid)
    return {group.gr_name, *group.gr_mem, *(u.pw_name for u in pwd.getpwall() if u.pw_gid == gid)}
try:
    raw = os.getxattr(path, "system.posix_acl_access")
except OSError:
    raw = b""
entries = [struct.unpack_from("<HHI", raw, 4 + 8 * i) for i in range((len(raw) - 4) // 8)]
mask = next((perm for tag, perm, _ in entries if tag == 0x10), 7)
# With an ACL the mode's group bits are its mask; the owning group's own bits are an entry.
group_reads = next((perm & mask & 4 for tag, perm, _ in entries if tag == 0x04), mode & stat.S_IRGRP)
readers = {pwd.getpwuid(st.st_uid).pw_name} if mode & stat.S_IRUSR else set()
if group_reads:
    readers |= members(st.st_gid)
for tag, perm, ident in entries:
    if tag == 0x02 and perm & mask & 4:
        readers.add(pwd.getpwuid(ident).pw_name)
    if tag == 0x08 and perm & mask & 4:
        readers |= members(ident)
if mode & stat.S_IROTH:
    readers.add("*")
print(" ".join(sorted(readers)))
"""


def _readers(host: Any, path: str) -> set[str]:
    done = host.run("python3 -c %s %s", _READERS, path)
    assert done.rc == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.verify_never(SECRETS)
def test_secrets_are_not_in_the_environment_or_the_unit(host: Any) -> None:
    """Secrets are passed as credentials, never as environment variables or unit text."""
    environ = host.file(f"/proc/{_main_pid(host)}/environ").content_string
    names = {entry.split("=", 1)[0] for entry in environ.split("\0") if entry}
    assert not names & {"PGPASSWORD", "TIERWALL_API_TOKEN", "NOTES_DSN", "IDENTITY_DSN"}
    unit = host.file(f"/etc/systemd/system/{SERVICE}").content_string
    for name in ("api-token", "notes-db-password", "identity-db-password", "notes-master-key"):
        secret = host.run("cat %s/%s", CREDENTIALS_DIR, name).stdout.strip()
        assert secret, f"{name} is empty"
        assert secret not in unit, f"{name} is written into the unit"
        assert secret not in environ, f"{name} is in the process environment"


@pytest.mark.verify_never(SECRETS)
def test_nothing_sensitive_is_written_to_disk(host: Any) -> None:
    """The service can write nowhere on disk (ProtectSystem=strict, no ReadWritePaths), its
    temporary directory is on tmpfs, and it owns no file outside /run, /proc and /sys."""
    assert _show(host, "ReadWritePaths")["ReadWritePaths"] == ""
    tmpdir = host.run("tr '\\0' '\\n' < /proc/%s/environ | sed -n 's/^TMPDIR=//p'", str(_main_pid(host)))
    assert tmpdir.stdout.strip(), "TMPDIR is not set"
    fs = host.run("findmnt -n -o FSTYPE -T %s", tmpdir.stdout.strip()).stdout.strip()
    assert fs == "tmpfs", f"TMPDIR {tmpdir.stdout.strip()} is on {fs}"
    owned = host.run(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /run \\) -prune -o -user %s -print", USER
    )
    assert owned.stdout.strip() == "", f"files owned by {USER}:\n{owned.stdout[:2000]}"


def test_the_code_is_not_writable_by_the_service(host: Any) -> None:
    """The virtual environment is root's: a compromised app cannot change its own code."""
    writable = host.run(
        "find /opt/tierwall-notes ! -type l \\( -perm -o+w -o -perm -g+w -o ! -user root \\) -print"
    )
    assert writable.stdout.strip() == "", writable.stdout[:2000]


@pytest.mark.disruptive  # the app is down for a moment
def test_a_crashed_service_is_restarted(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """Restart=on-failure: after SIGKILL a new process serves again within seconds."""
    before = _main_pid(host)
    assert host.run("kill -KILL %s", str(before)).rc == 0
    address, port = hostvars["tierwall_addresses"]["frontend"], topology["ports"]["app"]
    for _ in range(60):
        time.sleep(0.5)
        pid = int(_show(host, "MainPID")["MainPID"])
        if pid not in (0, before) and host.socket(f"tcp://{address}:{port}").is_listening:
            break
    else:
        pytest.fail(f"{SERVICE} did not come back after SIGKILL")
    assert host.service("tierwall-notes").is_running

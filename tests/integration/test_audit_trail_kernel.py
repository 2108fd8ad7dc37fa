"""The audit_trail role's rules in a real kernel: this machine's.

The lab's machines are systemd-nspawn containers, and the kernel accepts audit rules and an audit
daemon only from its initial PID namespace, so no lab machine can load them (the role's README).
Here the rules site.yml renders for each tier are loaded into this machine's kernel, every watched
path moved under a scratch directory (the kernel watches existing directories; this machine has
no /etc/postgresql or app credentials). They must list back exactly as written; then a read of key
material by a person's session, a change of an account file, a run of the data key's helper and a
command run as root in a person's session must each produce a record with that session's login
uid. Only the rules themselves are loaded and removed again, never -D, -e 2 or
--loginuid-immutable (which no one could undo before a reboot); the kernel's enabled flag is put
back. Records are read from the kernel's multicast group, with or without an auditd here.

auditctl comes from Debian's auditd package, fetched with apt-get and unpacked into a scratch
directory, never installed: installing it starts auditd and makes it this machine's audit daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_records import Event, Reader

from tierwall.paths import REPO

sys.path.insert(0, str(REPO / "tests" / "unit"))
from audit_trail_render import audit_variables, render, rules, value
from role_render import render as role_render
from role_render import value as role_value

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads audit rules into this kernel")

HOSTS = {"proxy": "proxy-1", "app": "app-1", "db": "db-1"}
PERSON = 4242  # a login uid >= 1000 with no account here
Auditctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's auditd package (with its libauparse), fetched by apt-get and unpacked, not installed."""
    work = tmp_path_factory.mktemp("auditd")

    def fetch(name: str) -> Path:
        done = subprocess.run(["apt-get", "download", name], cwd=work, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, f"apt-get download {name}: {done.stderr}"
        return next(work.glob(f"{name}_*.deb"))

    auditd = fetch("auditd")
    depends = subprocess.run(["dpkg-deb", "-f", str(auditd), "Depends"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    for deb in (auditd, fetch(re.search(r"libauparse\S*", depends).group(0))):  # type: ignore[union-attr]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
    return work / "root"


@pytest.fixture(scope="module")
def auditctl(package: Path) -> Auditctl:
    program = next(package.glob("*sbin/auditctl"))
    env = {"LD_LIBRARY_PATH": ":".join(str(p) for p in package.glob("**/lib/*-linux-gnu"))}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(program), *argv], capture_output=True, text=True, timeout=30,
                              env={**os.environ, **env}, check=False)  # fmt: skip

    return run


@pytest.fixture(scope="module")
def kernel(auditctl: Auditctl) -> Iterator[Auditctl]:
    """This machine's kernel, audit enabled for the module and its flag put back afterwards."""
    status = auditctl("-s")
    if status.returncode != 0:
        pytest.skip(f"the kernel refuses audit control here ({status.stderr.strip()}): a container")
    enabled = re.search(r"^enabled (\d)", status.stdout, re.M).group(1)  # type: ignore[union-attr]
    if enabled == "2":
        pytest.skip("this machine's audit rules are locked (-e 2) until it reboots")
    assert auditctl("-e", "1").returncode == 0
    yield auditctl
    auditctl("-e", enabled)


def _kinds(host: str) -> tuple[set[str], set[str]]:
    """The watched paths that are directories on a host, and the key programs."""
    found = _tier_variables(host)
    directories = {"/etc/sudoers.d", "/etc/ssh/sshd_config.d", "/etc/audit",
                   role_value("pki", "pki_host_dir", host) + "/private"}  # fmt: skip
    if host == HOSTS["app"]:
        directories.add(role_value("app", "__app_credentials_dir", host))
    if host == HOSTS["db"]:
        directories.add(role_value("postgresql", "__postgresql_conf_dir", host))
    return directories, set(found["audit_trail_key_programs"])


def _tier_variables(host: str, **overrides: Any) -> dict[str, Any]:
    return audit_variables(host, tierwall_volume_device="/dev/vdb", postgresql_encryption_backend="fscrypt",
                           **overrides)  # fmt: skip


def _moved(host: str, scratch: Path) -> dict[str, Any]:
    """The host's variables with every watched path moved under ``scratch``, each created there."""
    directories, programs = _kinds(host)
    watches = []
    for watch in value(_tier_variables(host), "__audit_trail_watches"):
        moved = scratch / watch["path"].lstrip("/")
        moved.parent.mkdir(parents=True, exist_ok=True)
        if watch["path"] in directories:
            moved.mkdir(exist_ok=True)
        else:
            moved.write_text("#!/bin/sh\nexit 0\n" if watch["path"] in programs else "secret\n")
            moved.chmod(0o755 if watch["path"] in programs else 0o644)
        watches.append({**watch, "path": str(moved)})
    for directory in scratch.rglob("*"):
        if directory.is_dir():
            directory.chmod(0o755)
    return _tier_variables(host, __audit_trail_watches=watches)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not pytest's tmp_path: its root is 0700, and the person's session must reach the files.
    path = Path(tempfile.mkdtemp(prefix="tierwall-audit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def loaded(kernel: Auditctl, scratch: Path, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The host's rules (its watches moved under scratch) in the kernel, and only for the test."""
    lines = rules(_moved(HOSTS[request.param], scratch))
    before = kernel("-l").stdout.splitlines()
    (scratch / "tierwall.rules").write_text("\n".join(lines) + "\n")
    done = kernel("-R", str(scratch / "tierwall.rules"))
    try:
        assert done.returncode == 0, done.stderr
        yield [line for line in kernel("-l").stdout.splitlines() if line not in before]
    finally:
        for line in reversed(lines):
            kernel(*re.sub(r"^-w ", "-W ", re.sub(r"^-a ", "-d ", line)).split())


def _as_person(argv: list[str], uid: int | None = None) -> None:
    """``argv`` in a session whose login uid is PERSON, as root or, with ``uid``, as that uid."""
    become = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
    script = f'echo {PERSON} > /proc/self/loginuid && exec "$@"'
    done = subprocess.run(["sh", "-c", script, "sh", *become, *argv], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _recorded(reader: Reader, key: str, path: str | None = None, argv: list[str] | None = None) -> Event:
    def wanted(event: Event) -> bool:
        return (event.key == key and event.fields.get("auid") == str(PERSON)
                and (path is None or path in event.names)
                and (argv is None or event.argv == argv))  # fmt: skip

    found = reader.wait_for(wanted)
    assert found, f"no {key} record with auid={PERSON} for {path or argv}"
    return found[0]


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("loaded", list(HOSTS), indirect=True, ids=list(HOSTS))
def test_the_rules_load_and_list_back_as_written(loaded: list[str], scratch: Path) -> None:
    """Every rule of the tier is accepted by the kernel and listed exactly as the template writes it:
    the drift check of tasks/rules.yml compares the two line by line."""
    assert loaded == (scratch / "tierwall.rules").read_text().splitlines()


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("loaded", ["app"], indirect=True)
def test_a_read_of_the_notes_keyring_names_the_person(loaded: list[str], scratch: Path) -> None:
    """A person's session reading the app's keyring credential leaves a record with their login uid
    and uid; so does a root command in it, with its arguments."""
    keyring = scratch / role_value("app", "__app_credentials_dir", "app-1").lstrip("/") / "notes-master-key"
    keyring.write_text("secret\n")
    keyring.chmod(0o644)
    reader = Reader()
    try:
        _as_person(["cat", str(keyring)], uid=PERSON)
        read = _recorded(reader, "tierwall-key-material", path=str(keyring))
        assert read.fields["uid"] == str(PERSON)
        _as_person(["/bin/echo", "tierwall-audit-check"])
        _recorded(reader, "tierwall-privileged", argv=["/bin/echo", "tierwall-audit-check"])
    finally:
        reader.close()


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("loaded", ["db"], indirect=True)
def test_the_data_key_helper_and_an_account_change_name_the_person(loaded: list[str], scratch: Path) -> None:
    """On the db: a run of the helper the data key passes through, a read of the volume, and a
    change of /etc/passwd, each with the login uid of the session that did it."""
    moved = _moved(HOSTS["db"], scratch)
    helper, volume = moved["audit_trail_key_programs"][0], "/dev/vdb"
    passwd = scratch / "etc" / "passwd"
    reader = Reader()
    try:
        _as_person([str(scratch / helper.lstrip("/"))])
        _recorded(reader, "tierwall-key-use", path=str(scratch / helper.lstrip("/")))
        _as_person(["cat", str(scratch / volume.lstrip("/"))])
        _recorded(reader, "tierwall-key-material", path=str(scratch / volume.lstrip("/")))
        _as_person(["sh", "-c", f"echo intruder:x:0:0::/:/bin/sh >> {passwd}"])
        _recorded(reader, "tierwall-accounts", path=str(passwd))
    finally:
        reader.close()


@pytest.mark.control("AUD-01")
def test_sudoers_accepts_the_audit_drop_in_beside_the_verify_account(tmp_path: Path) -> None:
    """visudo accepts the drop-in as the role installs it, and beside the verify account's list."""
    drop_in = tmp_path / "10-tierwall-audit"
    drop_in.write_text(render(_tier_variables("db-1"), "sudoers-audit.j2"))
    verify = tmp_path / "91-verify"
    verify.write_text(role_render("common", "sudoers-verify.j2", "db-1"))
    for path in (drop_in, verify):
        path.chmod(0o440)
        done = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    both = tmp_path / "both"
    both.write_text(drop_in.read_text() + verify.read_text())
    both.chmod(0o440)
    done = subprocess.run(["visudo", "-cf", str(both)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.control("AUD-01")
def test_auditd_knows_every_setting_the_role_writes(package: Path) -> None:
    """Each key of the role's auditd.conf is one the packaged auditd.conf documents: an unknown key
    stops auditd at start, which the lab's containers (no auditd) would never show."""
    shipped = set(re.findall(r"^#*\s*(\w+)\s*=", (package / "etc/audit/auditd.conf").read_text(), re.M))
    written = re.findall(r"^(\w+)\s*=", render(_tier_variables("db-1"), "auditd.conf.j2"), re.M)
    assert written
    assert sorted(set(written) - shipped) == []

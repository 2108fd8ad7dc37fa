"""What the file_integrity role writes on each tier, rendered as site.yml renders it: AIDE's rules
(what is watched, by which attributes, what is left out), the daily check's unit and timer, and
where the references live. tests/integration/test_file_integrity_aide.py runs the same
configuration through AIDE itself; tests/testinfra/test_file_integrity.py reads the hosts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from role_render import render, value

HOSTS = ("proxy-1", "app-1", "db-1")
RULE = re.compile(r"^(?P<path>/\S*) (?P<types>[a-z,]+) (?P<attrs>\S+)$")
# What a change of any of these would hide: content, type, permissions, owner, group.
MUST = {"sha512", "ftype", "p", "u", "g"}


def _config(host: str, **overrides: Any) -> str:
    return render("file_integrity", "aide.conf.j2", host, **overrides)


def _groups(config: str) -> dict[str, set[str]]:
    """NAME = a+b+c attribute groups the configuration defines."""
    found = {}
    for line in config.splitlines():
        name, equals, attrs = line.partition(" = ")
        if equals and re.fullmatch(r"[A-Z_]+", name):
            found[name] = set(attrs.split("+"))
    return found


def _rules(config: str) -> dict[str, dict[str, set[str]]]:
    """path -> {file type: attributes} of every selection rule."""
    groups, found = _groups(config), {}
    for line in config.splitlines():
        match = RULE.match(line)
        if match:
            for kind in match["types"].split(","):
                found.setdefault(match["path"], {})[kind] = groups.get(match["attrs"], {match["attrs"]})
    return found


@pytest.mark.control("HARD-05")
@pytest.mark.parametrize("host", HOSTS)
def test_programs_libraries_and_configuration_are_watched_by_content_and_ownership(host: str) -> None:
    """Every tier watches the same places; every regular file and link there by its content
    (SHA-512), type, permissions, owner and group; directories by all but content."""
    rules = _rules(_config(host))
    watched = set(value("file_integrity", "file_integrity_watched", host))
    assert {"/etc", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/local", "/root/\\.ssh"} <= watched
    assert set(rules) == watched
    for path, kinds in rules.items():
        assert kinds["f"] >= MUST, path
        assert kinds["l"] >= MUST, path
        assert kinds["d"] >= {"ftype", "p", "u", "g"}, path


@pytest.mark.control("HARD-05")
def test_times_and_inodes_are_not_compared() -> None:
    """A file rewritten with the same content (a converge's template, a package reinstalled) is not a
    change; only what it holds and who may use it are."""
    for attrs in _groups(_config("db-1")).values():
        assert not attrs & {"m", "c", "a", "i", "b", "n"}, attrs


@pytest.mark.control("HARD-05")
def test_only_the_named_volatile_files_are_left_out() -> None:
    """Exclusions are exactly the role's list, each a single file below /etc: nothing that hides a
    directory of programs or configuration."""
    config = _config("app-1")
    excluded = [line[1:] for line in config.splitlines() if line.startswith("!")]
    assert excluded == value("file_integrity", "file_integrity_ignored", "app-1")
    assert all(re.fullmatch(r"/etc/[^/]+\$", rule) for rule in excluded), excluded


@pytest.mark.control("HARD-05")
def test_the_database_is_plain_and_reproducible() -> None:
    """No generation time and no compression: the same files give the same database, so a converge
    that changed nothing leaves the reference as it is."""
    settings = dict(line.split("=", 1) for line in _config("db-1").splitlines() if "=" in line
                    and not line.startswith("#") and " = " not in line)  # fmt: skip
    assert settings["database_add_metadata"] == "no"
    assert settings["gzip_dbout"] == "no"
    assert settings["database_in"] == "file:/var/lib/aide/aide.db"


@pytest.mark.control("HARD-05")
def test_the_check_fails_its_unit_daily_and_runs_without_network_or_writes() -> None:
    """The timer runs the check every day (a missed one at boot); the check runs AIDE against the
    host's copy, fails its unit on a difference, and has no network and a read-only system."""
    timer = render("file_integrity", "tierwall-file-integrity.timer.j2", "db-1")
    service = render("file_integrity", "tierwall-file-integrity.service.j2", "db-1")
    assert {"OnCalendar=daily", "Persistent=true"} <= set(timer.splitlines())
    lines = service.splitlines()
    assert "ExecStart=/usr/bin/aide --config /etc/aide/aide.conf --check" in lines
    assert "ExecStart=/usr/bin/debsums --silent" in lines
    assert not any(line.startswith("SuccessExitStatus") for line in lines)
    assert {"PrivateNetwork=yes", "ProtectSystem=strict", "NoNewPrivileges=yes"} <= set(lines)


@pytest.mark.control("HARD-05")
def test_a_stacks_references_live_where_it_names() -> None:
    """One reference per host, in the directory the stack names (the lab's default is checked by the
    role's validate.yml, which refuses any other target without one)."""
    where = value("file_integrity", "__file_integrity_reference", "db-1",
                  file_integrity_controller_dir="/srv/fim")  # fmt: skip
    assert where == "/srv/fim/db-1.db"

"""What the audit_trail role records on each tier, rendered as site.yml renders it on a host: the
rules auditd loads, auditd's retention and sudo's log. tests/integration/test_audit_trail_kernel.py
loads the same rules into a real kernel; tests/testinfra/test_audit_trail.py reads them back from
the running hosts."""

from __future__ import annotations

import base64
import posixpath
import re
from typing import Any

import pytest
import yaml
from audit_trail_render import audit_variables, render, rules, value
from role_render import ROLES, directives
from role_render import value as role_value

from tierwall.topology import TIERS

HOSTS = {tier: f"{tier}-1" for tier in TIERS}
VOLUME = "/dev/disk/by-id/scsi-0HC_Volume_1"
BASE = {
    "tierwall-accounts": {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"},
    "tierwall-sudoers": {"/etc/sudoers", "/etc/sudoers.d"},
    "tierwall-sshd": {"/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"},
    "tierwall-logins": {"/var/log/lastlog", "/var/log/wtmp", "/var/log/btmp"},
    "tierwall-audit-config": {"/etc/audit"},
}
WATCH = re.compile(r"^-w (?P<path>/\S*) -p (?P<perm>r?w?x?a?) -k (?P<key>[a-z-]+)$")
PRIVILEGED = ("-a always,exit -F arch={} -S execve -F euid=0 -F auid>=1000 -F auid!=-1 "
              "-F key=tierwall-privileged")  # fmt: skip


def _host(tier: str, **kwargs: Any) -> dict[str, Any]:
    return audit_variables(HOSTS[tier], tierwall_volume_device=VOLUME, **kwargs)


def _watches(found: dict[str, Any]) -> dict[str, dict[str, str]]:
    """key -> {path: permissions} of every watch the rendered rules carry."""
    watched: dict[str, dict[str, str]] = {}
    for line in rules(found):
        match = WATCH.match(line)
        if match:
            watched.setdefault(match["key"], {})[match["path"]] = match["perm"]
    return watched


def _rsyslog_configuration(host: str) -> list[str]:
    """What the log_shipping role writes of rsyslog's configuration: its main file (the task that
    installs rsyslog.conf.j2) and the directory its own file goes in, where the other roles' files
    go too. The role keeps no variable for the main file, so its task is read."""
    tasks = yaml.safe_load((ROLES / "log_shipping" / "tasks" / "config.yml").read_text())
    (main,) = [
        t["ansible.builtin.template"]["dest"]
        for t in tasks
        if (t.get("ansible.builtin.template") or {}).get("src") == "rsyslog.conf.j2"
    ]
    return [main, posixpath.dirname(role_value("log_shipping", "__log_shipping_config", host))]


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("tier", HOSTS)
def test_every_host_records_root_commands_accounts_sudoers_sshd_and_logins(tier: str) -> None:
    """The base every tier carries: changes to accounts, sudoers, sshd and the audit system's own
    configuration, the login records, and every program run as root in a person's session."""
    found = _host(tier)
    watched = _watches(found)
    for key, paths in BASE.items():
        assert watched.get(key) == dict.fromkeys(paths, "wa"), key
    executions = [line for line in rules(found) if "execve" in line]
    assert executions == [PRIVILEGED.format("b64"), PRIVILEGED.format("b32")]


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("backend", ["luks", "fscrypt"])
@pytest.mark.parametrize("tier", HOSTS)
def test_configuration_and_key_paths_are_the_owning_roles_own(tier: str, backend: str) -> None:
    """Each watched path is the one the role that writes it writes: the firewall's ruleset,
    rsyslog's configuration (which decides what leaves for the archive) and PostgreSQL's
    configuration changed; the host's private keys, the app's credentials (the notes keyring among
    them) and the db's volume read; the helper the data key passes through run."""
    host = HOSTS[tier]
    found = _host(tier, postgresql_encryption_backend=backend)
    watched = _watches(found)
    config = [role_value("firewall", "firewall_config_path", host), *_rsyslog_configuration(host)]
    keys = [role_value("pki", "pki_host_dir", host) + "/private"]
    programs = []
    if tier == "app":
        keys.append(role_value("app", "__app_credentials_dir", host))
    if tier == "db":
        config.append(role_value("postgresql", "__postgresql_conf_dir", host))
        keys.append(VOLUME)
        if backend == "fscrypt":
            programs.append(role_value("postgresql", "__postgresql_key_helper", host))
    assert watched["tierwall-config"] == dict.fromkeys(config, "wa")
    assert watched["tierwall-key-material"] == dict.fromkeys(keys, "rwa")
    assert watched.get("tierwall-key-use", {}) == dict.fromkeys(programs, "wxa")


@pytest.mark.control("AUD-01")
def test_the_app_keyring_credential_is_below_a_watched_directory() -> None:
    """The notes keyring reaches the app as a credential file in the watched directory."""
    host = HOSTS["app"]
    directory = role_value("app", "__app_credentials_dir", host)
    assert "notes-master-key" in role_value("app", "__app_credential_names", host)
    assert directory in _watches(_host("app"))["tierwall-key-material"]


@pytest.mark.control("AUD-01")
def test_a_symlinked_key_path_is_watched_where_it_points() -> None:
    """A Hetzner volume is named by a /dev/disk/by-id symlink; the kernel watches inodes, so the
    rule names the device the link resolves to on the host."""
    found = _host("db", symlinks={VOLUME: "/dev/sdb"})
    assert set(_watches(found)["tierwall-key-material"]) == {"/etc/ssl/tierwall/private", "/dev/sdb"}


@pytest.mark.control("AUD-01")
@pytest.mark.parametrize("tier", HOSTS)
def test_rules_are_written_as_auditctl_lists_them_and_not_locked(tier: str) -> None:
    """Written as `auditctl -l` prints them (the drift check compares them line by line), each once;
    login uids immutable, the rule set enabled but not locked (README: a locked set refuses the
    next converge's rules until a reboot)."""
    text = render(_host(tier), "tierwall.rules.j2")
    lines = rules(_host(tier))
    assert len(lines) == len(set(lines))
    for line in lines:
        assert WATCH.match(line) or line.startswith("-a always,exit -F arch="), line
    controls = [line for line in text.splitlines() if line.startswith("-") and line not in lines]
    assert controls == ["-D", "-b 8192", "--backlog_wait_time 60000", "-f 1", "--loginuid-immutable", "-e 1"]


@pytest.mark.control("AUD-01")
def test_sudo_logs_every_command_with_the_invoker_into_a_root_only_file() -> None:
    """use_pty, one unwrapped line per command in a file under the root-only directory, no I/O log."""
    found = _host("db")
    text = render(found, "sudoers-audit.j2")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "Defaults use_pty" in lines
    assert f'Defaults logfile="{found["audit_trail_sudo_log_dir"]}/sudo.log"' in lines
    assert "Defaults log_year, log_host, loglinelen=0" in lines
    assert not [line for line in lines if "log_output" in line or "log_input" in line]


@pytest.mark.control("AUD-01")
def test_auditd_keeps_its_records_root_only_rotated_and_bounded() -> None:
    """Only root reads the records; auditd rotates a bounded number of files, warns before it
    suspends, and suspends before the disk is full."""
    found = _host("proxy")
    settings = {key: rest.removeprefix("= ") for key, rest in directives(render(found, "auditd.conf.j2"))}
    assert settings["log_group"] == "root"
    assert settings["max_log_file_action"] == "ROTATE"
    assert 256 <= int(settings["max_log_file"]) * int(settings["num_logs"]) <= 1024
    assert int(settings["admin_space_left"]) < int(settings["space_left"])
    assert settings["admin_space_left_action"] == settings["disk_full_action"] == "SUSPEND"


def _reload_needed(found: dict[str, Any], listed: list[str]) -> bool:
    """tasks/rules.yml's condition for loading the rules again: the compiled file (as read back from
    the host) against what `auditctl -l` lists."""
    tasks = yaml.safe_load((ROLES / "audit_trail" / "tasks" / "rules.yml").read_text())
    (task,) = [t for t in tasks if t["name"].startswith("Load the compiled rules")]
    compiled = "## generated\n-D\n-b 8192\n-f 1\n" + "\n".join(rules(found)) + "\n-e 1\n"
    scope = {
        **found,
        "__audit_trail_kernel": True,
        "__audit_trail_compiled_text": {"content": base64.b64encode(compiled.encode()).decode()},
        "__audit_trail_in_force": {"stdout_lines": listed},
    }
    return all(value(scope, condition) for condition in task["when"])


@pytest.mark.control("AUD-01")
def test_the_kernel_gets_the_rules_again_when_its_own_differ() -> None:
    """On a VM every converge compares the kernel's rules with the compiled ones: equal, nothing is
    loaded; a rule deleted by hand (auditctl -W) or all of them (auditctl -D), they are loaded again."""
    found = _host("db", postgresql_encryption_backend="fscrypt")
    declared = rules(found)
    assert not _reload_needed(found, declared)
    assert _reload_needed(found, declared[1:])
    assert _reload_needed(found, [])

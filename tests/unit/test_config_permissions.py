"""Configuration that holds an allow-list or a secret is installed readable by its service alone.

Read from the roles' own tasks (the mode, owner and group each file is installed with) and the
cloud-init user data; tests/testinfra/test_config_permissions.py reads the files' modes on the hosts
and tries them as the service's user and as an unprivileged one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from role_render import ROLES, value

from tierwall import cloud_init

# role, task file, the task's dest (as written in the task), owner, group, mode; the group is the
# service's that reads the file (root: only root reads it).
ACNG = "{{ __apt_proxy_config_dir }}"
FILES = [
    ("egress_proxy", "config.yml", "{{ __egress_proxy_config }}", "root", "proxy", "0640"),
    ("apt_proxy", "config.yml", f"{ACNG}/acng.conf", "root", "apt-cacher-ng", "0640"),
    ("apt_proxy", "config.yml", f"{ACNG}/security.conf", "root", "apt-cacher-ng", "0640"),
    ("common", "sshd.yml", "{{ __common_sshd_dropin }}", "root", "root", "0600"),
    ("common", "time.yml", "/etc/chrony/chrony.conf", "root", "_chrony", "0640"),
    ("postgresql", "config.yml", "{{ __postgresql_conf_dir }}/pg_hba.conf", "postgres", "postgres", "0640"),
    ("firewall", "ruleset.yml", "{{ firewall_config_path }}", "root", "root", "0750"),
]  # fmt: skip


def _task(role: str, file: str, dest: str) -> dict[str, Any]:
    tasks = yaml.safe_load((ROLES / role / "tasks" / file).read_text())
    for task in tasks:
        for module in ("ansible.builtin.template", "ansible.builtin.file", "ansible.builtin.copy"):
            args = task.get(module) or {}
            if dest in (args.get("dest"), args.get("path")):
                return args
    raise AssertionError(f"{role}/tasks/{file}: no task installs {dest}")


@pytest.mark.control("HARD-03")
@pytest.mark.parametrize(("role", "file", "dest", "owner", "group", "mode"), FILES,
                         ids=[f"{r}:{d.rsplit('/', 1)[-1]}" for r, _, d, *_ in FILES])
def test_allow_lists_and_secrets_are_not_world_readable(
    role: str, file: str, dest: str, owner: str, group: str, mode: str
) -> None:
    args = _task(role, file, dest)
    got_group = args.get("group", "")
    if "{{" in str(got_group):
        got_group = value(role, got_group.strip("{} "), "proxy-1")
    assert (args.get("owner"), got_group, args.get("mode")) == (owner, group, mode)
    assert int(mode, 8) & 0o007 == 0


@pytest.mark.control("HARD-03")
def test_cloud_init_writes_the_sshd_dropin_for_root_only() -> None:
    dropin = next(f for f in cloud_init.cloud_config(["ssh-ed25519 AAAA k"])["write_files"]
                  if f["path"] == cloud_init.SSHD_DROPIN_PATH)  # fmt: skip
    assert dropin["permissions"] == "0600"


def test_every_listed_task_file_exists() -> None:
    for role, file, *_ in FILES:
        assert Path(ROLES / role / "tasks" / file).is_file()

"""Every Ansible role describes its inputs once, consistently, and the playbook parses.

Drift between defaults/main.yml and meta/argument_specs.yml is the most common defect of
popular roles: a variable documented with one default and shipped with another, or not
validated at all. A stray unprefixed variable leaks into every other role's namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tierwall.inventory import Access, build_inventory, write_inventory
from tierwall.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
ROLES = sorted(p for p in (ANSIBLE / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
VENV_BIN = REPO / ".venv" / "bin"
# The base every host runs (common, firewall) and the two egress proxies; the template-header rule
# is enforced on these.
BASE_ROLES = [r for r in ROLES if r.name in ("common", "firewall", "egress_proxy", "apt_proxy")]


def _notified(node: Any) -> set[str]:
    """Every handler name or topic a task list notifies (notify: X or notify: [X, Y]), nested blocks too."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _notified(item)
    elif isinstance(node, dict):
        notify = node.get("notify")
        if isinstance(notify, str):
            found.add(notify)
        elif isinstance(notify, list):
            found |= {str(n) for n in notify}
        for key in ("block", "rescue", "always"):
            found |= _notified(node.get(key))
    return found


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _spec(role: Path) -> dict[str, Any]:
    spec = _yaml(role / "meta" / "argument_specs.yml")
    assert spec, f"{role.name}: meta/argument_specs.yml is missing or empty"
    return spec["argument_specs"]["main"].get("options", {})


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_defaults_and_argument_specs_agree(role: Path) -> None:
    """Same keys, same defaults: the spec is the one description of the role's inputs."""
    defaults = _yaml(role / "defaults" / "main.yml") or {}
    options = _spec(role)
    assert sorted(defaults) == sorted(options), (
        f"{role.name}: only in defaults {sorted(set(defaults) - set(options))}, "
        f"only in argument_specs {sorted(set(options) - set(defaults))}"
    )
    for name, value in defaults.items():
        assert "default" in options[name], f"{role.name}: {name} has no default in argument_specs"
        assert options[name]["default"] == value, (
            f"{role.name}: {name} defaults to {value!r} but argument_specs says {options[name]['default']!r}"
        )
        assert options[name].get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_variables_carry_the_role_prefix(role: Path) -> None:
    """Public variables are <role>_x, internal ones __<role>_x: no name can collide across roles."""
    defaults = _yaml(role / "defaults" / "main.yml") or {}
    internal = _yaml(role / "vars" / "main.yml") or {}
    assert [n for n in defaults if not n.startswith(f"{role.name}_")] == []
    assert [n for n in internal if not n.startswith(f"__{role.name}_")] == []


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_handler_is_notified(role: Path) -> None:
    """A handler no task notifies is dead code (and hides a restart that never happens)."""
    handlers = _yaml(role / "handlers" / "main.yml") or []
    notified: set[str] = set()
    for path in (role / "tasks").glob("*.yml"):
        notified |= _notified(_yaml(path))
    notified |= _notified(handlers)  # a handler may notify another
    for handler in handlers:
        names = {handler["name"]} | set(
            [handler["listen"]] if isinstance(handler.get("listen"), str) else handler.get("listen") or []
        )
        assert names & notified, f"{role.name}: handler {handler['name']!r} is never notified"


@pytest.mark.parametrize("role", BASE_ROLES, ids=[r.name for r in BASE_ROLES])
def test_templates_start_with_the_ansible_managed_header(role: Path) -> None:
    """Whoever opens a rendered file on a host learns it is managed and will be overwritten."""
    for template in sorted((role / "templates").glob("*.j2")):
        head = "\n".join(template.read_text().splitlines()[:3])
        assert "{{ ansible_managed }}" in head, f"{role.name}: {template.name} lacks the header"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_templates_are_valid_jinja(role: Path) -> None:
    """Every template parses as Jinja (a file that embeds braces of its own, such as a Python
    f-string or JSON, must mark them raw): a syntax error would otherwise first show on a host."""
    environment = jinja2.Environment(extensions=["jinja2.ext.do"])
    for template in sorted((role / "templates").glob("*.j2")):
        try:
            environment.parse(template.read_text())
        except jinja2.TemplateSyntaxError as exc:
            pytest.fail(f"{role.name}: {template.name} line {exc.lineno}: {exc.message}")


@pytest.mark.skipif(not (VENV_BIN / "ansible-playbook").exists(), reason="ansible-playbook is not in .venv")
def test_site_playbook_syntax(tmp_path: Path) -> None:
    """site.yml parses, with its roles and filter plugin, against an inventory shaped like the lab's."""
    inventory = build_inventory(
        build_topology(app_count=2),
        Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",),
               domain="notes.lab.test", target="lab"),
    )
    path = write_inventory(inventory, tmp_path / "inventory.yml")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(tmp_path)}
    done = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", str(path),
         str(ANSIBLE / "playbooks" / "site.yml")],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not shutil.which("apt-config"), reason="apt-config (Debian's apt) is not installed")
def test_apt_templates_parse(tmp_path: Path) -> None:
    """The apt.conf.d files the common role writes parse with apt-config, as validate: does on the host."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ANSIBLE / "roles" / "common" / "templates"),
                             trim_blocks=True, undefined=jinja2.StrictUndefined)
    context = {**_yaml(ANSIBLE / "roles" / "common" / "defaults" / "main.yml"),
               "ansible_managed": "Ansible managed",
               "common_apt_proxy_url": "http://10.10.1.10:3128",
               "common_apt_https_proxy_url": "http://10.10.1.10:3128"}
    for name in ("apt-proxy.conf.j2", "20auto-upgrades.j2", "52tierwall-unattended-upgrades.j2"):
        path = tmp_path / name
        path.write_text(env.get_template(name).render(context))
        done = subprocess.run(
            ["apt-config", "--config-file", str(path), "dump"], capture_output=True, text=True
        )
        assert done.returncode == 0, f"{name}: {done.stderr}"
        if name == "52tierwall-unattended-upgrades.j2":
            key = "Unattended-Upgrade::Origins-Pattern:: "
            patterns = [line for line in done.stdout.splitlines() if line.startswith(key)]
            assert len(patterns) == len(context["common_unattended_origins_patterns"])
            assert all("Debian-Security" in line for line in patterns)


# What `ssh -Q kex` prints on Debian 12 (OpenSSH 9.2p1-2+deb12u6) and Debian 13 (10.0p1-7+deb13u4).
KEX_DEBIAN_12 = [
    "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
    "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
]
KEX_DEBIAN_13 = [*KEX_DEBIAN_12, "mlkem768x25519-sha256"]


def _common_value(expression: str, offered: list[str], **overrides: Any) -> Any:
    """A common role variable as Ansible computes it, for a host whose `ssh -Q kex` printed ``offered``."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    role = ANSIBLE / "roles" / "common"
    variables = dict(loader.load_from_file(str(role / "defaults" / "main.yml"), trusted_as_template=True))
    variables.update(loader.load_from_file(str(role / "vars" / "main.yml"), trusted_as_template=True))
    variables.update(__common_sshd_kex_offered={"stdout_lines": offered}, **overrides)
    return Templar(loader=loader, variables=variables).template(trust_as_template(expression))


def test_sshd_kex_prefers_post_quantum_where_openssh_offers_it() -> None:
    """Debian 13 gets ML-KEM first, then sntrup; Debian 12's sshd is never handed ML-KEM (it would
    refuse the drop-in), and keeps sntrup first."""
    trixie = _common_value("{{ __common_sshd_kex_effective }}", KEX_DEBIAN_13)
    bookworm = _common_value("{{ __common_sshd_kex_effective }}", KEX_DEBIAN_12)
    assert trixie[:3] == [
        "mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
    ]
    assert "mlkem768x25519-sha256" not in bookworm
    assert bookworm[0].startswith("sntrup761x25519-sha512")
    for offered in (KEX_DEBIAN_12, KEX_DEBIAN_13):
        assert _common_value("{{ __common_sshd_kex_unknown }}", offered) == []


def test_sshd_kex_refuses_a_name_no_openssh_offers() -> None:
    """Only names a later OpenSSH brings may be left out silently; a misspelt one is reported."""
    kex = ["curve25519-sha256", "curve25519-sha265"]
    unknown = _common_value("{{ __common_sshd_kex_unknown }}", KEX_DEBIAN_13, common_sshd_kex_algorithms=kex)
    assert unknown == ["curve25519-sha265"]
    assert _common_value("{{ __common_sshd_kex_unknown }}", KEX_DEBIAN_12,
                         common_sshd_kex_algorithms=["mlkem768x25519-sha256", *kex[:1]]) == []

"""The audit_trail role as site.yml renders it on a host: the inputs site.yml passes from the
variables of the roles that own each path, evaluated with those roles' defaults and vars, then the
role's templates. Used by the unit tests and by the integration test that loads the rules into a
real kernel."""

from __future__ import annotations

import re
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from role_render import REPO, ROLES, variables

SITE = REPO / "ansible" / "playbooks" / "site.yml"
# The roles whose variables site.yml's include of audit_trail reads (its own last: role_path).
OWNERS = ("common", "firewall", "pki", "postgresql", "app", "audit_trail")
RULE = re.compile(r"^-[wa] ")


def site_inputs() -> dict[str, str]:
    """The ``vars`` of site.yml's include of the audit_trail role, as written there."""
    for play in yaml.safe_load(SITE.read_text()):
        for task in play.get("tasks", []):
            if (task.get("ansible.builtin.include_role") or {}).get("name") == "audit_trail":
                return dict(task["vars"])
    raise LookupError(f"{SITE} does not include the audit_trail role")


def _template(found: dict[str, Any], text: str) -> Any:
    return Templar(loader=DataLoader(), variables=found).template(trust_as_template(text))


def audit_variables(host: str, symlinks: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The role's variables on ``host``: site.yml's inputs resolved, and the key paths' stat as the
    host would answer it (``symlinks`` maps a path to the target it points to)."""
    found: dict[str, Any] = {}
    for role in OWNERS:
        found.update(variables(role, host, **overrides))
    for name, expression in site_inputs().items():
        found[name] = _template(found, expression)
    found.update(overrides)
    links = symlinks or {}
    found["__audit_trail_key_stat"] = {"results": [
        {"item": path, "stat": {"exists": True, "islnk": path in links, "lnk_source": links.get(path)}}
        for path in found["audit_trail_key_paths"]
    ]}  # fmt: skip
    return found


def value(found: dict[str, Any], expression: str) -> Any:
    return _template(found, "{{ " + expression + " }}")


def render(found: dict[str, Any], template: str) -> str:
    return _template(found, (ROLES / "audit_trail" / "templates" / template).read_text())


def rules(found: dict[str, Any]) -> list[str]:
    """The rule lines (watches and syscall rules) of the rendered rules file, in order."""
    return [line for line in render(found, "tierwall.rules.j2").splitlines() if RULE.match(line)]

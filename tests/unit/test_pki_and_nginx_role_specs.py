"""The pki and nginx roles describe their inputs once: meta/argument_specs.yml and
defaults/main.yml must agree, every input carries the role's prefix, and the two roles agree on
the paths and names that join them (CA file, certificate paths, the app servers' TLS name)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.paths import REPO

ROLES = REPO / "ansible" / "roles"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _spec(role: str) -> dict[str, Any]:
    return _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


def _defaults(role: str) -> dict[str, Any]:
    return _yaml(ROLES / role / "defaults" / "main.yml")


@pytest.mark.parametrize("role", ["pki", "nginx"])
def test_argument_specs_and_defaults_agree(role: str) -> None:
    spec, defaults = _spec(role), _defaults(role)
    assert sorted(spec) == sorted(defaults), (
        f"{role}: only in argument_specs {sorted(set(spec) - set(defaults))}, "
        f"only in defaults {sorted(set(defaults) - set(spec))}"
    )
    for name, option in spec.items():
        assert option.get("default") == defaults[name], f"{role}: {name} default differs in the two files"
        assert option.get("description"), f"{role}: {name} has no description"
        if "choices" in option:
            assert defaults[name] in option["choices"], f"{role}: {name} default is not among its choices"


@pytest.mark.parametrize("role", ["pki", "nginx"])
def test_every_input_and_internal_variable_is_prefixed(role: str) -> None:
    for name in _defaults(role):
        assert name.startswith(f"{role}_"), f"{role}: public variable {name} lacks the {role}_ prefix"
    for name in _yaml(ROLES / role / "vars" / "main.yml"):
        assert name.startswith(f"__{role}_"), f"{role}: internal variable {name} lacks the __{role}_ prefix"


def test_every_nginx_variable_the_templates_use_is_an_input() -> None:
    known = set(_defaults("nginx")) | set(_yaml(ROLES / "nginx" / "vars" / "main.yml"))
    known |= {"__nginx_tls_certificate", "__nginx_tls_key", "__nginx_tls_chain"}  # set by tls.yml
    templates = [*(REPO / "templates" / "nginx").rglob("*.j2"), *(ROLES / "nginx" / "templates").glob("*.j2")]
    for template in templates:
        for name in set(re.findall(r"\b(_{0,2}nginx_[a-z0-9_]+)\b", template.read_text())):
            assert name in known, f"{template.relative_to(REPO)} uses {name}, which no file defines"


def test_nginx_and_pki_agree_on_paths_and_names() -> None:
    pki, nginx = _defaults("pki"), _defaults("nginx")
    host_dir = pki["pki_host_dir"]
    assert nginx["nginx_upstream_ca_file"] == f"{host_dir}/ca.crt"
    assert nginx["nginx_internal_ca_certificate"] == f"{host_dir}/{{{{ inventory_hostname }}}}.crt"
    assert nginx["nginx_internal_ca_key"] == f"{host_dir}/private/{{{{ inventory_hostname }}}}.key"
    # Every app server's certificate carries app.<pki_internal_domain>; nginx checks that name.
    assert nginx["nginx_upstream_tls_name"] == f"app.{pki['pki_internal_domain']}"

"""The app role and the application agree on their interface, and the unit keeps its sandbox.

The live checks (tests/testinfra/test_application.py) prove the running service; these catch the
drift that would break it before a converge: a credential the app reads that the unit does not
load, an environment variable the app does not know, a hardening line lost in an edit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from tierwall_notes import settings

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "app"
UNIT = (ROLE / "templates" / "tierwall-notes.service.j2").read_text()
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
APP_SOURCE = "\n".join(p.read_text() for p in (REPO / "app" / "src" / "tierwall_notes").glob("*.py"))


def test_every_credential_the_app_reads_is_loaded_by_the_unit() -> None:
    app_names = {
        settings.MASTER_KEY_CREDENTIAL,
        settings.API_TOKEN_CREDENTIAL,
        settings.NOTES_PASSWORD_CREDENTIAL,
        settings.IDENTITY_PASSWORD_CREDENTIAL,
    }
    assert set(ROLE_VARS["__app_credential_names"]) == app_names | {"tls-key"}
    assert "LoadCredential={{ name }}:{{ __app_credentials_dir }}/{{ name }}" in UNIT
    assert "LoadCredential=tls-key:{{ app_tls_key }}" in UNIT
    assert "Environment=TIERWALL_TLS_KEY=%d/tls-key" in UNIT


def test_every_environment_variable_of_the_unit_is_read_by_the_app() -> None:
    names = re.findall(r"^Environment=([A-Z_]+)=", UNIT, re.M)
    python_runtime = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TMPDIR"}
    # settings.build_conninfo reads TIERWALL_<PREFIX>_DB and _DB_USER for NOTES and IDENTITY.
    assert 'f"TIERWALL_{prefix}_DB"' in APP_SOURCE
    assert 'f"TIERWALL_{prefix}_DB_USER"' in APP_SOURCE
    names = [n for n in names if not re.fullmatch(r"TIERWALL_(NOTES|IDENTITY)_DB(_USER)?", n)]
    unknown = [
        n for n in names if n not in python_runtime and f'"{n}"' not in APP_SOURCE and n not in APP_SOURCE
    ]
    assert unknown == [], f"the app reads none of {unknown}"
    assert not re.search(r"PASSWORD|TOKEN|SECRET|KEY=(?!%d)", "\n".join(names)), "a secret in the environment"


@pytest.mark.control("HARD-01")
@pytest.mark.parametrize(
    "line",
    [
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
        "MemoryDenyWriteExecute=yes",
        "Restart=on-failure",
        "UMask=0077",
        "User={{ __app_user }}",
    ],
)
def test_the_unit_keeps_its_hardening(line: str) -> None:
    assert re.search(rf"^{re.escape(line)}$", UNIT, re.M), f"missing from the unit: {line}"


def test_the_unit_grants_no_writable_path_on_disk() -> None:
    assert not re.search(r"^(ReadWritePaths|StateDirectory|CacheDirectory|LogsDirectory)=", UNIT, re.M)

"""Settings from the environment and credential files: no database needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from tierwall_notes.settings import ConfigError, build_conninfo, load_settings


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    directory = tmp_path / "creds"
    directory.mkdir()
    for name, value in (("notes-db-password", "pw-notes"), ("identity-db-password", "pw-identity")):
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o400)
    return directory


@pytest.fixture
def env(creds: Path) -> dict[str, str]:
    return {
        "CREDENTIALS_DIRECTORY": str(creds),
        "PGSSLROOTCERT": "/etc/tierwall/ca.pem",
        "TIERWALL_DB_HOST": "10.10.2.10",
        "TIERWALL_LISTEN_HOST": "10.10.1.20",
        "TIERWALL_TLS_CERT": "/etc/tierwall/app.pem",
        "TIERWALL_TLS_KEY": "/run/credentials/app.key",
        "TIERWALL_MAX_BODY_BYTES": "262144",
    }


@pytest.mark.control("ENC-02")
def test_component_settings_give_verify_full_conninfos(env: dict[str, str], creds: Path) -> None:
    settings = load_settings(env)
    notes = conninfo_to_dict(settings.notes_conninfo)
    identity = conninfo_to_dict(settings.identity_conninfo)
    assert notes == {
        "host": "10.10.2.10",
        "port": "5432",
        "dbname": "notes",
        "user": "notes_app",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/tierwall/ca.pem",
        "application_name": "tierwall-notes",
        "connect_timeout": "5",
        "password": "pw-notes",
    }
    assert identity["dbname"] == "identity"
    assert identity["user"] == "identity_app"
    assert identity["password"] == "pw-identity"
    assert settings.listen_port == 8443
    assert settings.master_key_file == creds / "notes-master-key"
    assert settings.api_token_file == creds / "api-token"


@pytest.mark.control("ENC-02")
def test_dsn_overrides_components_and_gains_tls(env: dict[str, str]) -> None:
    env["NOTES_DSN"] = "host=db.internal port=6432 dbname=n user=u"
    notes = conninfo_to_dict(load_settings(env).notes_conninfo)
    assert (notes["host"], notes["port"], notes["dbname"], notes["user"]) == ("db.internal", "6432", "n", "u")
    assert notes["sslmode"] == "verify-full"
    assert notes["sslrootcert"] == "/etc/tierwall/ca.pem"


@pytest.mark.control("ENC-02")
@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-ca"])
def test_weaker_sslmodes_are_refused(env: dict[str, str], mode: str) -> None:
    env["IDENTITY_DSN"] = f"host=db dbname=identity user=identity_app sslmode={mode}"
    with pytest.raises(ConfigError, match="only verify-full"):
        load_settings(env)


def test_password_in_dsn_is_refused(env: dict[str, str]) -> None:
    env["NOTES_DSN"] = "host=db dbname=notes user=notes_app password=oops"
    with pytest.raises(ConfigError, match="must not carry a password"):
        load_settings(env)


@pytest.mark.parametrize(
    "name", ["PGSSLROOTCERT", "CREDENTIALS_DIRECTORY", "TIERWALL_TLS_CERT", "TIERWALL_DB_HOST"]
)
def test_missing_required_settings_are_named(env: dict[str, str], name: str) -> None:
    del env[name]
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


def test_world_readable_password_file_is_refused(env: dict[str, str], creds: Path) -> None:
    (creds / "notes-db-password").chmod(0o644)
    with pytest.raises(ConfigError, match="accessible to other users"):
        load_settings(env)


def test_without_password_file_no_password_is_sent(tmp_path: Path) -> None:
    env = {"PGSSLROOTCERT": "/ca.pem", "TIERWALL_DB_HOST": "db"}
    params = conninfo_to_dict(build_conninfo(env, "NOTES", "notes", "notes_app", tmp_path / "absent"))
    assert "password" not in params


@pytest.mark.parametrize(
    ("name", "value"), [("TIERWALL_LISTEN_PORT", "http"), ("TIERWALL_LISTEN_PORT", "70000")]
)
def test_bad_port_is_refused(env: dict[str, str], name: str, value: str) -> None:
    env[name] = value
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


@pytest.mark.parametrize("value", ["", "512", "many"])
def test_the_body_limit_must_be_given(env: dict[str, str], value: str) -> None:
    """The limit comes from the deployment, which gives nginx the same value: never a default of the app's."""
    with pytest.raises(ConfigError, match="TIERWALL_MAX_BODY_BYTES"):
        load_settings({**env, "TIERWALL_MAX_BODY_BYTES": value})
    assert load_settings(env).max_body_bytes == 262144

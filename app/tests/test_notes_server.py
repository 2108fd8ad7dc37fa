"""The uvicorn configuration the console entry point runs: no database needed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from notes_testkit import Pki, make_pki, write_secret
from tierwall_notes import server
from tierwall_notes.server import uvicorn_config
from tierwall_notes.settings import ConfigError, load_settings


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    pki: Pki = make_pki(tmp_path)
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "notes-master-key", f"k1: {base64.b64encode(os.urandom(32)).decode()}")
    write_secret(creds / "api-token", "t" * 48)
    return {
        "CREDENTIALS_DIRECTORY": str(creds),
        "PGSSLROOTCERT": str(pki.ca_cert),
        "TIERWALL_DB_HOST": "127.0.0.1",
        "TIERWALL_LISTEN_HOST": "127.0.0.1",
        "TIERWALL_LISTEN_PORT": "9443",
        "TIERWALL_TLS_CERT": str(pki.server_cert),
        "TIERWALL_TLS_KEY": str(pki.server_key),
        "TIERWALL_MAX_BODY_BYTES": "262144",
    }


def test_uvicorn_serves_tls_without_access_log_or_proxy_headers(env: dict[str, str]) -> None:
    config = uvicorn_config(load_settings(env))
    assert (config.host, config.port) == ("127.0.0.1", 9443)
    assert config.ssl_certfile == env["TIERWALL_TLS_CERT"]
    assert config.ssl_keyfile == env["TIERWALL_TLS_KEY"]
    assert config.access_log is False
    assert config.proxy_headers is False
    assert config.server_header is False


@pytest.mark.parametrize("credential", ["notes-master-key", "api-token"])
def test_missing_credentials_stop_the_start(env: dict[str, str], credential: str) -> None:
    (Path(env["CREDENTIALS_DIRECTORY"]) / credential).unlink()
    with pytest.raises(ConfigError, match=credential):
        uvicorn_config(load_settings(env))


def test_missing_tls_key_stops_the_start(env: dict[str, str]) -> None:
    Path(env["TIERWALL_TLS_KEY"]).unlink()
    with pytest.raises(ConfigError, match="TLS file"):
        uvicorn_config(load_settings(env))


def test_main_exits_2_on_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "PGSSLROOTCERT"):
        monkeypatch.delenv(name, raising=False)
    assert server.main() == 2
    assert "configuration error" in capsys.readouterr().err

"""Runtime settings, read once from the environment and from systemd credentials.

Secrets never come from environment variables: they are files in ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``), readable only by the service. See app/README.md for the interface.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Names of the credential files in $CREDENTIALS_DIRECTORY.
MASTER_KEY_CREDENTIAL = "notes-master-key"
API_TOKEN_CREDENTIAL = "api-token"
NOTES_PASSWORD_CREDENTIAL = "notes-db-password"
IDENTITY_PASSWORD_CREDENTIAL = "identity-db-password"

REQUIRED_SSLMODE = "verify-full"


class ConfigError(RuntimeError):
    """The environment or a credential file does not describe a usable configuration."""


@dataclass(frozen=True)
class Settings:
    listen_host: str
    listen_port: int
    tls_cert: Path
    tls_key: Path
    credentials_dir: Path
    notes_conninfo: str
    identity_conninfo: str
    pool_min_size: int
    pool_max_size: int
    log_level: str
    # The largest request body accepted. The deployment gives it (the same value nginx refuses
    # larger bodies with at the edge), so the two ends cannot disagree.
    max_body_bytes: int

    @property
    def master_key_file(self) -> Path:
        return self.credentials_dir / MASTER_KEY_CREDENTIAL

    @property
    def api_token_file(self) -> Path:
        return self.credentials_dir / API_TOKEN_CREDENTIAL


def read_secret_file(path: Path) -> str:
    """The stripped text of a secret file; refuses a missing, empty or world-accessible file."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"secret file {path} cannot be read: {exc.strerror}") from None
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"secret file {path} is accessible to other users (mode {st.st_mode & 0o777:o})")
    if not text:
        raise ConfigError(f"secret file {path} is empty")
    return text


# Below this no note, client or chat message of a useful size would fit.
MIN_BODY_BYTES = 1024


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def build_conninfo(
    env: Mapping[str, str], prefix: str, default_db: str, default_user: str, password_file: Path
) -> str:
    """A libpq conninfo for one database, always with ``sslmode=verify-full`` and the configured CA.

    ``<PREFIX>_DSN`` (e.g. NOTES_DSN) wins if set; otherwise TIERWALL_DB_HOST/TIERWALL_DB_PORT and
    TIERWALL_<PREFIX>_DB / TIERWALL_<PREFIX>_DB_USER. The password comes from ``password_file`` when it
    exists, never from the environment.
    """
    root_cert = _required(env, "PGSSLROOTCERT")
    dsn = env.get(f"{prefix}_DSN", "").strip()
    if dsn:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"{prefix}_DSN is not a valid libpq conninfo") from exc
    else:
        params = {
            "host": _required(env, "TIERWALL_DB_HOST"),
            "port": str(_int(env, "TIERWALL_DB_PORT", 5432)),
            "dbname": env.get(f"TIERWALL_{prefix}_DB", "").strip() or default_db,
            "user": env.get(f"TIERWALL_{prefix}_DB_USER", "").strip() or default_user,
        }
    if "password" in params:
        raise ConfigError(f"{prefix}_DSN must not carry a password: use the credential file {password_file}")
    sslmode = params.get("sslmode", REQUIRED_SSLMODE)
    if sslmode != REQUIRED_SSLMODE:
        raise ConfigError(f"{prefix}: sslmode={sslmode} refused, only {REQUIRED_SSLMODE} is allowed")
    params["sslmode"] = REQUIRED_SSLMODE
    params["sslrootcert"] = root_cert
    params.setdefault("application_name", "tierwall-notes")
    params.setdefault("connect_timeout", "5")
    if password_file.exists():
        params["password"] = read_secret_file(password_file)
    return make_conninfo(**params)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    creds = Path(_required(env, "CREDENTIALS_DIRECTORY"))
    if not creds.is_dir():
        raise ConfigError(f"CREDENTIALS_DIRECTORY={creds} is not a directory")
    port = _int(env, "TIERWALL_LISTEN_PORT", 8443)
    if not 0 < port < 65536:
        raise ConfigError(f"TIERWALL_LISTEN_PORT={port} is out of range")
    pool_min = _int(env, "TIERWALL_POOL_MIN_SIZE", 1)
    pool_max = _int(env, "TIERWALL_POOL_MAX_SIZE", 5)
    if not 0 <= pool_min <= pool_max or pool_max < 1:
        raise ConfigError("need 0 <= TIERWALL_POOL_MIN_SIZE <= TIERWALL_POOL_MAX_SIZE and a max of 1 or more")
    max_body = _int(env, "TIERWALL_MAX_BODY_BYTES", 0)
    if max_body < MIN_BODY_BYTES:
        raise ConfigError(
            "TIERWALL_MAX_BODY_BYTES must be set to the largest request body in bytes, "
            f"{MIN_BODY_BYTES} or more (the app role passes the value nginx enforces at the edge)"
        )
    return Settings(
        listen_host=_required(env, "TIERWALL_LISTEN_HOST"),
        listen_port=port,
        tls_cert=Path(_required(env, "TIERWALL_TLS_CERT")),
        tls_key=Path(_required(env, "TIERWALL_TLS_KEY")),
        credentials_dir=creds,
        notes_conninfo=build_conninfo(env, "NOTES", "notes", "notes_app", creds / NOTES_PASSWORD_CREDENTIAL),
        identity_conninfo=build_conninfo(
            env, "IDENTITY", "identity", "identity_app", creds / IDENTITY_PASSWORD_CREDENTIAL
        ),
        pool_min_size=pool_min,
        pool_max_size=pool_max,
        log_level=env.get("TIERWALL_LOG_LEVEL", "").strip().upper() or "INFO",
        max_body_bytes=max_body,
    )

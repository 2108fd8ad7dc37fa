"""``tierwall-notes``: serve the API with uvicorn over TLS, configured from the environment."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import uvicorn

from tierwall_notes import logs
from tierwall_notes.auth import TokenChecker
from tierwall_notes.db import Databases, make_pool
from tierwall_notes.e2e import web as e2e_web
from tierwall_notes.e2e.service import E2EService
from tierwall_notes.keyring import Keyring, load_keyring
from tierwall_notes.service import NotesService
from tierwall_notes.settings import ConfigError, Settings, load_settings
from tierwall_notes.web import AppState, create_app


def state_factory(
    settings: Settings, keyring: Keyring, tokens: TokenChecker
) -> Callable[[], Awaitable[AppState]]:
    async def factory() -> AppState:
        size = (settings.pool_min_size, settings.pool_max_size)
        dbs = Databases(
            notes=make_pool(settings.notes_conninfo, "notes", *size),
            identity=make_pool(settings.identity_conninfo, "identity", *size),
        )
        await dbs.open()
        return AppState(
            service=NotesService(dbs, keyring),
            dbs=dbs,
            tokens=tokens,
            max_body_bytes=settings.max_body_bytes,
            e2e=E2EService(dbs, keyring),
        )

    return factory


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """Secrets are read here, before the server starts, so a bad credential fails at startup."""
    keyring = load_keyring(settings.master_key_file)
    tokens = TokenChecker.from_file(settings.api_token_file)
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    app = create_app(state_factory(settings, keyring, tokens), e2e_web.ROUTES)
    return uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        ssl_certfile=str(settings.tls_cert),
        ssl_keyfile=str(settings.tls_key),
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def main() -> int:
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        config = uvicorn_config(settings)
    except ConfigError as exc:
        print(f"tierwall-notes: configuration error: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())

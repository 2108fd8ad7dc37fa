"""The SQL schema files of the two databases, shipped inside the package."""

from __future__ import annotations

from importlib.resources import files
from typing import Literal

Database = Literal["notes", "identity"]
DATABASES: tuple[Database, ...] = ("notes", "identity")

# Table -> privileges the application's role needs on it (and nothing more).
APP_PRIVILEGES: dict[Database, dict[str, tuple[str, ...]]] = {
    "notes": {
        "notes": ("SELECT", "INSERT", "DELETE"),
        "chat_messages": ("SELECT", "INSERT", "DELETE"),
    },
    "identity": {
        "clients": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "contracts": ("SELECT", "INSERT", "UPDATE"),
    },
}


# The v2 (end-to-end) tables, in the `e2e` schema of each database: applied only on request
# (tierwall-notes-migrate --v2), so the v1 deployment's schema and privileges stay as they are.
E2E_SCHEMA = "e2e"
E2E_PRIVILEGES: dict[Database, dict[str, tuple[str, ...]]] = {
    "notes": {
        "notes": ("SELECT", "INSERT", "DELETE"),
        "note_keys": ("SELECT", "INSERT", "DELETE"),
        "chat_messages": ("SELECT", "INSERT", "DELETE"),
        "chat_keys": ("SELECT", "INSERT", "DELETE"),
    },
    "identity": {
        "accounts": ("SELECT", "INSERT", "DELETE"),
        "clients": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "assignments": ("SELECT", "INSERT", "DELETE"),
        "login_challenges": ("SELECT", "INSERT", "DELETE"),
        "sessions": ("SELECT", "INSERT", "DELETE"),
        "contracts": ("SELECT", "INSERT", "UPDATE"),
    },
}


def schema_sql(database: Database) -> str:
    return files(__name__).joinpath(f"{database}.sql").read_text(encoding="utf-8")


def e2e_schema_sql(database: Database) -> str:
    return files(__name__).joinpath(f"{database}_e2e.sql").read_text(encoding="utf-8")

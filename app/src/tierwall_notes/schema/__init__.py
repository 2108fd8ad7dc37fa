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


def schema_sql(database: Database) -> str:
    return files(__name__).joinpath(f"{database}.sql").read_text(encoding="utf-8")

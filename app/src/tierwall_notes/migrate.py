"""Apply the schema (idempotent) and, optionally, grant the application's role what it needs.

    tierwall-notes-migrate --database all                      # with the app's settings (env)
    tierwall-notes-migrate --database notes --dsn "host=/var/run/postgresql user=postgres" \\
        --grant-to notes_app                                    # as the owner, on the db host
    tierwall-notes-migrate ... --v2                             # also the end-to-end (v2) tables
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tierwall_notes.schema import (
    APP_PRIVILEGES,
    DATABASES,
    E2E_PRIVILEGES,
    E2E_SCHEMA,
    Database,
    e2e_schema_sql,
    schema_sql,
)
from tierwall_notes.settings import ConfigError, load_settings


def apply_schema(conn: psycopg.Connection, database: Database) -> None:
    with conn.transaction():
        conn.execute(schema_sql(database))  # type: ignore[arg-type]  # trusted file shipped in the package


def grant_app_role(conn: psycopg.Connection, database: Database, role: str) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        for table, privileges in APP_PRIVILEGES[database].items():
            conn.execute(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                    sql.Identifier(table),
                    sql.Identifier(role),
                )
            )


def apply_e2e_schema(conn: psycopg.Connection, database: Database) -> None:
    with conn.transaction():
        conn.execute(e2e_schema_sql(database))  # trusted file shipped in the package


def grant_e2e(conn: psycopg.Connection, database: Database, role: str) -> None:
    schema = sql.Identifier(E2E_SCHEMA)
    with conn.transaction():
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(role)))
        for table, privileges in E2E_PRIVILEGES[database].items():
            conn.execute(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges),
                    sql.Identifier(E2E_SCHEMA, table),
                    sql.Identifier(role),
                )
            )


def migrate(conninfo: str, database: Database, grant_to: str | None = None, *, e2e: bool = False) -> None:
    with psycopg.connect(conninfo) as conn:
        apply_schema(conn, database)
        if grant_to:
            grant_app_role(conn, database, grant_to)
        if e2e:
            apply_e2e_schema(conn, database)
            if grant_to:
                grant_e2e(conn, database, grant_to)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierwall-notes-migrate", description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=[*DATABASES, "all"], default="all")
    parser.add_argument(
        "--dsn",
        help="libpq conninfo to connect with (dbname is set per database); default: the app's settings",
    )
    parser.add_argument("--grant-to", metavar="ROLE", help="grant the app's table privileges to ROLE")
    parser.add_argument(
        "--v2", action="store_true", help="also apply (and grant) the end-to-end v2 tables, schema e2e"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    targets: tuple[Database, ...] = DATABASES if args.database == "all" else (args.database,)
    if args.grant_to and len(targets) > 1:
        print("--grant-to needs one --database: the two databases have different roles", file=sys.stderr)
        return 2
    try:
        settings = None if args.dsn else load_settings()
        for database in targets:
            if args.dsn:
                conninfo = make_conninfo(args.dsn, dbname=database)
            else:
                assert settings is not None
                conninfo = settings.notes_conninfo if database == "notes" else settings.identity_conninfo
            migrate(conninfo, database, args.grant_to, e2e=args.v2)
            print(
                f"schema applied: {database}"
                + (" (with v2)" if args.v2 else "")
                + (f", privileges granted to {args.grant_to}" if args.grant_to else "")
            )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

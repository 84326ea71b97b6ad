"""`telemetryd db migrate|check`, and how every command reaches the history database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

from telemetryd.config import Config, ConfigError, load_config
from telemetryd.config.settings import Settings
from telemetryd.history.migrate import check, migrate
from telemetryd.secrets import SecretMissing, Secrets


class NoDatabase(Exception):
    """History is not configured or its password cannot be read; the message is safe to print."""


def database_access(settings: Settings) -> tuple[str, str | None]:
    """(DSN, password) from `history:`; the password comes from the named secret, if any."""
    history = settings.history
    if history.dsn is None:
        raise NoDatabase("history.dsn is not set in the settings file: there is no history database")
    if history.credentials is None:
        return history.dsn, None  # trust, peer or ~/.pgpass (PGPASSFILE) authentication
    try:
        return history.dsn, Secrets(settings.credentials_directory).get(history.credentials)
    except SecretMissing as exc:
        raise NoDatabase(str(exc)) from None


def describe(error: BaseException) -> str:
    """A database error for a terminal: what failed, never the password."""
    if isinstance(error, asyncpg.PostgresError):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, OSError):
        return f"cannot connect: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def load_with_database(config_path: Path) -> tuple[Config, str, str | None] | None:
    """The config and its database access; None (every problem printed) when either is unusable."""
    try:
        config = load_config(config_path)
        dsn, password = database_access(config.settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    except NoDatabase as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return None
    return config, dsn, password


def run_db(action: str, config_path: Path) -> int:
    """Apply or list pending migrations for the database in `config_path`."""
    loaded = load_with_database(config_path)
    if loaded is None:
        return 2
    _config, dsn, password = loaded
    try:
        if action == "migrate":
            applied = asyncio.run(migrate(dsn, password=password))
            print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
            return 0
        pending = asyncio.run(check(dsn, password=password))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"history database: {describe(exc)}", file=sys.stderr)
        return 1
    if pending:
        print(f"pending migrations: {', '.join(pending)} (run `telemetryd db migrate`)")
        return 1
    print("schema is up to date")
    return 0

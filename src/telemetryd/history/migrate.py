"""Schema migrations: numbered SQL files under `migrations/`, applied in order, each in its own transaction.

A version is the file name without `.sql` (``0001_initial``). Applied versions are
recorded in `schema_migrations`; a session advisory lock serialises shards that start
together, so two daemons never apply the same file twice.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

MIGRATIONS_PACKAGE = "telemetryd.history.migrations"
_LOCK_ID = 0x7465_6C65_6D65
"""pg_advisory_lock key ('teleme'): any constant unique to telemetryd."""

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def available() -> list[tuple[str, str]]:
    """Every migration shipped with the package as (version, SQL), in version order."""
    files = resources.files(MIGRATIONS_PACKAGE)
    found = [(f.name.removesuffix(".sql"), f.read_text("utf-8")) for f in files.iterdir() if f.name.endswith(".sql")]
    return sorted(found)


async def _applied(conn: asyncpg.Connection) -> set[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def pending(conn: asyncpg.Connection) -> list[str]:
    """Versions not yet applied over an open connection, in the order `migrate` would apply them."""
    done = await _applied(conn)
    return [version for version, _ in available() if version not in done]


async def check(dsn: str, *, password: str | None = None) -> list[str]:
    """Versions not yet applied to the database at `dsn`, in the order `migrate` would apply them."""
    conn = await asyncpg.connect(dsn, password=password)
    try:
        return await pending(conn)
    finally:
        await conn.close()


async def migrate(dsn: str, *, password: str | None = None) -> list[str]:
    """Apply pending migrations in order; returns the versions applied (empty when up to date)."""
    conn = await asyncpg.connect(dsn, password=password)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(_CREATE_TABLE)
            done = await _applied(conn)
            applied: list[str] = []
            for version, sql in available():
                if version in done:
                    continue
                # One transaction per file: a failing migration leaves the schema at the previous version.
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()

"""Shared test helpers: skip-with-reason off CI, fail on CI, for root and binaries."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.pg import PG_BIN, PG_PACKAGE, PgServer, started_server

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
IS_ROOT = os.geteuid() == 0


def require_root(what: str) -> None:
    """Skip (or on CI, fail) a test that needs root for `what`."""
    if not IS_ROOT:
        if ON_CI:
            pytest.fail(f"CI must run as root: {what}")
        pytest.skip(f"needs root: {what}")


def require_binary(name: str, package: str) -> str:
    """Path of `name`; skip when missing (fail on CI, where `make test` installs `package`)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        message = f"{name} not installed (Debian package {package}; `make test` installs it as root)"
        # As root `make test` has installed it, so missing means the set-up is broken: fail, never skip.
        if ON_CI or IS_ROOT:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL 15 cluster for the whole session, stopped by PID at the end."""
    require_root("PostgreSQL runs as the postgres user; switching to it needs root")
    if not (PG_BIN / "initdb").exists():
        require_binary("initdb", PG_PACKAGE)  # fails on root, skips elsewhere
    server = started_server()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """A fresh database on the session's server."""
    if pg_server.pid() is None:
        pg_server.start()  # a previous test stopped it and failed before restarting
    return pg_server.create_database()


@pytest.fixture
def listener() -> Iterator[int]:
    """One TCP port accepting on 127.0.0.1-127.0.0.5 (stand-in cameras' RTSP ports)."""
    first = socket.socket()
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    sockets = [first]
    for last_octet in range(2, 6):
        sock = socket.socket()
        sock.bind((f"127.0.0.{last_octet}", port))
        sockets.append(sock)
    for sock in sockets:
        sock.listen(128)
        sock.settimeout(0.1)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for sock in sockets:
                try:
                    conn, _ = sock.accept()
                    conn.close()
                except OSError:
                    continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()

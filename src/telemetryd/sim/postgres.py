"""A throwaway PostgreSQL 15 for the demo and the tests, run as the `postgres` OS user (it refuses root).

Lives in a new temp dir, listens on 127.0.0.1 only with trust authentication, and is
stopped by the PID in its own postmaster.pid.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PACKAGE = "postgresql-15"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir on 127.0.0.1; `stop`/`start` simulate an outage."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True)

    def initdb(self) -> None:
        """Create the cluster: trust auth, loopback only."""
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        """Start and wait until it accepts connections (fsync off: durability is not under test here)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as in an outage."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def pid(self) -> int | None:
        """The postmaster's PID, or None when it is not running."""
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def kill(self) -> None:
        """Stop by PID (fast shutdown), whatever state the tests left it in."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def dsn(self, database: str = "postgres") -> str:
        """A DSN for `database` over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        name = "t_" + uuid.uuid4().hex[:12]
        self._as_postgres(
            str(PG_BIN / "psql"), "-h", str(self.root), "-p", str(self.port), "-c", f"CREATE DATABASE {name}"
        )
        return self.dsn(name)


def available() -> bool:
    """Whether PostgreSQL 15 is installed and we may switch to its user (root)."""
    return os.geteuid() == 0 and (PG_BIN / "initdb").exists()


def started_server() -> PgServer:
    """initdb and start a cluster in a new temp dir owned by `postgres` (caller must `kill` and remove it)."""
    pw = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="telemetryd-pg-"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    server = PgServer(root, free_port())
    server.initdb()
    server.start()
    return server

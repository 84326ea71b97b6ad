"""Process and `ip` helpers shared by the simulators (fleet, shaped links, routers, snmpsim).

They only ever touch processes the simulator started (by PID) and namespaces it named.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time


def run(
    command: list[str], *, error: type[Exception], stdin: str | None = None, check: bool = True, timeout: float = 60
) -> str:
    """Run a command; its stdout, or `error` naming the command when it fails (with `check`)."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise error(f"`{' '.join(command)}` failed: {exc}") from exc
        return ""
    if check and done.returncode != 0:
        raise error(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_names(error: type[Exception]) -> list[str]:
    """Names of the network namespaces that exist now."""
    output = run(["ip", "netns", "list"], error=error, check=False)
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (ours or not: used only for PIDs we recorded)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """The first line the process prints, '' on timeout or exit."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode(errors="replace").strip()


def end(process: subprocess.Popen[bytes], *, wait: float = 5.0) -> bool:
    """Stop a process we started, by its PID: CONT (a frozen one cannot act), TERM, then KILL.

    True when it exited.
    """
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
    for action in (process.terminate, process.kill):
        if process.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            action()
        try:
            process.wait(timeout=wait)
            return True
        except subprocess.TimeoutExpired:
            continue
    return process.poll() is not None

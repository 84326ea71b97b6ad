"""`telemetryd pins list` and `telemetryd pins forget HOST:PORT`: the HTTPS devices' trusted certificates.

A device whose certificate changed (``certificate_changed``) gets nothing sent until the
operator, having checked that the camera really was replaced, forgets its pin; the next
check trusts what it shows then. The running daemon notices without a reload: a device
in ``certificate_changed`` re-reads the pin file before each check.
"""

from __future__ import annotations

import sys
from pathlib import Path

from telemetryd.config import ConfigError, load_settings
from telemetryd.probes.isapi.pins import PinFileError, PinStore, short


def _store(config: Path) -> PinStore | str:
    """The pin store of the settings' state directory, or why there is none."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return "\n".join(str(p) for p in exc.problems)
    state = settings.state_path
    if state is not None and not state.is_absolute():
        state = config.resolve().parent / state  # as the daemon's loader: relative to the settings file
    if state is None:
        return f"{config}: no state_directory (nor $STATE_DIRECTORY): pins are kept in the daemon's memory only"
    return PinStore.in_state(state)


def run_pins(action: str, config: Path, endpoint: str | None) -> int:
    """List the pins, or forget one; exit 0 on success, 1 when there was no such pin, 2 on a config or file problem."""
    store = _store(config)
    if isinstance(store, str):
        print(store, file=sys.stderr)
        return 2
    if store.problem is not None:
        print(f"{store.problem}; fix or remove it (every HTTPS device is then trusted anew)", file=sys.stderr)
        return 2
    if action == "list":
        for key, pin in store.items():
            print(f"{key:<21} {short(pin.sha256)}  since {pin.since}")
        return 0
    assert endpoint is not None
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        print(f"{endpoint!r}: expected HOST:PORT as in `telemetryd pins list`, e.g. 10.20.3.14:443", file=sys.stderr)
        return 2
    try:
        forgotten = store.forget(endpoint)
    except (PinFileError, OSError) as exc:
        print(f"{store.path}: {exc}", file=sys.stderr)
        return 2
    if not forgotten:
        print(f"no pin for {endpoint} in {store.path}", file=sys.stderr)
        return 1
    print(f"forgot {endpoint}: its next check trusts the certificate it shows then")
    return 0

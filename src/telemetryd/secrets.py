"""Named secrets (SNMP communities, speed-test tokens, camera passwords), read from files.

The inventory only names a secret (`credentials: snmp-shy`); its value is the content of
the file of that name in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) or, when
that is unset, in the configured `credentials_directory`. Values are read on use and
kept in memory only; errors name the secret and the directory, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from telemetryd.config.inventory import ID_PATTERN


class SecretMissing(Exception):
    """A named secret could not be read; the message is safe to log."""


class Secrets:
    """Reads named secrets from one directory."""

    def __init__(self, directory: str | Path | None) -> None:
        env = os.environ.get("CREDENTIALS_DIRECTORY")
        self.directory = Path(env) if env else (Path(directory) if directory else None)

    def get(self, name: str) -> str:
        """The secret's value, stripped of the trailing newline editors add."""
        if not ID_PATTERN.match(name):
            raise SecretMissing(f"credential name {name!r} is not a plain name")
        if self.directory is None:
            raise SecretMissing(
                f"credential {name!r} is needed but no credentials directory is set "
                "(credentials_directory in telemetryd.yaml, or LoadCredential= under systemd)"
            )
        path = self.directory / name
        try:
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise SecretMissing(f"credential {name!r} not found: no file {path}") from None
        except OSError as exc:
            raise SecretMissing(f"credential {name!r} unreadable ({path}): {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretMissing(f"credential {name!r} ({path}) is not UTF-8 text") from None
        if not value:
            raise SecretMissing(f"credential {name!r} ({path}) is empty")
        return value

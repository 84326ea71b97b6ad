"""The exporter's web config file, in the Prometheus exporter-toolkit format.

The same file a node_exporter or blackbox_exporter reads with ``--web.config.file``::

    tls_server_config:
      cert_file: telemetryd.crt        # relative to this file
      key_file: telemetryd.key
      client_ca_file: noc-ca.crt       # optional: Prometheus presents a client certificate
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

What Python's ssl module cannot do is refused with a reason, never silently ignored:
``RequestClientCert`` and ``RequireAnyClientCert`` (a client certificate asked for but not
verified), cipher and curve lists, and http_server_config. `load_web_config` in
`telemetryd.config.loader` validates a file with file:line errors; `WebConfig` is what the
exporter runs with.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from telemetryd.config.settings import Strict

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
ClientAuth = Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class TlsServerConfig(Strict):
    """``tls_server_config``: the exporter serves HTTPS with this certificate."""

    cert_file: str = Field(description="PEM certificate (chain); relative to the web config file")
    key_file: str = Field(description="PEM private key; relative to the web config file")
    client_ca_file: str | None = Field(None, description="CA bundle client certificates are verified against")
    client_auth_type: ClientAuth = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


def _bcrypt_hash(value: str) -> str:
    # Never echo the value: an operator who pasted a password here must not see it in a log.
    if not value.startswith(BCRYPT_PREFIXES) or len(value) != 60:
        raise ValueError("expected a bcrypt hash ($2b$..., 60 characters), not a password")
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class WebConfigFile(Strict):
    """The whole web config file; an empty file means plain HTTP without authentication."""

    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict, description="user: bcrypt hash")

    @field_validator("basic_auth_users")
    @classmethod
    def _user_names(cls, users: dict[str, str]) -> dict[str, str]:
        for user in users:
            if not user or ":" in user:
                raise ValueError(f"user {user!r}: a user name is not empty and holds no ':'")
        return users


def missing_files(tls: TlsServerConfig, base: Path) -> list[tuple[tuple[str, str], str]]:
    """(location, message) for each file `tls` names that is not a readable file."""
    named = {"cert_file": tls.cert_file, "key_file": tls.key_file, "client_ca_file": tls.client_ca_file}
    problems = []
    for key, name in named.items():
        if name is not None and not resolve(base, name).is_file():
            problems.append((("tls_server_config", key), f"{resolve(base, name)}: no such file"))
    return problems


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web config: the TLS context to serve with (or None) and the users allowed in."""

    path: Path | None = None
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    """The file itself and every file it names: a change to any of them is a change of config."""

    @property
    def requires_auth(self) -> bool:
        """Basic auth is required on every path."""
        return bool(self.users)


OPEN = WebConfig()
"""No web config: plain HTTP, no authentication (the exporter's behaviour before web configs)."""


def resolve(base: Path, name: str) -> Path:
    """`name` as a path, relative to the directory of the file that names it."""
    path = Path(name)
    return path if path.is_absolute() else base / path


def server_context(tls: TlsServerConfig, base: Path) -> ssl.SSLContext:
    """The SSLContext for `tls`; raises OSError or ssl.SSLError (with the file named) when a file is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.load_cert_chain(resolve(base, tls.cert_file), resolve(base, tls.key_file))
    if tls.client_auth_type != "NoClientCert":
        if tls.client_ca_file is None:
            raise ValueError(f"client_auth_type {tls.client_auth_type} needs client_ca_file")
        context.load_verify_locations(cafile=resolve(base, tls.client_ca_file))
        required = tls.client_auth_type == "RequireAndVerifyClientCert"
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    elif tls.client_ca_file is not None:
        raise ValueError(
            "client_ca_file is set but client_auth_type is NoClientCert: no certificate would be asked for"
        )
    return context


def web_config(model: WebConfigFile, path: Path) -> WebConfig:
    """Build what the exporter runs with from a validated file (TLS files read now)."""
    base = path.parent
    files = [path]
    tls = None
    if model.tls_server_config is not None:
        settings = model.tls_server_config
        tls = server_context(settings, base)
        files += [resolve(base, settings.cert_file), resolve(base, settings.key_file)]
        if settings.client_ca_file is not None:
            files.append(resolve(base, settings.client_ca_file))
    users = {user: hashed.encode() for user, hashed in model.basic_auth_users.items()}
    return WebConfig(path=path, tls=tls, users=users, files=tuple(files))


def signature(files: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    """(inode, size, mtime) of each file: what says a file changed without reading it; missing files count too."""
    marks = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            marks.append((-1, -1, -1))
        else:
            marks.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(marks)


__all__ = [
    "OPEN",
    "TlsServerConfig",
    "WebConfig",
    "WebConfigFile",
    "missing_files",
    "resolve",
    "server_context",
    "signature",
    "web_config",
]

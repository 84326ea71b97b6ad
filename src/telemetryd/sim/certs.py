"""Certificates for simulated HTTPS devices, made with the `openssl` command line.

`cryptography` is not a dependency of telemetryd and the simulator should not make it
one; `openssl` is on every machine that runs the tests. EC P-256 keys: a certificate
takes a few milliseconds. Everything is written under a directory the caller owns.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertPair", "certificate_authority", "der_sha256", "issued_by", "self_signed"]

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class CertPair:
    """A PEM certificate and its private key on disk."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _paths(directory: Path, stem: str) -> CertPair:
    unique = f"{stem}-{uuid.uuid4().hex[:8]}"
    return CertPair(directory / f"{unique}.crt", directory / f"{unique}.key")


def self_signed(directory: Path, ip: str, *, common_name: str = "IP Camera") -> CertPair:
    """A device's own certificate, as a camera makes one at first boot (IP SAN of its address)."""
    pair = _paths(directory, "device")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "3650",
        "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=IP:{ip}",
    )  # fmt: skip
    return pair


def certificate_authority(directory: Path) -> CertPair:
    """A CA to sign device certificates with (the city's own PKI)."""
    pair = _paths(directory, "ca")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "3650",
        "-subj", "/CN=telemetryd simulated city CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def issued_by(ca: CertPair, directory: Path, ip: str, *, days: int = 365) -> CertPair:
    """A device certificate for `ip` (IP SAN) signed by `ca`; ``days=0`` expires at once (notAfter = now)."""
    pair = _paths(directory, "issued")
    request = pair.cert.with_suffix(".csr")
    _openssl(
        "req", "-new", *_KEY, "-keyout", str(pair.key), "-out", str(request),
        "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-out", str(pair.cert), "-days", str(days), "-copy_extensions", "copyall",
    )  # fmt: skip
    request.unlink()
    return pair


def der_sha256(pair: CertPair) -> bytes:
    """SHA-256 of the certificate in DER form: what a client pins."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pair.cert.read_text())).digest()

"""HTTP Digest authentication (RFC 7616, MD5 and SHA-256, qop=auth) as pure functions.

Our own rather than aiohttp's `DigestAuthMiddleware`, because lockout safety needs
control the middleware does not give: it retries every 401 once with the same
credential, so a password changed on the device costs two failed logins per request
(Hikvision locks after 5–7), and it cannot tell the caller whether a 401 was a rejected
password or a stale nonce. Here the client decides when an authenticated attempt is sent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "authorization",
    "choose_challenge",
    "digest_offered",
    "parse_authorization",
    "parse_challenges",
    "response",
]

ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA256": hashlib.sha256,  # Hikvision capabilities spell it without the dash
}
_STRENGTH = {"MD5": 1, "SHA-256": 2, "SHA256": 2}
_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_SCHEME = re.compile(r"(?:^|,)\s*([A-Za-z][\w-]*)\s+(?=[A-Za-z][\w-]*\s*=)")


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One `WWW-Authenticate: Digest …` challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    """As the server spelled it (echoed back verbatim)."""
    qop: str = ""
    opaque: str = ""
    stale: bool = False

    @property
    def supported(self) -> bool:
        """We can answer it: a known algorithm and qop absent or offering ``auth``."""
        qops = {q.strip() for q in self.qop.split(",") if q.strip()}
        return self.algorithm.upper() in ALGORITHMS and (not qops or "auth" in qops)


def _split_challenges(header: str) -> list[tuple[str, str]]:
    """(scheme, parameters) for each challenge in one header value (several may share a line)."""
    starts = [(m.start(1), m.group(1)) for m in _SCHEME.finditer(header)]
    parts = []
    for index, (start, scheme) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(header)
        parts.append((scheme, header[start + len(scheme) : end]))
    return parts


def parse_challenges(headers: list[str]) -> list[DigestChallenge]:
    """Every Digest challenge in the `WWW-Authenticate` header values, in order; Basic and garbage skipped."""
    challenges = []
    for header in headers:
        for scheme, params_text in _split_challenges(header):
            if scheme.lower() != "digest":
                continue
            params = {
                m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
                for m in _PARAM.finditer(params_text)
            }
            if "nonce" not in params or "realm" not in params or not params["nonce"]:
                continue
            if not all(_echoable(params.get(name, "")) for name in ("realm", "nonce", "opaque", "algorithm", "qop")):
                continue  # we could not answer it without breaking (or injecting into) our own header
            challenges.append(
                DigestChallenge(
                    realm=params["realm"],
                    nonce=params["nonce"],
                    algorithm=params.get("algorithm") or "MD5",
                    qop=params.get("qop", ""),
                    opaque=params.get("opaque", ""),
                    stale=params.get("stale", "").lower() == "true",
                )
            )
    return challenges


def _echoable(value: str) -> bool:
    """A challenge value we can hash and quote back: valid UTF-8, no quote, backslash or control character."""
    try:
        value.encode()
    except UnicodeEncodeError:  # undecodable bytes, kept by the HTTP parser as surrogates
        return False
    return not any(ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def digest_offered(headers: list[str]) -> bool:
    """Whether any `WWW-Authenticate` value names the Digest scheme (parsed or not)."""
    return any(scheme.lower() == "digest" for header in headers for scheme, _ in _split_challenges(header))


def choose_challenge(challenges: list[DigestChallenge]) -> DigestChallenge | None:
    """The strongest challenge we can answer (SHA-256 over MD5), or None."""
    usable = [c for c in challenges if c.supported]
    return max(usable, key=lambda c: _STRENGTH[c.algorithm.upper()], default=None)


def response(
    challenge: DigestChallenge, method: str, uri: str, *, username: str, password: str, nc: int, cnonce: str
) -> str:
    """The `response` value: KD(H(A1), nonce:nc:cnonce:qop:H(A2)), or RFC 2069 style without qop."""
    hash_fn = ALGORITHMS[challenge.algorithm.upper()]

    def digest(text: str) -> str:
        return hash_fn(text.encode()).hexdigest()

    ha1 = digest(f"{username}:{challenge.realm}:{password}")
    ha2 = digest(f"{method}:{uri}")
    if challenge.qop:
        return digest(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return digest(f"{ha1}:{challenge.nonce}:{ha2}")


def authorization(
    challenge: DigestChallenge, method: str, uri: str, *, username: str, password: str, nc: int, cnonce: str
) -> str:
    """The `Authorization` header value answering `challenge` for one request."""
    digest_value = response(challenge, method, uri, username=username, password=password, nc=nc, cnonce=cnonce)
    username_q = username.replace("\\", "\\\\").replace('"', '\\"')
    fields = [
        f'username="{username_q}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f"algorithm={challenge.algorithm}",
        f'response="{digest_value}"',
    ]
    if challenge.opaque:
        fields.append(f'opaque="{challenge.opaque}"')
    if challenge.qop:
        fields += ["qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    return "Digest " + ", ".join(fields)


def parse_authorization(header: str) -> dict[str, str]:
    """The parameters of an `Authorization: Digest …` header (server side, for the simulator)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {
        m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }

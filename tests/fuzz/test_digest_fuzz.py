"""The digest challenge parser on any `WWW-Authenticate` value a device could send.

Whatever the header holds, parsing gives a list of challenges (or none), never an exception;
every challenge it gives can be answered, and the answer is one clean header line: no value
of the device's ever breaks out of its quotes or adds a line to our request.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from telemetryd.probes.isapi import digest
from tests.fuzz.strategies import FUZZ

TOKENS = (
    "Digest ",
    "Basic ",
    "Bearer ",
    "Negotiate",
    'realm="',
    "realm=",
    'nonce="',
    "nonce=",
    "qop=",
    '"auth"',
    '"auth,auth-int"',
    "auth-int",
    "algorithm=",
    "MD5",
    "SHA-256",
    "SHA256",
    "SHA-512-256",
    "MD5-sess",
    "opaque=",
    "stale=",
    "TRUE",
    "false",
    '"',
    "\\",
    '\\"',
    ",",
    ", ",
    "=",
    " ",
    "\t",
    "\r\n",
    "\x00",
    "\x7f",
    "\udcff",
    "é",
    "IP Camera(C2183)",
    "4e6a5a474e7a4d78",
)
"""Pieces of real challenges and of ways to break them."""

headers = st.lists(
    st.one_of(
        st.text(max_size=300),
        st.lists(st.sampled_from(TOKENS) | st.text(max_size=8), max_size=40).map("".join),
    ),
    max_size=3,
)

REAL = [
    'Digest realm="IP Camera(C2183)", nonce="4e6a5a474e7a4d78", qop="auth", algorithm="MD5", stale="FALSE"',
    'Digest qop="auth", realm="DS-7608NI", nonce="4e45", opaque="x", algorithm=SHA-256, Basic realm="b"',
]


@FUZZ
@given(values=headers)
@example(values=REAL)
@example(values=['Digest realm="r", nonce="n\\"; evil="1"'])
@example(values=['Digest realm="r\r\nX-Injected: 1", nonce="n"'])
@example(values=['Digest realm="\udcff", nonce="n"'])
@example(values=["Digest realm=r,nonce=" + "x" * 10_000])
def test_any_header_parses_into_answerable_challenges(values: list[str]) -> None:
    """A list of challenges with a realm and a nonce each; the chosen one answers as one printable line."""
    challenges = digest.parse_challenges(values)
    offered = digest.digest_offered(values)
    assert offered or not challenges  # nothing parsed as Digest where no Digest scheme was named
    for challenge in challenges:
        assert challenge.realm is not None and challenge.nonce
    chosen = digest.choose_challenge(challenges)
    if chosen is None:
        return
    assert chosen.supported
    header = digest.authorization(
        chosen, "GET", "/ISAPI/System/deviceInfo", username='ad"min\\', password="pw", nc=1, cnonce="c0ffee"
    )
    assert header.startswith("Digest ") and header.isprintable(), header
    # The device's values come back exactly as sent, inside their quotes.
    params = digest.parse_authorization(header)
    assert (params["realm"], params["nonce"]) == (chosen.realm, chosen.nonce)
    assert params.get("opaque", "") == chosen.opaque
    assert len(params["response"]) in (32, 64)

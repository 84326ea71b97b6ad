"""Digest authentication arithmetic against the RFC test vectors, and challenge parsing as cameras send it."""

from __future__ import annotations

from telemetryd.probes.isapi import digest

RFC7616 = digest.DigestChallenge(
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    qop="auth",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
)
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _rfc7616(algorithm: str) -> str:
    challenge = digest.DigestChallenge(RFC7616.realm, RFC7616.nonce, algorithm, RFC7616.qop, RFC7616.opaque)
    return digest.response(
        challenge, "GET", "/dir/index.html", username="Mufasa", password="Circle of Life", nc=1, cnonce=CNONCE
    )


def test_rfc7616_md5_vector() -> None:
    """The MD5 response equals RFC 7616 section 3.9.1."""
    assert _rfc7616("MD5") == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_vector() -> None:
    """The SHA-256 response equals RFC 7616 section 3.9.1."""
    assert _rfc7616("SHA-256") == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2617_vector() -> None:
    """The RFC 2617 section 3.5 example (MD5, qop=auth) comes out right."""
    challenge = digest.DigestChallenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth")
    value = digest.response(
        challenge, "GET", "/dir/index.html", username="Mufasa", password="Circle Of Life", nc=1, cnonce="0a4f113b"
    )
    assert value == "6629fae49393a05397450978507c4ef1"


def test_hikvision_challenges_dual_and_basic() -> None:
    """Two Digest challenges plus Basic: both digests parse, Basic is skipped, SHA-256 is chosen."""
    headers = [
        'Digest realm="c504892f438ee5f2114e9fdd", domain="::", qop="auth", '
        'nonce="158ca9b5cb4b32a578432756aef2a189:1669838955551", opaque="", algorithm="MD5", stale="FALSE"',
        'Digest qop="auth", realm="IP Camera(C2183)", nonce="abc", algorithm=SHA-256, stale="TRUE"',
        'Basic realm="c504892f438ee5f2114e9fdd"',
    ]
    challenges = digest.parse_challenges(headers)
    assert [c.algorithm for c in challenges] == ["MD5", "SHA-256"]
    assert challenges[0].nonce == "158ca9b5cb4b32a578432756aef2a189:1669838955551"
    assert not challenges[0].stale and challenges[1].stale
    chosen = digest.choose_challenge(challenges)
    assert chosen is not None and chosen.algorithm == "SHA-256"


def test_two_challenges_in_one_header_line() -> None:
    """Challenges joined by a comma in one header value are split at the scheme."""
    line = 'Basic realm="x", Digest realm="r", nonce="n1", qop="auth"'
    (only,) = digest.parse_challenges([line])
    assert (only.realm, only.nonce, only.algorithm) == ("r", "n1", "MD5")


def test_unanswerable_challenges_are_not_chosen() -> None:
    """Unknown algorithms, auth-int only and missing nonces leave nothing to answer."""
    headers = [
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r"',
        "Basic realm=x",
        "garbage",
    ]
    assert digest.choose_challenge(digest.parse_challenges(headers)) is None


def test_authorization_header_round_trips() -> None:
    """The Authorization header parses back to the fields a server checks, and the response verifies."""
    challenge = digest.DigestChallenge("IP Camera(C2183)", "4e54", "SHA256", "auth", "op")
    header = digest.authorization(
        challenge, "GET", "/ISAPI/System/workingstatus?format=json", username="admin", password="pw", nc=2, cnonce="c"
    )
    fields = digest.parse_authorization(header)
    assert fields["uri"] == "/ISAPI/System/workingstatus?format=json"
    assert (fields["algorithm"], fields["nc"], fields["qop"], fields["opaque"]) == ("SHA256", "00000002", "auth", "op")
    expected = digest.response(
        challenge, "GET", fields["uri"], username="admin", password="pw", nc=2, cnonce=fields["cnonce"]
    )
    assert fields["response"] == expected
    assert "pw" not in header.replace("op", "")


def test_no_qop_is_rfc2069_style() -> None:
    """Without qop (RTSP-style challenges) the response omits nc and cnonce."""
    challenge = digest.DigestChallenge("IP Camera(C1214)", "0191a41d87c28cd52b3e9c8adc99291c")
    header = digest.authorization(challenge, "DESCRIBE", "rtsp://h/", username="u", password="p", nc=1, cnonce="c")
    assert "nc=" not in header and "qop" not in header

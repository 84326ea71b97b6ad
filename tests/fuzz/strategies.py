"""Shared hypothesis strategies: byte mutations of real documents, hostile snippets, arbitrary chunkings."""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
"""A few seconds per test, the same examples on every run (CI must be reproducible)."""
FUZZ_STREAMS = settings(FUZZ, max_examples=150)
"""Streams are fed a byte at a time in half the examples: fewer of them for the same few seconds."""

HOSTILE_SNIPPETS = (
    b"<!DOCTYPE d [<!ENTITY x 'xx'>]>",
    b"<!DOCTYPE d SYSTEM 'file:///etc/passwd'>",
    b"&x;",
    b"&#0;",
    b"&#x110000;",
    b"&amp;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version='1.0' encoding='utf-16'?>",
    b"<?pi x?>",
    b"<a>" * 40,
    b"</a>",
    b'<x a="1" a="2"/>',
    b"xmlns:p='urn:x' ",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"{",
    b"}",
    b"[",
    b'"',
    b"\\u0000",
    b"1e999999",
    b"-",
    b"\r\n",
)


@st.composite
def mutated(draw: st.DrawFn, samples: tuple[bytes, ...]) -> bytes:
    """A real document with a few random edits: cut, duplicate, flip, insert garbage or a hostile snippet."""
    body = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(body)))
        edit = draw(st.sampled_from(("truncate", "delete", "duplicate", "flip", "insert", "snippet")))
        if edit == "truncate":
            del body[at:]
        elif edit == "delete":
            del body[at : at + draw(st.integers(1, 40))]
        elif edit == "duplicate":
            body[at:at] = body[at : at + draw(st.integers(1, 200))]
        elif edit == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            body[at:at] = draw(st.binary(max_size=20))
        else:
            body[at:at] = draw(st.sampled_from(HOSTILE_SNIPPETS))
    return bytes(body)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at random places, or into pieces of one to three bytes (every boundary split every way)."""
    if draw(st.booleans()):
        step = draw(st.integers(1, 3))
        return [data[at : at + step] for at in range(0, len(data), step)]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=40))))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]

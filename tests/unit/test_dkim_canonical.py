"""The relaxed body canonicalization and the message parse postald signs with match dkimpy's, whatever the message."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import Relaxed

from postald import dkim as postald_dkim
from postald.dkim import relaxed_body

PIECES = [b"a", b"line", b".", b" ", b"  ", b"\t", b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n", b" \r\n", b"\xc3\xa9", b"x" * 80]


@pytest.mark.parametrize("body", [
    b"", b"\r\n", b"\r\n\r\n\r\n", b"Hello\r\n", b"Hello", b"Hello\r\n\r\n\r\n", b"Hello \r\n", b"a  b\r\n",
    b"a\tb\r\n", b"a\nb\r\n", b"a\rb\r\n", b"trailing space ", b"\r\nfirst line empty\r\n",
    (b"x" * 76 + b"\r\n") * 50 + b"\r\n\r\n",
])
def test_known_bodies(body):
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_random_bodies():
    generator = random.Random(6376)
    for _ in range(3000):
        body = b"".join(generator.choice(PIECES) for _ in range(generator.randrange(0, 40)))
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


HEADER_PIECES = [b"Subject: hi", b"From: a@example.com", b"To: b@example.org,\r\n c@example.org", b"X-Long: one\r\n\ttwo",
                 b"Empty:", b"From mbox-line", b"Bad header line"]
BODY_PIECES = [b"body", b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b"Subject: not a header\r\n"]


def test_the_header_block_parse_matches_dkimpy_on_the_whole_message():
    """Signing parses only the header block of a CRLF message; headers and body come out as dkimpy's."""
    generator = random.Random(5322)
    cases = [b"", b"\r\n", b"\r\n\r\nbody", b"Subject: x", b"Subject: x\r\n", b"Subject: x\r\n\r\n",
             b"Subject: x\nTo: y\n\nbody\n", b"Subject: x\r\n\r\nbody\nbare\r\n"]
    for _ in range(3000):
        headers = b"\r\n".join(generator.choice(HEADER_PIECES) for _ in range(generator.randrange(0, 6)))
        body = b"".join(generator.choice(BODY_PIECES) for _ in range(generator.randrange(0, 12)))
        cases.append(headers + generator.choice([b"\r\n\r\n", b"\r\n", b"\n\n", b""]) + body)
    for message in cases:
        try:
            expected = dkim.rfc822_parse(message)
        except Exception as exc:  # a message dkimpy refuses (or trips over) fails the same way
            with pytest.raises(type(exc)):
                postald_dkim._parse(message)
            continue
        assert postald_dkim._parse(message) == expected, message

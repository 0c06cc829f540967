"""The relaxed body canonicalization postald signs with matches dkimpy's, whatever the body."""

from __future__ import annotations

import random

import pytest
from dkim.canonicalization import Relaxed

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

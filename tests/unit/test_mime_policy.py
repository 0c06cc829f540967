"""The message policy's shortcuts (short lines, lines folded at one "; ") write what compat32's folding writes."""

import email.policy
import random
import string

import pytest

from postald.outgoing_message import MIME_POLICY

COMPAT32_CRLF = email.policy.compat32.clone(linesep="\r\n")
def folded(policy, name, value):
    """The folded header, or the type of error folding it raises."""
    try:
        return policy.fold_binary(name, value)
    except Exception as exc:
        return type(exc)


NAMES = ["Subject", "From", "To", "Cc", "Reply-To", "Message-ID", "Content-Type", "X-Custom-Header", "Received"]


@pytest.mark.parametrize("value", [
    "", " ", "Hello", "  two  leading and trailing  ", "tab\tinside", "\tleading tab",
    "Bench <sender@bench.example>", '"Quoted, Name" <a@b.c>', "=?utf-8?q?caf=C3=A9?=",
    "x" * 68, "x" * 69, "x" * 70, "word " * 20, "a" * 200, "line\r\n continued", "bare\nline",
    "nul\x00byte", "form\x0cfeed", "caf\u00e9", "surrogate\udcff",
])
def test_known_values_fold_as_compat32_does(value):
    for name in NAMES:
        assert folded(MIME_POLICY, name, value) == folded(COMPAT32_CRLF, name, value)


def test_random_values_fold_as_compat32_does():
    rnd = random.Random(20261124)
    alphabet = string.ascii_letters + string.digits + " \t<>@.,;:\"()=?_-'!#$%&*+/[]{}|~\x0b\x0c\x7f\u00e9"
    for _ in range(5000):
        name = rnd.choice(NAMES)
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 120)))
        assert folded(MIME_POLICY, name, value) == folded(COMPAT32_CRLF, name, value), (name, value)


def test_lines_with_one_semicolon_fold_as_compat32_does():
    """The Received header and multipart Content-Types, and every length around the limit."""
    values = [
        "from api (client.test [127.0.0.1]) by postal.example.com with HTTP; Wed, 25 Nov 2026 10:00:00 +0000",
        'multipart/mixed; boundary="--==_mimepart_' + "ab12" * 8 + '"',
        'multipart/alternative; boundary="--==_mimepart_' + "cd34" * 8 + '"',
        "from " + "long-ptr-name." * 6 + "example (x [1.2.3.4]) by h with HTTP; Wed, 25 Nov 2026 10:00:00 +0000",
        "a;b " * 30, "one; two; three " * 8, "x" * 60 + ";  " + "y" * 30, "x" * 60 + ";\t" + "y" * 30,
        "x" * 60 + "; " + "y" * 30 + " ", "x" * 60 + "; ", "; " + "y" * 90, "x" * 60 + ";; " + "y" * 30,
    ]
    values += ["x" * first + "; " + "y" * second for first in range(55, 80) for second in range(70, 82)]
    values += ["a " * (first // 2) + "; " + "b " * (second // 2) for first in (40, 70, 76) for second in (60, 77, 90)]
    for value in values:
        for name in NAMES:
            assert folded(MIME_POLICY, name, value) == folded(COMPAT32_CRLF, name, value), (name, value)


def test_random_lines_with_one_semicolon_fold_as_compat32_does():
    rnd = random.Random(20261125)
    alphabet = string.ascii_letters + string.digits + "   \t<>@.,:\"()=_-[]"
    for _ in range(5000):
        name = rnd.choice(NAMES)
        halves = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 90))) for _ in range(2)]
        value = rnd.choice(["; ", ";", ";  ", "; \t"]).join(halves)
        assert folded(MIME_POLICY, name, value) == folded(COMPAT32_CRLF, name, value), (name, value)

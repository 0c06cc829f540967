"""Postal's one rule for the bare address of a header value, used by the API
(recipients, envelope sender) and by From/Sender authorisation (SMTP and API)."""

import pytest

from postald.services.domains import bare_address, strip_display_name


@pytest.mark.parametrize("value, address", [
    ("user@example.com", "user@example.com"),
    ("  user@example.com  ", "user@example.com"),
    ("Name <user@example.com>", "user@example.com"),
    ('"Last, First" <user@example.com>', "user@example.com"),
    ("a <b> <user@example.com> trailing", "user@example.com"),       # from the last <
    ("<user@example.com> tail > more", "user@example.com"),          # to the first > after it
    ("user@example.com (Office)", "user@example.com"),
    ("(Dept) user@example.com (Office) ", "user@example.com"),
    ("user(a)@exam(b)ple.com", "user@example.com"),                  # every comment
    ("user@example.com ()", "user@example.com ()"),                  # "()" is no comment
    ("user@example.com ()x)", "user@example.com"),                   # "(" to the next ")" after a character
    ("user@example.com (unclosed", "user@example.com (unclosed"),
    ("", ""),
    (None, ""),
])
def test_strip_display_name(value, address):
    assert strip_display_name(value) == address


@pytest.mark.parametrize("value, parts", [
    ("Name <user@example.com> (x)", ("user", "example.com")),
    ("user@ example.com ", ("user", "example.com")),
    ("user@a@b.com", ("user", "a@b.com")),   # split at the first @
    ("@example.com", None),
    ("user@", None),
    ("user", None),
    ("   ", None),
    (None, None),
    ("user@example.com ()", ("user", "example.com ()")),  # a name no domain has
])
def test_bare_address(value, parts):
    assert bare_address(value) == parts

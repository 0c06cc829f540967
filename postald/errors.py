"""Exceptions raised by postald's services.

    PostalError                 base; ``message`` is safe to show a user
    ├── ValidationError         bad input; ``errors`` maps field -> [messages]
    ├── NotFound                the named object does not exist (or is not yours)
    ├── AccessDenied            authenticated, but not allowed
    └── ServiceUnavailable      a dependency (database, scanner, DNS) is down

Each edge translates these once: the SMTP server into a reply line, the web
app into an API error code or a form error, the CLI into an exit code and one
line on stderr.
"""

from __future__ import annotations


class PostalError(Exception):
    """Base class of every error a service raises on purpose."""

    api_code = "Error"

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class ValidationError(PostalError):
    """Input that cannot be stored; ``errors`` maps a field name to its messages."""

    api_code = "ValidationError"

    def __init__(self, errors: dict[str, list[str]] | str, field: str | None = None):
        if isinstance(errors, str):
            errors = {field or "base": [errors]}
        self.errors = errors
        super().__init__(self.full_messages()[0] if errors else "invalid")

    def full_messages(self) -> list[str]:
        out = []
        for field, messages in self.errors.items():
            for message in messages:
                if field == "base":
                    out.append(message)
                else:
                    out.append(f"{field.replace('_', ' ').capitalize()} {message}")
        return out

    def __str__(self) -> str:
        return ", ".join(self.full_messages())


class NotFound(PostalError):
    api_code = "NotFound"


class AccessDenied(PostalError):
    api_code = "AccessDenied"


class ServiceUnavailable(PostalError):
    api_code = "ServiceUnavailable"


class Errors:
    """Collects field errors, then raises them all at once."""

    def __init__(self):
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)

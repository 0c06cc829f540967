"""The interface every sender implements and the result it returns."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

#: Result types a sender may return.
SENT, SOFT_FAIL, HARD_FAIL = "Sent", "SoftFail", "HardFail"
RESULT_TYPES = (SENT, SOFT_FAIL, HARD_FAIL)

_LOG_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_log_id() -> str:
    """Eight random upper-case alphanumerics identifying one send in the logs."""
    return "".join(secrets.choice(_LOG_ID_ALPHABET) for _ in range(8))


@dataclass
class SendResult:
    """What happened to one message handed to a sender.

    ``retry`` is False (final), True (retry on the default schedule) or, by
    convention of the dequeuer, a number of seconds stored in ``retry`` when a
    sender knows better (a remote asking to come back "in 30 seconds").
    ``connect_error`` tells the batch that the destination could not be
    reached at all, so the remaining messages of the batch get the same result
    without trying again.  ``suppress_bounce`` stops a bounce being generated
    for a hard failure.
    """

    type: str  # "Sent" | "SoftFail" | "HardFail"
    details: str | None = None
    output: str | None = None
    secure: bool = False
    log_id: str | None = None
    time: float | None = None  # seconds
    retry: bool | int | float = False
    connect_error: bool = False
    suppress_bounce: bool = False

    def __post_init__(self) -> None:
        if self.type not in RESULT_TYPES:
            raise ValueError(f"SendResult type must be one of {', '.join(RESULT_TYPES)}, not {self.type!r}")

    @property
    def retry_delay(self) -> float | None:
        """Seconds asked for by the sender, or None for the default schedule."""
        if self.retry is True or self.retry is False or self.retry is None:
            return None
        return float(self.retry)


class Sender:
    """Base class of the senders: open connections lazily, send, close."""

    def start(self) -> None:
        """Prepare to send (resolve and connect); may be a no-op."""

    def send_message(self, message) -> SendResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self) -> None:
        """Close whatever ``start``/``send_message`` opened; must not raise."""

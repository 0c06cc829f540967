"""Spam and virus inspection of messages.

Scanners, each enabled in the configuration:

* rspamd (``rspamd.enabled``) or, when rspamd is off, SpamAssassin's spamd
  (``spamd.enabled``) score the message; the spam score is the sum of the
  matched rules;
* ClamAV's clamd (``clamav.enabled``) looks for viruses.

A scanner that is down, slow or answers nonsense never stops or loses mail:
the spam scanners record a zero-scoring ``ERROR`` or ``TIMEOUT`` check, ClamAV
records "no threat" with the reason, and processing continues as if the
message were clean.

:func:`inspect` runs the scanners; :func:`record` stores a result on the
message (``inspected``, ``spam_score``, ``threat``, ``threat_details`` and the
``spam_checks`` rows).
"""

from __future__ import annotations

from postald.inspection.clamav import ClamAV
from postald.inspection.result import InspectionResult, SpamCheck
from postald.inspection.rspamd import Rspamd
from postald.inspection.spamd import SpamAssassin
from schema.message_db import spam_checks

__all__ = ["ClamAV", "InspectionResult", "Rspamd", "SpamAssassin", "SpamCheck", "inspect", "inspectors", "record"]


def inspectors(config) -> list:
    """The scanners the configuration enables, spam scanner first."""
    found: list = []
    if config.rspamd.enabled:
        found.append(Rspamd(config.rspamd.host, config.rspamd.port, ssl=config.rspamd.ssl,
                            password=config.rspamd.password, flags=config.rspamd.flags))
    elif config.spamd.enabled:
        found.append(SpamAssassin(config.spamd.host, config.spamd.port))
    if config.clamav.enabled:
        found.append(ClamAV(config.clamav.host, config.clamav.port))
    return found


def inspect(config, raw: bytes, scope: str = "incoming", rcpt_to: str | None = None,
            mail_from: str | None = None, token: str | None = None, scanners: list | None = None) -> InspectionResult:
    result = InspectionResult()
    for scanner in inspectors(config) if scanners is None else scanners:
        scanner.inspect(raw, result, scope=scope, rcpt_to=rcpt_to, mail_from=mail_from, token=token)
    return result


def record(message_db, message_id: int, result: InspectionResult) -> None:
    """Store ``result`` on the message and its spam checks."""
    message_db.update_message(
        message_id,
        inspected=1,
        spam_score=result.spam_score,
        threat=1 if result.threat else 0,
        threat_details=(result.threat_message or None) and result.threat_message[:255],
    )
    for check in result.spam_checks:
        message_db.insert_row(
            spam_checks, message_id=message_id, code=check.code[:255], score=check.score,
            description=(check.description or "")[:255] or None,
        )

"""Outgoing messages: policy checks, signing, then delivery over SMTP.

:func:`process_outgoing` runs the steps below in order; any step may decide
the message's fate (a ``Held`` or ``HardFail`` delivery) and stop:

1. the message still has its domain and a recipient;
2. its tag is taken from ``X-Postal-Tag`` when it has none;
3. a credential configured to hold, and a recipient on the suppression list,
   hold it (unless it was queued manually, i.e. released);
4. click/open tracking rewrites it (see :func:`apply_tracking`);
5. outbound spam inspection, when the server sets a threshold;
6. the DKIM signature and ``X-Postal-MsgID`` header are prepended, once;
7. the server's send limit is checked and its approaching/exceeded marks set;
8. development mode holds it;
9. the SMTP sender delivers it and the result is recorded: hard failures may
   put the recipient on the suppression list, a success takes it off, a soft
   failure requeues the message.

Writes wait for the outcome where they can: the tag, the tracking marks of an
untracked message, the signed message and the live count are stored with the
delivery, in its transaction (:meth:`Job.add_delivery`), keeping writes out of
the accept-to-delivered path.
"""

from __future__ import annotations

import time

from sqlalchemy import update

from postald import dkim
from postald.processing.base import Job, UnsavedRaw, retry_transaction
from postald.senders.smtp import SMTPSender
from schema.main import Credential, Domain, IPAddress, QueuedMessage, utcnow
from schema.message_db import messages

HARD_FAIL_SUPPRESSION_WINDOW = 86400
SEND_LIMIT_APPROACHING_RATIO = 0.9
SEND_LIMIT_MARK_REFRESH = 60


def process_outgoing(job: Job) -> None:
    for step in STEPS:
        if step(job) is STOP:
            return


STOP = object()


def check_domain(job: Job):
    job.domain = job.state.get(job.session, Domain, job.message.domain_id) if job.message.domain_id else None
    if job.domain is None:
        job.log("outgoing.no_domain")
        return _fail(job, "Message's domain no longer exist")
    return None


def check_recipient(job: Job):
    if not (job.message.rcpt_to or "").strip():
        job.log("outgoing.no_rcpt_to", text="message has no 'to' address")
        return _fail(job, "Message doesn't have an RCPT to")
    return None


def set_tag(job: Job):
    if not job.message.tag:
        tags = job.message.header_values("x-postal-tag")
        if tags:
            job.defer_update(tag=tags[-1].strip()[:255])
    return None


def check_credential_hold(job: Job):
    if job.manual or not job.message.credential_id:
        return None
    credential = job.state.get(job.session, Credential, job.message.credential_id)
    if credential is not None and credential.hold:
        job.log("outgoing.credential_hold", text="credential wants us to hold messages")
        return _hold(job, "Credential is configured to hold all messages authenticated by it.")
    return None


def check_suppression_list(job: Job):
    if job.manual:
        return None
    entry = job.suppression_entry("recipient", job.message.rcpt_to)
    job.suppressed = entry is not None
    if entry is not None:
        job.log("outgoing.suppressed", text="recipient is on the suppression list")
        return _hold(job, f"Recipient ({job.message.rcpt_to}) is on the suppression list "
                          f"(reason: {entry.get('reason')})")
    return None


def apply_tracking(job: Job):
    """Click and open tracking rewrite, done once per message.

    The rewrite itself lives in ``postald.tracking``; ``X-AMP: skip`` opts a message out.
    """
    if job.message.parsed:
        return None
    from postald import tracking

    tracking.rewrite_for_tracking(job.config, job.session, job.server, job.message_db, job.message,
                                  job.message.raw_message() or b"", defer=job.defer_update,
                                  cache=job.state.cache)
    return None


def inspect_for_spam(job: Job):
    threshold = job.server.outbound_spam_threshold
    if threshold is None:
        return None
    from postald import inspection

    job.log("outgoing.inspecting")
    message = job.message
    result = inspection.inspect(job.config, message.raw_message() or b"", scope="outgoing",
                                rcpt_to=message.rcpt_to, mail_from=message.mail_from, token=message.token)
    inspection.record(job.message_db, message.id, result)
    score = result.spam_score
    spam = score >= float(threshold)
    job.update_message(inspected=1, spam_score=score, spam=1 if spam else 0, threat=1 if result.threat else 0)
    job.log("outgoing.inspected", spam_score=score)
    if spam:
        job.log("outgoing.spam", text="message is spam")
        return _fail(job, f"Message is likely spam. Threshold is {float(threshold)} and the message scored {score}.")
    return None


def add_outgoing_headers(job: Job):
    """Prepend the DKIM signature and X-Postal-MsgID, unless a previous attempt did."""
    message = job.message
    if message.header("x-postal-msgid") is not None:
        return None
    raw = dkim.normalise_line_endings(message.raw_message() or b"")
    headers = []
    if job.domain is not None:
        headers.append(dkim.signature_header(raw, dkim.identity_for(job.config, job.domain)))
    headers.append(f"X-Postal-MsgID: {message.token}".encode())
    signed = b"".join(h + b"\r\n" for h in headers) + raw
    message_headers, body = _split(signed)
    row = message.row
    body_stored = None
    if body == message._body_raw and row.get("raw_table") and row.get("raw_body_id"):
        body_stored = (row["raw_table"], row["raw_body_id"])  # only the headers changed
    # Kept in memory and stored with the delivery (Job.add_delivery): the write stays
    # out of the time between accepting a message and delivering it.
    message._headers_raw, message._body_raw, message._headers = message_headers, body, None
    job.unsaved_raw = UnsavedRaw(message_headers, body, body_stored)
    return None


def check_send_limit(job: Job):
    server = job.server
    if not server.send_limit:
        _set_send_limit_marks(job, approaching=False, exceeded=False)
        return None
    volume = job.message_db.live_stats_total(60, types=("outgoing",))
    if volume >= server.send_limit:
        _set_send_limit_marks(job, approaching=False, exceeded=True)
        job.log("outgoing.send_limit_exceeded", text="server send limit has been exceeded")
        return _hold(job, f"Message held because send limit ({server.send_limit}) has been reached.")
    _set_send_limit_marks(job, approaching=volume >= server.send_limit * SEND_LIMIT_APPROACHING_RATIO,
                          exceeded=False)
    return None


def count_outgoing(job: Job) -> None:
    """Count the message in the live stats the send limit reads (held or sent), with its delivery."""
    job.pending_live_stats = "outgoing"


def check_development_mode(job: Job):
    if job.server.mode == "Development" and not job.manual:
        count_outgoing(job)
        job.log("outgoing.development_mode", text="server is in development mode")
        return _hold(job, "Server is in development mode.")
    return None


def choose_source_address(job: Job):
    """The IP address to send from: the queue row's, else one allocated from the message's IP pool.

    An address this host does not have leaves the message in the queue for a
    worker on the host that has it (STOP).
    """
    if job.queued.ip_address_id:
        return job.session.get(IPAddress, job.queued.ip_address_id)
    if not job.config.postal.use_ip_pools:
        return None
    from postald import queue

    address = queue.allocate_ip_address(job.session, job.server, job.message)
    if address is None:
        return None
    job.session.execute(update(QueuedMessage).where(QueuedMessage.id == job.queued.id)
                        .values(ip_address_id=address.id))
    job.queued.ip_address_id = address.id
    job.commit()
    if address.id not in queue.eligible_ip_address_ids(job.session):
        job.log("outgoing.ip_address_elsewhere", ip_address=address.ipv4)
        job.unlock()
        return STOP
    return address


def send(job: Job):
    message = job.message
    domain = message.rcpt_to.rpartition("@")[2].lower()
    ip_address = choose_source_address(job)
    if ip_address is STOP:
        return STOP
    job.commit()  # no transaction stays open while talking to the remote
    key = ("smtp", domain, ip_address.id if ip_address is not None else None)
    result = job.state.send(key, lambda: _smtp_sender(job, domain, ip_address), message)
    count_outgoing(job)
    details = result.details or ""
    if result.type == "HardFail":
        details = _suppress_after_hard_fails(job, details)
    elif result.type == "Sent" and job.suppressed is not False:  # unknown (manual) or on the list
        if retry_transaction(lambda: job.message_db.suppression_remove("recipient", message.rcpt_to)):
            job.suppressions_changed()
            job.log("outgoing.unsuppressed", text=f"removed {message.rcpt_to} from suppression list")
            details += " Recipient removed from suppression list."
    if result.type == "Sent" and not result.retry and not job.server.send_limit:
        # Recorded with the batch's other sent messages (a send limit needs every count at once).
        job.state.sent.add(job, job.delivery_request(result.type, details, output=result.output,
                                                     sent_with_ssl=result.secure, log_id=result.log_id,
                                                     time=result.time), result.secure)
        return STOP
    job.add_delivery(result.type, details, output=result.output, sent_with_ssl=result.secure,
                     log_id=result.log_id, time=result.time)
    if result.retry:
        retry_at = job.retry(result.retry_delay)
        job.log("outgoing.requeued", text=f"message requeued for trying later, at {retry_at.isoformat()}")
    else:
        job.log("outgoing.complete", text="message processing complete")
        job.finish()
    return STOP


def _smtp_sender(job: Job, domain: str, ip_address) -> SMTPSender:
    """A batch's sender for ``domain``, knowing the MAIL FROM of the job's message from the rows the job holds."""
    sender = SMTPSender(job.config, domain, ip_address)
    sender.remember_mail_from(job.message, job.server, job.domain)
    return sender


STEPS = (
    check_domain, check_recipient, set_tag, check_credential_hold, check_suppression_list, apply_tracking,
    inspect_for_spam, add_outgoing_headers, check_send_limit, check_development_mode, send,
)


# -- helpers ----------------------------------------------------------------------

def _fail(job: Job, details: str):
    job.add_delivery("HardFail", details)
    job.finish()
    return STOP


def _hold(job: Job, details: str):
    job.add_delivery("Held", details)
    job.finish()
    return STOP


def _set_send_limit_marks(job: Job, approaching: bool, exceeded: bool) -> None:
    """Keep the server's approaching/exceeded times fresh (rewritten at most once a minute)."""
    server = job.server
    now = utcnow()
    changed = False
    for column, wanted in (("send_limit_exceeded_at", exceeded), ("send_limit_approaching_at", approaching)):
        current = getattr(server, column)
        if wanted and (current is None or (now - current).total_seconds() >= SEND_LIMIT_MARK_REFRESH):
            setattr(server, column, now)
            changed = True
        elif not wanted and current is not None:
            setattr(server, column, None)
            changed = True
    if changed:
        job.commit()


def _suppress_after_hard_fails(job: Job, details: str) -> str:
    message = job.message
    since = time.time() - HARD_FAIL_SUPPRESSION_WINDOW
    earlier = job.message_db.count_messages(
        messages.c.rcpt_to == message.rcpt_to, messages.c.status == "HardFail",
        messages.c.timestamp >= since, messages.c.id != message.id,
    )
    if earlier >= 1:
        retry_transaction(lambda: job.message_db.suppression_add("recipient", message.rcpt_to,
                                                                  reason="too many hard fails"))
        job.suppressions_changed()
        job.log("outgoing.suppressed_recipient",
                text=f"added {message.rcpt_to} to suppression list because {earlier} hard fails in 24 hours")
        details += " Recipient added to suppression list (too many hard fails)."
    return details


def _split(raw: bytes) -> tuple[bytes, bytes | None]:
    from schema.message_db import split_raw

    return split_raw(raw)

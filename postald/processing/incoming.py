"""Incoming messages: bounces, inspection, route rules, then delivery to an endpoint.

:func:`process_incoming` runs the steps below in order; any step may decide
the message's fate and stop:

1. a bounce (mail to a return-path address) is linked to the sent messages it
   reports on: they are marked ``Bounced`` (``MessageBounced``) and the bounce
   ``Processed``.  A bounce that cannot be linked goes on to the return-path
   route if there is one, otherwise it fails.  Auto-replies are not bounces
   (see :mod:`postald.bounces`);
2. the message is counted in the live statistics;
3. it is inspected once for spam and viruses; the verdict is prepended as
   ``X-Postal-Spam``/``-Spam-Threshold``/``-Spam-Score``/``X-Postal-Threat``
   headers.  Scanners being down never stops it (see :mod:`postald.inspection`);
4. a score at or above the server's spam failure threshold fails it;
5. development mode holds it (unless released by hand);
6. without a route it fails;
7. spam (score above the server's threshold) is handled as the route says:
   ``Mark`` delivers it marked, ``Quarantine`` holds it (held messages expire
   after ``postal.default_maximum_hold_expiry_days``, 7 by default), ``Fail``
   fails it;
8. route modes: ``Accept`` takes it without delivering, ``Hold`` holds it,
   ``Bounce`` and ``Reject`` return it to the sender;
9. ``Endpoint``: it is delivered to the message's endpoint (each additional
   endpoint of a route has its own copy of the message) — an HTTP endpoint
   (:class:`~postald.senders.http.HTTPSender`), an SMTP endpoint (that host,
   port and SSL mode; unlike Postal, ``STARTTLS`` really requires STARTTLS) or an address endpoint (the address's mail servers, with
   the envelope recipient replaced by the address).  A permanent failure sends
   a bounce to the sender unless the endpoint asked not to (HTTP 429); a
   temporary one requeues the message on the back-off schedule, up to
   ``postal.default_maximum_delivery_attempts`` attempts, after which the
   sender gets a bounce as well (:func:`on_maximum_attempts`).
"""

from __future__ import annotations

from postald import bounces, inspection, webhooks
from postald.processing.base import Job
from postald.senders.http import HTTPSender
from postald.senders.smtp import SMTPSender
from postald.services import endpoints as endpoint_service
from schema.main import AddressEndpoint, HTTPEndpoint, Route, SMTPEndpoint, utcnow

STOP = object()

NO_ROUTE_DETAILS = "Message does not have a route and/or endpoint available for delivery."
UNLINKED_BOUNCE_DETAILS = ("This message was a bounce but we couldn't link it with any outgoing message "
                           "and there was no route for it.")
NOT_SENT_DETAILS = "Message has been accepted but not sent to any endpoints."


def process_incoming(job: Job) -> None:
    for step in STEPS:
        if step(job) is STOP:
            return


# -- steps -----------------------------------------------------------------------

def link_bounce(job: Job):
    message = job.message
    if not message.bounce:
        return None
    raw = message.raw_message() or b""
    if bounces.is_auto_reply(raw):
        job.log("incoming.auto_reply", text="message to the return path is an auto-reply, not a bounce")
        return None
    originals = bounces.find_originals(job.message_db, raw, exclude_id=message.id)
    if not originals:
        if message.route_id:
            job.log("incoming.bounce_unlinked", text="no source messages found, passing bounce to its route")
            return None
        job.log("incoming.bounce_unlinked", text="no source messages found, hard failing")
        return _fail(job, UNLINKED_BOUNCE_DETAILS)
    job.log("incoming.bounce", text="message is a bounce", originals=[o.id for o in originals])
    reason = bounces.describe_failure(raw)
    for original in originals:
        job.update_message(bounce_for_id=original.id, domain_id=original.domain_id)
        job.add_delivery("Processed", f"This has been detected as a bounce message for <msg:{original.id}>.")
        job.message_db.add_delivery(
            original.id, "Bounced",
            details=f"We've received a bounce message for this e-mail. See <msg:{message.id}> for details.",
            output=reason,
        )
        original.reload()
        job.fire_event("MessageBounced", webhooks.bounced_payload(original, message))
    job.finish()
    return STOP


def count_incoming(job: Job):
    job.message_db.live_stats_increment("incoming")
    return None


def inspect_message(job: Job):
    message = job.message
    if message.inspected:
        return None
    job.log("incoming.inspecting", text="inspecting message")
    raw = message.raw_message() or b""
    result = inspection.inspect(job.config, raw, scope="incoming", rcpt_to=message.rcpt_to,
                                mail_from=message.mail_from, token=message.token)
    inspection.record(job.message_db, message.id, result)
    threshold = _score(job.server.spam_threshold)
    spam = result.spam_score > threshold
    job.update_message(inspected=1, spam_score=result.spam_score, spam=1 if spam else 0,
                       threat=1 if result.threat else 0, threat_details=result.threat_message)
    if spam:
        job.message_db.increment_stat("spam")
    _prepend_headers(message, [
        f"X-Postal-Spam: {'yes' if spam else 'no'}",
        f"X-Postal-Spam-Threshold: {threshold}",
        f"X-Postal-Spam-Score: {result.spam_score}",
        f"X-Postal-Threat: {'yes' if result.threat else 'no'}",
    ])
    job.log("incoming.inspected", text="message inspected successfully", spam_score=result.spam_score,
            threat=result.threat)
    return None


def check_spam_failure_threshold(job: Job):
    threshold = _score(job.server.spam_failure_threshold)
    score = _score(job.message.spam_score)
    if score >= threshold:
        job.log("incoming.spam_failure", text="message has a spam score higher than the server's maximum")
        return _fail(job, f"Message has a spam score higher than the failure threshold for this server. "
                          f"Threshold is {threshold} and the message scored {score}.")
    return None


def check_development_mode(job: Job):
    if job.server.mode == "Development" and not job.manual:
        job.log("incoming.development_mode", text="server is in development mode")
        return _hold(job, "Server is in development mode.")
    return None


def check_route(job: Job):
    route = _route(job)
    if route is None:
        job.log("incoming.no_route", text="no route and/or endpoint available for processing")
        return _fail(job, NO_ROUTE_DETAILS)
    return None


def apply_spam_mode(job: Job):
    if not job.message.spam or job.manual:
        return None
    route = _route(job)
    if route.spam_mode == "Quarantine":
        job.log("incoming.quarantine", text="message is spam and route says to quarantine spam message")
        return _hold(job, "Message placed into quarantine.")
    if route.spam_mode == "Fail":
        job.log("incoming.spam_fail", text="message is spam and route says to fail spam message")
        return _fail(job, "Message is spam and the route specifies it should be failed.")
    return None


def apply_route_mode(job: Job):
    route = _route(job)
    if route.mode == "Accept":
        job.log("incoming.accept", text="route says to accept without endpoint")
        return _done(job, "Processed", NOT_SENT_DETAILS)
    if route.mode == "Hold":
        if job.manual:
            job.log("incoming.hold_released", text="route says to hold and message was queued manually")
            return _done(job, "Processed", "Message has been processed.")
        job.log("incoming.hold", text="route says to hold, marking as held")
        return _hold(job, NOT_SENT_DETAILS)
    if route.mode in ("Bounce", "Reject"):
        job.log("incoming.bounce_route", text="route says to bounce, sending a bounce")
        bounce = _send_bounce(job)
        if bounce is not None:
            details = f"Message has been bounced because the route asks for this. See message <msg:{bounce.id}>"
        else:
            details = ("Message has been bounced because the route asks for this. No bounce was sent because "
                       "the message has no sender or is itself a bounce.")
        return _fail(job, details)
    return None


def deliver(job: Job):
    message = job.message
    endpoint = _endpoint(job, _route(job))
    target = _sender_for(job, endpoint)
    if target is None:
        job.log("incoming.invalid_endpoint", text="invalid endpoint for route")
        return _fail(job, "Invalid endpoint for route.")
    key, factory = target
    job.commit()  # no transaction stays open while talking to the endpoint
    result = job.state.send(key, factory, message)
    details = result.details or ""
    if result.type == "HardFail":
        if result.suppress_bounce:
            job.log("incoming.bounce_suppressed", text="suppressing bounce message after hard fail")
        elif bounces.may_bounce(message):
            job.log("incoming.bounce_after_failure", text="sending a bounce because message hard failed")
            bounce = _send_bounce(job)
            if bounce is not None:
                details = f"{details.rstrip('.')}. Sent bounce message to sender (see message <msg:{bounce.id}>)"
    job.add_delivery(result.type, details, output=result.output, sent_with_ssl=result.secure,
                     log_id=result.log_id, time=result.time)
    if result.retry:
        retry_at = job.retry(result.retry_delay)
        job.log("incoming.requeued", text=f"message requeued for trying later, at {retry_at.isoformat()}")
    else:
        endpoint.last_used_at = utcnow()
        job.commit()
        job.log("incoming.complete", text="message processing completed")
        job.finish()
    return STOP


STEPS = (
    link_bounce, count_incoming, inspect_message, check_spam_failure_threshold, check_development_mode,
    check_route, apply_spam_mode, apply_route_mode, deliver,
)


def on_maximum_attempts(job: Job) -> str | None:
    """Called when an incoming message has used up its attempts: bounce it to the sender."""
    if not bounces.may_bounce(job.message):
        return None
    job.log("incoming.bounce_after_attempts", text="sending a bounce because the maximum attempts were reached")
    bounce = _send_bounce(job)
    return f"Bounce sent to sender (see message <msg:{bounce.id}>)" if bounce is not None else None


# -- helpers ----------------------------------------------------------------------

def _fail(job: Job, details: str):
    return _done(job, "HardFail", details)


def _hold(job: Job, details: str):
    return _done(job, "Held", details)


def _done(job: Job, status: str, details: str):
    job.add_delivery(status, details)
    job.finish()
    return STOP


def _score(value) -> float:
    return round(float(value or 0), 2)


def _route(job: Job) -> Route | None:
    route_id = job.message.route_id
    return job.session.get(Route, route_id) if route_id else None


def _endpoint(job: Job, route: Route):
    """The message's own endpoint (set when it was stored), else the route's."""
    message = job.message
    if message.endpoint_type and message.endpoint_id:
        return endpoint_service.load(job.session, message.endpoint_type, message.endpoint_id)
    if route.mode == "Endpoint":
        return endpoint_service.load(job.session, route.endpoint_type, route.endpoint_id)
    return None


def _sender_for(job: Job, endpoint):
    """(batch cache key, sender factory) for an endpoint, or None for anything else."""
    config = job.config
    if isinstance(endpoint, HTTPEndpoint):
        return ("http", endpoint.id), lambda: HTTPSender(config, endpoint)
    if isinstance(endpoint, SMTPEndpoint):
        domain = (job.message.rcpt_to or "").rpartition("@")[2].lower()
        servers = [(endpoint.hostname, endpoint.port or 25, endpoint.ssl_mode or "Auto")]
        return ("smtp-endpoint", endpoint.id), lambda: SMTPSender(config, domain, None, servers=servers)
    if isinstance(endpoint, AddressEndpoint):
        domain = endpoint.address.rpartition("@")[2].lower()
        return ("address", endpoint.id), lambda: SMTPSender(config, domain, None, rcpt_to=endpoint.address)
    return None


def _send_bounce(job: Job):
    job.commit()  # queue_bounce uses its own main-database session
    return bounces.queue_bounce(job.database, job.server.id, job.message)


def _prepend_headers(message, lines: list[str]) -> None:
    headers = message.raw_headers or b""
    newline = b"\n" if headers and not headers.endswith(b"\r\n") else b"\r\n"
    prefix = b"".join(line.encode("utf-8") + newline for line in lines)
    message.set_raw(prefix + headers, message.raw_body)

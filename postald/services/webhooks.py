"""Webhooks: URL rules, event subscriptions."""

from __future__ import annotations

import re

from sqlalchemy import select

from postald.errors import Errors, NotFound
from schema.main import Server, Webhook, WebhookEvent

URL_RE = re.compile(r"^https?://[a-z0-9\-._?=&/+:%@]+$", re.IGNORECASE)
#: Events a user can subscribe to.  Postal fires the two send-limit events
#: only at "all events" webhooks; here they can be chosen like any other.
EVENTS = (
    "MessageSent", "MessageDelayed", "MessageDeliveryFailed", "MessageHeld", "MessageBounced",
    "MessageLinkClicked", "MessageLoaded", "DomainDNSError", "SendLimitApproaching", "SendLimitExceeded",
)


def create(session, server: Server, name: str, url: str, all_events: bool = True, events=(), enabled: bool = True,
           sign: bool = True) -> Webhook:
    name, url, events = _validate(name, url, all_events, events)
    webhook = Webhook(server_id=server.id, name=name, url=url, all_events=bool(all_events), enabled=bool(enabled), sign=bool(sign))
    session.add(webhook)
    session.flush()
    set_events(session, webhook, events)
    return webhook


def _validate(name: str, url: str, all_events: bool, events) -> tuple[str, str, list[str]]:
    errors = Errors()
    name, url = (name or "").strip(), (url or "").strip()
    if not name:
        errors.add("name", "can't be blank")
    if not url:
        errors.add("url", "can't be blank")
    elif not URL_RE.match(url):
        errors.add("url", "is invalid")
    events = [e for e in events if e]
    for event in events:
        if event not in EVENTS:
            errors.add("events", f"{event} is not a valid event")
    if not all_events and not events:
        errors.add("events", "must include at least one event unless all events are sent")
    errors.raise_if_any()
    return name, url, events


def set_events(session, webhook: Webhook, events) -> None:
    existing = {e.event: e for e in session.scalars(select(WebhookEvent).where(WebhookEvent.webhook_id == webhook.id))}
    wanted = set() if webhook.all_events else set(events)
    for event, row in existing.items():
        if event not in wanted:
            session.delete(row)
    for event in wanted - set(existing):
        session.add(WebhookEvent(webhook_id=webhook.id, event=event))
    session.flush()


def events_of(session, webhook: Webhook) -> list[str]:
    return sorted(e.event for e in session.scalars(select(WebhookEvent).where(WebhookEvent.webhook_id == webhook.id)))


def subscribed(session, server_id: int, event: str) -> list[Webhook]:
    """Enabled webhooks of a server that receive ``event``."""
    hooks = list(session.scalars(select(Webhook).where(Webhook.server_id == server_id, Webhook.enabled.is_(True))))
    out = []
    for hook in hooks:
        if hook.all_events:
            out.append(hook)
        elif session.scalars(
            select(WebhookEvent.id).where(WebhookEvent.webhook_id == hook.id, WebhookEvent.event == event)
        ).first():
            out.append(hook)
    return out


def get(session, server: Server, uuid: str) -> Webhook:
    webhook = session.scalars(select(Webhook).where(Webhook.server_id == server.id, Webhook.uuid == uuid)).first()
    if webhook is None:
        raise NotFound(f"No webhook found matching '{uuid}'")
    return webhook


def update(session, webhook: Webhook, name: str, url: str, all_events: bool = True, events=(), enabled: bool = True) -> Webhook:
    """Change a webhook and resynchronise its events (none are kept when it takes all events)."""
    name, url, events = _validate(name, url, all_events, events)
    webhook.name, webhook.url, webhook.all_events, webhook.enabled = name, url, bool(all_events), bool(enabled)
    session.flush()
    set_events(session, webhook, events)
    return webhook


def delete(session, webhook: Webhook) -> None:
    session.query(WebhookEvent).filter(WebhookEvent.webhook_id == webhook.id).delete(synchronize_session=False)
    session.delete(webhook)
    session.flush()

"""Which webhooks receive an event: all-events hooks, chosen events, disabled hooks."""

from __future__ import annotations

import pytest

from postald.errors import ValidationError
from postald.services import servers, webhooks
from tests.factories import make_server


def _create(database, server_id, name, **kwargs):
    with database.unit_of_work() as session:
        return webhooks.create(session, servers.get(session, server_id), name, f"https://hooks.example.com/{name}",
                               **kwargs).id


def _receivers(database, server_id, event):
    with database.unit_of_work() as session:
        return sorted(hook.name for hook in webhooks.subscribed(session, server_id, event))


def test_send_limit_events_can_be_chosen_like_any_other(database):
    server_id = make_server(database)
    _create(database, server_id, "everything", all_events=True)
    _create(database, server_id, "limits", all_events=False, events=["SendLimitExceeded"])
    _create(database, server_id, "sent", all_events=False, events=["MessageSent"])
    _create(database, server_id, "off", all_events=True, enabled=False)

    assert _receivers(database, server_id, "SendLimitExceeded") == ["everything", "limits"]
    assert _receivers(database, server_id, "SendLimitApproaching") == ["everything"]
    assert _receivers(database, server_id, "MessageSent") == ["everything", "sent"]


def test_unknown_event_is_refused(database):
    server_id = make_server(database)
    with pytest.raises(ValidationError) as caught:
        _create(database, server_id, "bad", all_events=False, events=["MessageExploded"])
    assert "MessageExploded is not a valid event" in str(caught.value.full_messages)

"""Retry, cancel hold and remove from queue on one message; the queue page;
the held list with bulk release and bulk cancel of a search result."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select, update

from schema.main import QueuedMessage
from tests.ui2.conftest import SERVER_URL, bulk_insert, raw_message


pytestmark = pytest.mark.timeout(120)


def queued_rows(database, server_id):
    with database.unit_of_work() as session:
        return [(q.message_id, q.manual, q.retry_after, q.locked_by) for q in
                session.scalars(select(QueuedMessage).where(QueuedMessage.server_id == server_id).order_by(QueuedMessage.id))]


def set_queue(database, message_id, **values):
    with database.unit_of_work() as session:
        session.execute(update(QueuedMessage).where(QueuedMessage.message_id == message_id).values(**values))


def message_url(message, action=""):
    return f"{SERVER_URL}/messages/{message.id}" + (f"/{action}" if action else "")


def test_single_message_actions(admin, database, world, message_db):
    server_id = world["server"]
    message = message_db.insert_message(scope="outgoing", rcpt_to="rachel@example.com", mail_from="tom@acme.example",
                                        raw=raw_message(subject="Action hero"))
    token = admin.csrf()

    # queued, waiting for a retry: the panel offers "Retry delivery now"; retry clears retry_after
    set_queue(database, message.id, retry_after=dt.datetime.utcnow() + dt.timedelta(hours=1), attempts=2)
    page = admin.get(message_url(message)).text
    assert "This message will be retried automatically in about 1 hour." in page and "Retry delivery now" in page
    done = admin.post_form(message_url(message, "retry"), {}, token=token, status=302)
    assert done.location.endswith(message_url(message))
    assert "This message will be retried shortly." in done.follow().text
    assert queued_rows(database, server_id) == [(message.id, False, None, None)]

    # locked by a worker: it cannot be removed from the queue
    set_queue(database, message.id, locked_by="worker 1", locked_at=dt.datetime.utcnow())
    page = admin.get(message_url(message)).text
    assert "Message is currently being processed." in page and "Remove from queue" not in page
    admin.post_form(message_url(message, "remove_from_queue"), {}, method="delete", token=token, status=302)
    assert len(queued_rows(database, server_id)) == 1

    # unlocked: removed
    set_queue(database, message.id, locked_by=None, locked_at=None)
    admin.post_form(message_url(message, "remove_from_queue"), {}, method="delete", token=token, status=302)
    assert queued_rows(database, server_id) == []

    # held: release queues it again with manual set
    message_db.add_delivery(message.id, "Held", details="Credential is configured to hold all messages")
    page = admin.get(message_url(message)).text
    assert "Release message" in page and "Cancel hold" in page and "It will be held until" in page
    released = admin.post_form(message_url(message, "retry"), {}, token=token).follow()
    assert "This message has been released. Delivery will be attempted shortly." in released.text
    assert queued_rows(database, server_id) == [(message.id, True, None, None)]

    # cancel hold: HoldCancelled, no longer held
    admin.post_form(message_url(message, "remove_from_queue"), {}, method="delete", token=token)
    response = admin.post_form(message_url(message, "cancel_hold"), {}, token=token, status=302)
    assert response.location.endswith(message_url(message))
    reloaded = message_db.message(message.id)
    assert reloaded.status == "HoldCancelled" and not reloaded.held_flag
    assert message_db.deliveries_for(message.id)[-1]["details"] == "The hold on this message has been removed without action."

    # neither queued nor held: redeliver
    page = admin.get(message_url(message)).text
    assert "This message can be redelivered as if it had just been received." in page
    again = admin.post_form(message_url(message, "retry"), {}, token=token).follow()
    assert "This message will be redelivered shortly." in again.text

    # raw message gone: nothing to send
    message_db.update_message(message.id, raw_table=None, raw_headers_id=None, raw_body_id=None)
    gone = admin.post_form(message_url(message, "retry"), {}, token=token).follow()
    assert "This message is no longer available." in gone.text


def test_actions_answer_json_and_need_csrf(admin, world, message_db):
    message = message_db.insert_message(scope="outgoing", rcpt_to="a@example.com", mail_from="b@acme.example", raw=raw_message())
    response = admin.post_form(message_url(message, "retry"), {}, headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.json == {"redirect_to": message_url(message)}
    before = len(message_db.deliveries_for(message.id))
    admin.post(message_url(message, "retry"), {}, status=422)
    admin.post(message_url(message, "cancel_hold"), {"authenticity_token": "wrong"}, status=422)
    admin.post(SERVER_URL + "/messages/held/release", {"authenticity_token": "wrong"}, status=422)
    assert len(message_db.deliveries_for(message.id)) == before


def test_development_server_panel(admin, database, world, message_db):
    from postald.services import servers

    with database.unit_of_work() as session:
        servers.get(session, world["server"]).mode = "Development"
    message = message_db.insert_message(scope="outgoing", rcpt_to="a@example.com", mail_from="b@acme.example",
                                        raw=raw_message(), queue=False)
    assert "This server is in development mode so this message can be redelivered" in admin.get(message_url(message)).text


def test_queue_page(admin, database, world, message_db):
    assert "Your queue is currently empty." in admin.get(SERVER_URL + "/queue").text
    first = message_db.insert_message(scope="outgoing", rcpt_to="first@example.com", mail_from="x@acme.example",
                                      raw=raw_message(subject="First queued"))
    second = message_db.insert_message(scope="outgoing", rcpt_to="second@example.com", mail_from="x@acme.example",
                                       raw=raw_message(subject="Second queued"))
    set_queue(database, first.id, attempts=3, retry_after=dt.datetime(2030, 1, 2, 3, 4))
    with database.unit_of_work() as session:
        session.add(QueuedMessage(server_id=world["server"], message_id=987654, domain="gone.example", attempts=0))
    page = admin.get(SERVER_URL + "/queue").text
    assert page.index("Deleted message #987654") < page.index("Second queued") < page.index("First queued")
    assert "Attempts: 3" in page and "Retry after: 02 Jan 03:04" in page and "Retry after: ASAP" in page
    assert "Domain: gone.example" in page and "Locked: No" in page
    assert "2 queued messages" in page  # the server header counts ready rows: the first waits until 2030
    # 25 per page with numbered page links
    with database.unit_of_work() as session:
        for n in range(30):
            session.add(QueuedMessage(server_id=world["server"], message_id=500000 + n, domain="bulk.example"))
    page_one = admin.get(SERVER_URL + "/queue").text
    assert page_one.count("Deleted message #") == 25 and 'href="/org/acme/servers/main/queue?page=2">2</a>' in page_one
    page_two = admin.get(SERVER_URL + "/queue?page=2").text
    assert "Second queued" in page_two and "First queued" in page_two


def held_subjects(page) -> list[str]:
    return re.findall(r'class="message-item__subject">([^<]*)<', page.text)


def test_held_list_and_bulk_actions(admin, database, world, message_db):
    assert "You haven&#39;t got any held messages." in admin.get(SERVER_URL + "/messages/held").text
    held = []
    for n in range(4):
        message = message_db.insert_message(scope="outgoing", rcpt_to=f"held{n}@example.com", mail_from="x@acme.example",
                                            raw=raw_message(subject=f"Held {n}"), queue=False)
        message_db.add_delivery(message.id, "Held", details="held for testing")
        held.append(message)
    spam = message_db.insert_message(scope="incoming", rcpt_to="in@acme.example", mail_from="spammer@example.net",
                                     raw=raw_message(subject="Held spam"), queue=False)
    message_db.update_message(spam.id, spam=1)
    message_db.add_delivery(spam.id, "Held", details="quarantined")
    bulk_insert(message_db, 40, status="Sent")  # not held

    page = admin.get(SERVER_URL + "/messages/held")
    assert held_subjects(page) == ["Held 0", "Held 1", "Held 2", "Held 3", "Held spam"]  # by id, spam included
    assert "Release all 5 messages" in page.text

    filtered = admin.get(SERVER_URL + "/messages/held?query=to:held1@example.com to:held2@example.com")
    assert held_subjects(filtered) == ["Held 1", "Held 2"]
    form = [f for f in filtered.forms.values() if f.action.endswith("/held/release")][0]
    released = form.submit().follow()
    assert "2 messages released. Delivery will be attempted shortly." in released.text
    assert sorted((m, manual) for m, manual, _, _ in queued_rows(database, world["server"])) == [
        (held[1].id, True), (held[2].id, True)]

    cancel = [f for f in admin.get(SERVER_URL + "/messages/held?query=spam:yes").forms.values()
              if f.action.endswith("/held/cancel")][0]
    assert "The hold on 1 message has been cancelled." in cancel.submit().follow().text
    assert message_db.message(spam.id).status == "HoldCancelled"
    assert message_db.message(held[0].id).status == "Held"

    # releasing everything left skips the queued ones' duplicates and the messages without raw data
    message_db.update_message(held[3].id, raw_table=None, raw_headers_id=None, raw_body_id=None)
    everything = [f for f in admin.get(SERVER_URL + "/messages/held?query=").forms.values()
                  if f.action.endswith("/held/release")][0].submit().follow()
    assert "3 messages released." in everything.text and "1 message could not be released" in everything.text
    queued = [m for m, _, _, _ in queued_rows(database, world["server"])]
    assert sorted(queued) == sorted([held[0].id, held[1].id, held[2].id])


def test_queue_page_links_stay_few_for_long_queues():
    from pyramid_app.ui.views.queue import page_numbers

    assert page_numbers(1, 1) == [1]
    assert page_numbers(1, 6) == [1, 2, 3, 4, 5, 6]
    assert page_numbers(50, 400) == [1, None, 46, 47, 48, 49, 50, 51, 52, 53, 54, None, 400]
    assert page_numbers(399, 400) == [1, None, 395, 396, 397, 398, 399, 400]

"""Routes of the message pages of a server: lists, queue, held messages,
suppressions, the test-message form and each message's own pages and actions."""

from __future__ import annotations

from pyramid_app.ui.routes import SERVER

MESSAGES = SERVER + "/messages"
MESSAGE = MESSAGES + r"/{id:\d+}"

#: Pages and actions of one message: route ``server_message_<name>`` at ``…/messages/<id>/<name>``.
MESSAGE_PAGES = ("activity", "plain", "html", "html_raw", "attachments", "attachment", "headers", "download",
                 "spam_checks", "deliveries", "retry", "cancel_hold", "remove_from_queue")


def add_message_routes(config) -> None:
    config.add_route("server_queue", SERVER + "/queue")
    config.add_route("server_messages", MESSAGES)  # POST: send a test message
    config.add_route("server_messages_new", MESSAGES + "/new")
    config.add_route("server_messages_outgoing", MESSAGES + "/outgoing")
    config.add_route("server_messages_incoming", MESSAGES + "/incoming")
    config.add_route("server_messages_export", MESSAGES + "/{scope:outgoing|incoming}/export")
    config.add_route("server_messages_held", MESSAGES + "/held")
    config.add_route("server_messages_held_release", MESSAGES + "/held/release")
    config.add_route("server_messages_held_cancel", MESSAGES + "/held/cancel")
    config.add_route("server_suppressions", MESSAGES + "/suppressions")
    config.add_route("server_suppression_item", MESSAGES + r"/suppressions/{sid:\d+}")
    config.add_route("server_message", MESSAGE)
    for page in MESSAGE_PAGES:
        config.add_route(f"server_message_{page}", f"{MESSAGE}/{page}")

"""An SMTP server for tests that records what it receives, built on aiosmtpd.

::

    with SMTPSink() as sink:                      # plain SMTP on 127.0.0.1:<free port>
        ...deliver...
        [message] = sink.wait_for(1)
        message.mail_from, message.rcpt_tos, message.data, message.tls

Replies can be scripted: ``rcpt_reply`` / ``data_reply`` / ``mail_reply`` are a
reply line (``"450 4.2.0 Try again in 30 seconds"``), or a callable taking the
address (or the envelope, for DATA) and returning a reply line or ``None`` to
accept.  ``certificate`` (from :mod:`tests.support.certs`) offers STARTTLS, or
with ``implicit_tls=True`` speaks TLS from the first byte.  ``pipelining=True``
offers PIPELINING (RFC 2920) in the EHLO reply.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiosmtpd.controller import Controller

from tests.support.processes import free_port

Reply = str | Callable[[Any], str | None] | None


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    peer: tuple
    received_at: float = field(default_factory=time.time)


class _Handler:
    def __init__(self, sink: "SMTPSink"):
        self.sink = sink

    @staticmethod
    def _scripted(reply: Reply, argument: Any) -> str | None:
        if reply is None:
            return None
        if callable(reply):
            return reply(argument)
        return reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.sink._note_connection(session.peer)
        reply = self._scripted(self.sink.mail_reply, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._scripted(self.sink.rcpt_reply, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self._scripted(self.sink.data_reply, envelope)
        if reply:
            return reply
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.sink._record(ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(data),
            tls=session.ssl is not None or self.sink.implicit_tls,
            peer=tuple(session.peer) if session.peer else (),
        ))
        return "250 2.0.0 Ok: queued as SINK"


class SMTPSink:
    """A recording SMTP server on 127.0.0.1 and a free port."""

    def __init__(self, *, certificate=None, implicit_tls: bool = False, hostname: str = "sink.test",
                 rcpt_reply: Reply = None, data_reply: Reply = None, mail_reply: Reply = None,
                 pipelining: bool = False):
        self.pipelining = pipelining
        self.certificate = certificate
        self.implicit_tls = implicit_tls
        self.hostname = hostname
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.mail_reply = mail_reply
        self.messages: list[ReceivedMessage] = []
        self.connections: set[tuple] = set()
        self._condition = threading.Condition()
        self._controller: Controller | None = None
        self.port: int | None = None

    def start(self) -> "SMTPSink":
        kwargs: dict[str, Any] = {"server_hostname": self.hostname, "decode_data": False,
                                  "data_size_limit": 64 * 1024 * 1024}
        if self.certificate is not None:
            context = self.certificate.server_context()
            if self.implicit_tls:
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
        last_error: Exception | None = None
        for _attempt in range(10):
            port = free_port()
            controller = Controller(_Handler(self), hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
            try:
                controller.start()
            except Exception as exc:  # the port was taken between probing and binding
                last_error = exc
                continue
            self._controller, self.port = controller, port
            return self
        raise RuntimeError(f"could not start the SMTP sink: {last_error}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "SMTPSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- recording -----------------------------------------------------------

    def _record(self, message: ReceivedMessage) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def _note_connection(self, peer) -> None:
        with self._condition:
            self.connections.add(tuple(peer) if peer else ())

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"SMTP sink received {len(self.messages)} of {count} messages in {timeout}s")
                self._condition.wait(remaining)
            return list(self.messages)

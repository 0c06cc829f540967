"""An HTTP server for tests that records the webhook requests it receives.

::

    with Receiver() as receiver:                 # http://127.0.0.1:<free port>/hook
        ...send...
        [request] = receiver.wait_for(1)
        request.json, request.headers, request.body

Answers are scripted with ``receiver.respond(status, body, delay)``: each call
queues one answer; when none is queued the default (200 ``OK``) is used.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)

    @property
    def json(self):
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"OK"
    delay: float = 0.0
    headers: tuple = ()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        receiver: Receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver._record(ReceivedRequest("POST", self.path, {k: v for k, v in self.headers.items()}, body))
        answer = receiver._next_answer()
        if answer.delay:
            receiver._stopping.wait(answer.delay)
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that answers POSTs as scripted."""

    def __init__(self, path: str = "/hook"):
        self.path = path
        self.requests: list[ReceivedRequest] = []
        self.default = Answer()
        self._answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def respond(self, status: int = 200, body: bytes | str = b"OK", delay: float = 0.0, headers=()) -> None:
        if isinstance(body, str):
            body = body.encode()
        self._answers.put(Answer(status, body, delay, tuple(headers)))

    def _next_answer(self) -> Answer:
        try:
            return self._answers.get_nowait()
        except queue.Empty:
            return self.default

    def _record(self, request: ReceivedRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
                self._arrived.wait(remaining)
            return list(self.requests)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> "Receiver":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

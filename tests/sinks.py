"""Loopback sinks for tests: real servers on 127.0.0.1 that record what they receive.

- ``SmtpSink``: an aiosmtpd server; ``messages`` holds each received message parsed
  (``email.message.EmailMessage``), ``url()`` gives a ``mailto://`` URL pointing at it.
- ``WebhookReceiver``: an HTTP server recording every POST as a ``Request``; it answers
  ``status`` (200 by default, with body ``ok``, which Slack's webhook client expects) -
  set ``receiver.status = 500`` to make it fail. ``url("/hook")`` gives ``json://...``.
- ``SilentServer``: accepts TCP connections and never answers (for timeout tests); records
  how long each client held on before closing.
- ``free_port()``: a port nobody listens on (for "connection refused" tests).

The servers are context managers (started on enter, stopped on exit) and safe to read from the
test thread: ``wait_for(n)`` blocks until n messages/requests arrived or the timeout passes.
"""
from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (at the time of the call)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Recorder:
    """A list filled by a server thread, with a condition to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Any] = []

    def add(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self._items)

    def wait_for(self, n: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self._items)


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class _SmtpHandler:
    def __init__(self, recorder: _Recorder):
        self.recorder = recorder

    async def handle_DATA(self, server, session, envelope) -> str:
        self.recorder.add(Envelope(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


class _AnyPortController(Controller):
    """aiosmtpd's Controller bound to port 0: learn the real port before it probes itself."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """An SMTP server on 127.0.0.1 (random port) that accepts and records every message."""

    def __init__(self) -> None:
        self._recorder = _Recorder()
        self._controller = _AnyPortController(_SmtpHandler(self._recorder), hostname=HOST, port=0)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._controller.port

    def url(self, sender: str = "monitor@example.org", to: str = "desk@example.org") -> str:
        """An Apprise ``mailto://`` URL delivering to this sink (plain SMTP, no auth)."""
        return f"mailto://{HOST}:{self.port}?from={sender}&to={to}"

    @property
    def envelopes(self) -> list[Envelope]:
        return self._recorder.snapshot()

    @property
    def messages(self) -> list[EmailMessage]:
        return [e.message for e in self.envelopes]

    def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[EmailMessage]:
        return [e.message for e in self._recorder.wait_for(n, timeout)]


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    status: int = 200  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (random port) recording every POST/PUT.

    Answers ``status`` with ``reply`` as body; change either at any time (e.g.
    ``receiver.status = 500``) to simulate a failing endpoint. ``fail_next = n`` makes the
    next n requests (to any path) get a 500 first. ``hold_next = n`` makes the next n
    requests wait ``hold_seconds`` before their answer; with ``hold_accepted`` such a request
    is recorded as accepted (the receiver acted on it, only the answer is late), else with
    status 0 (never answered, not acted on).
    """

    def __init__(self, status: int = 200, reply: bytes = b"ok") -> None:
        self.status = status
        self.reply = reply
        self.fail_next = 0
        self.hold_next = 0
        self.hold_seconds = 30.0
        self.hold_accepted = False
        self._lock = threading.Lock()
        self._recorder = _Recorder()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    status, reply = receiver.status, receiver.reply
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = 500
                    hold = receiver.hold_next > 0
                    if hold:
                        receiver.hold_next -= 1
                        held_for, held_accepted = receiver.hold_seconds, receiver.hold_accepted
                if hold:
                    receiver._recorder.add(Request(self.command, self.path, dict(self.headers.items()), body,
                                                   status if held_accepted else 0))
                    time.sleep(held_for)
                    with contextlib.suppress(OSError):  # the sender may be gone by now
                        self.send_response(status)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    return
                receiver._recorder.add(Request(self.command, self.path, dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str = "/hook", scheme: str = "json") -> str:
        """An Apprise URL (``json://``, ``form://``, ``xml://`` ...) posting to this receiver."""
        return f"{scheme}://{HOST}:{self.port}{path}"

    @property
    def requests(self) -> list[Request]:
        return self._recorder.snapshot()

    def accepted(self, path: str | None = None) -> list[Request]:
        """Requests answered 2xx (to ``path`` when given)."""
        return [r for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)]

    def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[Request]:
        return self._recorder.wait_for(n, timeout)


# --------------------------------------------------------------------------- silence


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung peer).

    ``held_for`` lists, per connection, how long the client stayed before closing it - the
    proof that a client's own timeout fired rather than a thread hanging on forever."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._recorder = _Recorder()
        self._threads: list[threading.Thread] = []

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._hold, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _hold(self, conn: socket.socket) -> None:
        start = time.monotonic()
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):  # the client closed its end
                        self._recorder.add(time.monotonic() - start)
                        return
                except TimeoutError:
                    continue
                except OSError:
                    self._recorder.add(time.monotonic() - start)
                    return

    def start(self) -> SilentServer:
        t = threading.Thread(target=self._serve, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._sock.close()

    def __enter__(self) -> SilentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def held_for(self) -> list[float]:
        return self._recorder.snapshot()

    def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[float]:
        return self._recorder.wait_for(n, timeout)

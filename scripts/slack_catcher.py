"""A local HTTP server on 127.0.0.1 playing Slack's incoming-webhook endpoint.

Alertmanager's Slack notifier posts its real payload (attachments with title, text, color) to
whatever api_url it is given, so pointing it here lets a test read exactly what Slack would
receive. Any path is accepted, so the same catcher can also stand in for a plain webhook. The
tests read what it caught; `make demo` (scripts/demo.py) prints it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class CaughtRequest:
    """One POST received: its path, decoded JSON body, when it arrived (time.monotonic) and
    its headers."""

    path: str
    body: dict
    received_at: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SlackCatcher:
    """Records every POST; wait_for() blocks until one matching a predicate has arrived."""

    port: int
    requests: list[CaughtRequest] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)
    listeners: list[Callable[[CaughtRequest], None]] = field(default_factory=list)
    """Called with each request as it arrives (on the server's thread)."""

    def url(self, path: str = "/slack") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, request: CaughtRequest) -> None:
        with self.condition:
            self.requests.append(request)
            self.condition.notify_all()
        for listener in self.listeners:
            listener(request)

    def wait_for(self, predicate: Callable[[CaughtRequest], bool],
                 timeout_seconds: float) -> CaughtRequest:
        """The first request (old or new) that matches predicate; TimeoutError after timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self.condition:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.path, slack_titles(r)) for r in self.requests]
                    raise TimeoutError(f"no matching request within {timeout_seconds}s; "
                                       f"received: {seen}")
                self.condition.wait(remaining)


def slack_titles(request: CaughtRequest) -> list[str]:
    """The attachment titles of a Slack payload (empty for any other body)."""
    return [attachment.get("title", "") for attachment in request.body.get("attachments", [])]


def slack_texts(request: CaughtRequest) -> list[str]:
    return [attachment.get("text", "") for attachment in request.body.get("attachments", [])]


_SLACK_LINK = re.compile(r"<([^<>|]+)\|[^<>]*>")


def slack_links(request: CaughtRequest) -> list[str]:
    """Every link of a Slack payload: the attachments' title links and the `<url|label>` links
    of their texts."""
    links = []
    for attachment in request.body.get("attachments", []):
        if attachment.get("title_link"):
            links.append(attachment["title_link"])
        links += _SLACK_LINK.findall(attachment.get("text", ""))
    return links


def _handler_for(catcher: SlackCatcher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"unparsed": raw.decode(errors="replace")}
            catcher.record(CaughtRequest(self.path, body, time.monotonic(), dict(self.headers)))
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")  # what Slack answers
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender stopped (a stack shutting down) before reading the answer

        def log_message(self, format: str, *args: object) -> None:
            """Silent: the test reads requests, not an access log."""

    return Handler


@contextmanager
def slack_catcher(port: int = 0) -> Iterator[SlackCatcher]:
    """A catcher on 127.0.0.1:port (0: a free port, which catcher.port then holds)."""
    catcher = SlackCatcher(port)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(catcher))
    catcher.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield catcher
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

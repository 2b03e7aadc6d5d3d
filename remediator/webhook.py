"""The remediator's HTTP(S) endpoint: POST /alerts (Alertmanager's webhook), GET /metrics and /.

It is the exporter's server (exporter/server.py) with one route added, so TLS, web-config basic
auth, response headers, HEAD and the cap on open connections (`server.max_connections`) behave
exactly as the exporter's (same --web.config.file format, same code). Two credentials with two jobs:

- GET / and /metrics: basic auth from the web config when it lists users (Prometheus scrapes);
- POST /alerts: always the bearer token from `server.bearer_token_file`, compared in constant
  time (Alertmanager's `http_config.authorization.credentials_file`). A scrape credential can
  never trigger an action.

A webhook request is checked in this order, and refused before its body is read where possible:
token (401), JSON content type (415), a Content-Length within `max_body_bytes` (411, 413),
a valid version-4 payload (400). Every refusal is counted and audited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.server import ExporterHTTPServer, ExporterRequestHandler
from exporter.webconfig import WebConfig
from remediator import __version__
from remediator.config import read_token
from remediator.dispatcher import AuditUnavailable, Dispatcher
from remediator.payload import PayloadError, parse_notification

WEBHOOK_PATH = "/alerts"
JSON_TYPE = "application/json"


class WebhookServer(ExporterHTTPServer):
    max_connections_setting = "server.max_connections"

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 web_config: WebConfig, dispatcher: Dispatcher, token_file: Path,
                 max_body_bytes: int, max_connections: int) -> None:
        self.dispatcher = dispatcher
        self.token_file = token_file
        self.max_body_bytes = max_body_bytes
        super().__init__(address, registry, "/metrics", web_config, max_connections)
        # The exporter's server is built with the exporter's handler; this one adds the route.
        self.RequestHandlerClass = WebhookRequestHandler


class WebhookRequestHandler(ExporterRequestHandler):
    server: WebhookServer
    server_version = f"aiinfra-remediator/{__version__}"

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != WEBHOOK_PATH:
            self._refuse(404, "Not found\n")
            return
        if not self._bearer_token_valid():
            self._reject("unauthorized", 401, "missing or wrong bearer token",
                         {"WWW-Authenticate": 'Bearer realm="aiinfra-remediator"'})
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != JSON_TYPE:
            self._reject("unsupported_media_type", 415, f"Content-Type {content_type!r}, "
                                                        f"expected {JSON_TYPE}")
            return
        length_text = self.headers.get("Content-Length", "")
        if self.headers.get("Transfer-Encoding") or not length_text.isdigit():
            self._reject("length_required", 411, "a Content-Length header is required")
            return
        length = int(length_text)
        if length > self.server.max_body_bytes:
            self._reject("payload_too_large", 413, f"{length} bytes, at most "
                                                   f"{self.server.max_body_bytes} accepted")
            return
        body = self.rfile.read(length)
        try:
            notification = parse_notification(body)
        except PayloadError as error:
            self._reject("invalid_payload", 400, str(error), body_read=True)
            return
        try:
            counts = self.server.dispatcher.handle(notification)
        except AuditUnavailable:
            self._send(500, b"the audit log cannot be written; nothing was done\n",
                       "text/plain; charset=utf-8")
            return
        self._send(200, json.dumps({"decisions": counts}).encode(), JSON_TYPE)

    def _bearer_token_valid(self) -> bool:
        scheme, _, presented = self.headers.get("Authorization", "").partition(" ")
        expected = read_token(self.server.token_file)
        # Digests of equal length, so the comparison time says nothing about the token.
        matches = hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(),
                                      hashlib.sha256(expected.encode()).digest())
        return bool(expected) and scheme.lower() == "bearer" and matches

    def _reject(self, reason: str, status: int, detail: str,
                extra_headers: dict[str, str] | None = None, body_read: bool = False) -> None:
        self.server.dispatcher.reject_request(reason, status, self.client_address[0], detail)
        self._refuse(status, detail + "\n", extra_headers, body_read)

    def _refuse(self, status: int, message: str, extra_headers: dict[str, str] | None = None,
                body_read: bool = False) -> None:
        """Answer and, unless the body was read, close: its unread bytes would otherwise be
        taken for the next request on this kept-alive connection."""
        headers = dict(extra_headers or {})
        if not body_read:
            self.close_connection = True
            headers["Connection"] = "close"
        self._send(status, message.encode(), "text/plain; charset=utf-8", headers)

    def _landing_page(self) -> bytes:
        return (f"<!DOCTYPE html><html><head><title>aiinfra remediator</title></head><body>"
                f"<h1>aiinfra remediator {__version__}</h1>"
                f"<p>Alertmanager webhook receiver: POST {WEBHOOK_PATH} with a bearer token.</p>"
                f'<p><a href="/metrics">Metrics</a></p></body></html>\n').encode()

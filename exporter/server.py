"""The HTTP(S) server: landing page, telemetry path, basic auth, TLS, a cap on connections.

A small threading server instead of prometheus-client's start_http_server, because exporter-toolkit
compatibility needs basic auth, and a TLS handshake must happen on the connection's own thread so a
slow client cannot stall the accept loop. Each open connection holds one thread, so at most
`max_connections` are served at once: a connection beyond the cap waits (briefly, on the accept
thread, and then in the kernel's listen backlog, without a thread of its own) for one to close,
and is closed unanswered if none does within CONNECTION_QUEUE_SECONDS. Requests for the metrics
that arrive while a rendering is in flight share it (body and gzip), as the collectors share
their collections: a hundred scrapers cost about one rendering each time, not a hundred.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import html
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.exposition import CONTENT_TYPE, render
from exporter.webconfig import WebConfig
from exporter.worker import SingleFlight

LOG = logging.getLogger("exporter.http")
CONNECTION_TIMEOUT_SECONDS = 30.0
CONNECTION_QUEUE_SECONDS = 0.5
DEFAULT_MAX_CONNECTIONS = 100
REFUSAL_LOG_INTERVAL_SECONDS = 60.0
GZIP_MIN_BYTES = 1024
RENDER_TIMEOUT_SECONDS = 60.0  # each collector has its own, shorter deadline inside


class RenderedMetrics:
    """One rendering of the registry, shared by the requests that waited for it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.gzipped = gzip.compress(body, compresslevel=1) if len(body) >= GZIP_MIN_BYTES else None


def parse_listen_address(address: str) -> tuple[str, int]:
    """'host:port', ':port' (all IPv4 interfaces) or '[v6]:port' -> (host, port)."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT (e.g. :10100 or 127.0.0.1:10100)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class ExporterHTTPServer(ThreadingHTTPServer):
    """One thread per connection; TLS wrapping without handshaking on the accept thread."""

    daemon_threads = True
    request_queue_size = 64
    max_connections_setting = "--web.max-connections"
    """Where a user raises the cap (named in the log line when it is reached)."""

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 telemetry_path: str, web_config: WebConfig,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.telemetry_path = telemetry_path
        self.web_config = web_config
        self.max_connections = max_connections
        self.refused_connections = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        self._last_refusal_log = float("-inf")
        self.rendering = SingleFlight("render", lambda: RenderedMetrics(render(registry)))
        super().__init__(address, ExporterRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread once a slot is free; close it if none frees soon."""
        if not self._slots.acquire(timeout=CONNECTION_QUEUE_SECONDS):
            self.refused_connections += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL_SECONDS:
                self._last_refusal_log = now
                LOG.warning("%d connections open (%s): closing new ones until some end (%d "
                            "refused so far)", self.max_connections,
                            self.max_connections_setting, self.refused_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def get_request(self) -> tuple[Any, Any]:
        connection, client = super().get_request()
        connection.settimeout(CONNECTION_TIMEOUT_SECONDS)
        # Headers and body go out in two writes; with Nagle on, a kept-alive connection then
        # waits for the client's delayed ACK (~40 ms) before the body leaves.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.web_config.ssl_context
        if context is not None:
            connection = context.wrap_socket(connection, server_side=True,
                                             do_handshake_on_connect=False)
        return connection, client

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request is routine, not a traceback on stderr."""
        LOG.debug("request from %s failed", client_address, exc_info=True)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class ExporterRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    server: ExporterHTTPServer
    server_version = f"aiinfra-exporter/{__version__}"
    _send_body = True

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as error:
                LOG.debug("TLS handshake with %s failed: %s", self.client_address, error)
                self.request.close()
                raise ConnectionAbortedError from error
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError) as error:
            LOG.debug("connection from %s ended: %s", self.client_address, error)

    def do_GET(self) -> None:
        self._respond()

    def do_HEAD(self) -> None:
        """As GET, without the body (Content-Length is still the GET body's)."""
        self._send_body = False
        try:
            self._respond()
        finally:
            self._send_body = True  # this handler serves the connection's next request too

    def _respond(self) -> None:
        if not self._authorized():
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="aiinfra-exporter"'})
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._send_metrics()
        elif path == "/":
            self._send(200, self._landing_page(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not found\n", "text/plain; charset=utf-8")

    def _authorized(self) -> bool:
        users = self.server.web_config.users
        if not users:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self.server.web_config.check_password(username, password)

    def _send_metrics(self) -> None:
        try:  # text 0.0.4, which every Prometheus accepts
            rendered: RenderedMetrics = self.server.rendering.call(RENDER_TIMEOUT_SECONDS)
        except Exception:  # a broken exposition must still answer, with a reason
            LOG.exception("rendering metrics failed")
            self._send(500, b"error rendering metrics; see the exporter's log\n",
                       "text/plain; charset=utf-8")
            return
        if rendered.gzipped is not None and "gzip" in self.headers.get("Accept-Encoding", ""):
            self._send(200, rendered.gzipped, CONTENT_TYPE, {"Content-Encoding": "gzip"})
        else:
            self._send(200, rendered.body, CONTENT_TYPE)

    def _landing_page(self) -> bytes:
        path = html.escape(self.server.telemetry_path)
        return (f"<!DOCTYPE html><html><head><title>aiinfra exporter</title></head><body>"
                f"<h1>aiinfra exporter {__version__}</h1>"
                f"<p>Host and NVIDIA GPU metrics for Prometheus.</p>"
                f'<p><a href="{path}">Metrics</a></p></body></html>\n').encode()

    def _send(self, status: int, body: bytes, content_type: str,
              extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.web_config.headers, **(extra_headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self._send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s " + format, self.client_address[0], *args)

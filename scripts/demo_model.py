"""A tiny stand-in for a model endpoint: `make run` probes it, tests steer its latency and errors.

    python3 scripts/demo_model.py [--listen-address 127.0.0.1:10103] [--latency-seconds 0.08]

- `POST /v1/predict` with `{"inputs": [numbers]}` answers `{"model": "demo", "outputs": [...]}`
  after a latency around --latency-seconds (log-normal jitter and a slow ten-minute wave, so a
  dashboard has something to show); a share of requests (--error-ratio) answers 503 instead.
- `GET /healthz` answers `ok`; `GET /metrics` serves the server's own
  `demo_model_request_duration_seconds` histogram (what the passive recording rules read).
- `PUT /control` with any of `{"latency_seconds": 2.0, "error_ratio": 0.5, "hang": true}` changes
  its behaviour while it runs: make the model slow and watch the alert and the anomaly score.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

HANG_SECONDS = 3600.0
WAVE_PERIOD_SECONDS = 600.0


@dataclass
class DemoModel:
    """What the endpoint does; change the fields at any time (tests do, PUT /control does)."""

    latency_seconds: float = 0.0
    jitter: float = 0.0  # sigma of the log-normal factor on the latency
    wave_ratio: float = 0.0  # amplitude of the slow wave, as a share of the latency
    error_ratio: float = 0.0
    error_status: int = 503
    hang: bool = False  # accept requests and never answer (until stopped)
    outputs: Any = None  # None: echo the inputs doubled; anything else is answered as is
    answers: list[tuple[float, int]] = field(default_factory=list)  # (latency slept, status)
    last_headers: dict[str, str] = field(default_factory=dict)  # of the latest predict request
    released: threading.Event = field(default_factory=threading.Event)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.histogram = Histogram("demo_model_request_duration_seconds",
                                   "Time the demo model took to answer, as the server saw it.",
                                   ["handler"], registry=self.registry)
        self.lock = threading.Lock()

    @property
    def requests_served(self) -> int:
        return len(self.answers)

    def latency_now(self) -> float:
        wave = 1 + self.wave_ratio * math.sin(2 * math.pi * time.time() / WAVE_PERIOD_SECONDS)
        return max(0.0, self.latency_seconds * wave * math.exp(random.gauss(0, self.jitter)))

    def control(self, changes: dict) -> None:
        for key in ("latency_seconds", "error_ratio", "hang"):
            if key in changes:
                setattr(self, key, type(getattr(self, key))(changes[key]))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _DemoServer

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif self.path == "/metrics":
            self._send(200, generate_latest(self.server.model.registry), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        model = self.server.model
        if self.path != "/v1/predict":
            self._send(404, b"not found\n", "text/plain")
            return
        started = time.perf_counter()
        model.last_headers = dict(self.headers.items())
        try:
            inputs = json.loads(self._body() or b"{}").get("inputs", [])
        except (ValueError, AttributeError):
            self._send(400, b'{"error": "expected {\\"inputs\\": [...]}"}\n', "application/json")
            return
        if model.hang:
            model.released.wait(HANG_SECONDS)
            return
        latency = model.latency_now()
        time.sleep(latency)
        status = model.error_status if random.random() < model.error_ratio else 200
        with model.lock:
            model.answers.append((latency, status))
        if status != 200:
            self._send(status, b'{"error": "overloaded"}\n', "application/json")
        else:
            outputs = model.outputs if model.outputs is not None else [
                2 * value for value in inputs if isinstance(value, int | float)]
            self._send(200, json.dumps({"model": "demo", "outputs": outputs}).encode(),
                       "application/json")
        model.histogram.labels("/v1/predict").observe(time.perf_counter() - started)

    def do_PUT(self) -> None:
        if self.path != "/control":
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            self.server.model.control(json.loads(self._body()))
        except (ValueError, TypeError, AttributeError) as error:
            self._send(400, f"{error}\n".encode(), "text/plain")
            return
        self._send(204, b"", "text/plain")

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a probe every few seconds would fill the log."""


class _DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: DemoModel) -> None:
        self.model = model
        super().__init__(address, _Handler)


@contextlib.contextmanager
def serving(model: DemoModel, host: str = "127.0.0.1", port: int = 0,
            tls_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `model` on host:port (0: a free port) in a thread; yields the base URL."""
    server = _DemoServer((host, port), model)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="demo-model", daemon=True)
    thread.start()
    try:
        scheme = "http" if tls_context is None else "https"
        yield f"{scheme}://{host}:{server.server_address[1]}"
    finally:
        model.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-address", default="127.0.0.1:10103", help="HOST:PORT")
    parser.add_argument("--latency-seconds", type=float, default=0.08)
    parser.add_argument("--jitter", type=float, default=0.25,
                        help="sigma of the log-normal latency factor")
    parser.add_argument("--wave-ratio", type=float, default=0.2,
                        help="amplitude of a slow ten-minute wave, as a share of the latency")
    parser.add_argument("--error-ratio", type=float, default=0.0)
    args = parser.parse_args(argv)
    host, _, port = args.listen_address.rpartition(":")
    model = DemoModel(latency_seconds=args.latency_seconds, jitter=args.jitter,
                      wave_ratio=args.wave_ratio, error_ratio=args.error_ratio)
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    with serving(model, host or "127.0.0.1", int(port)) as url:
        print(f"demo model on {url}/v1/predict", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

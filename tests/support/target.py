"""A scrape target whose values the test sets: the stand-in for 'a metric that misbehaves'."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import start_http_server

from tests.support.services import free_port


@dataclass
class ControllableTarget:
    """Serves `test_value{series=...}` gauges on 127.0.0.1:port/metrics; set() changes them."""

    port: int
    gauge: Gauge
    lock: threading.Lock

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, series: str, value: float) -> None:
        with self.lock:
            self.gauge.labels(series=series).set(value)


@contextmanager
def controllable_target(metric_name: str = "test_value") -> Iterator[ControllableTarget]:
    registry = CollectorRegistry()
    gauge = Gauge(metric_name, "A value set by the test", ["series"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield ControllableTarget(port, gauge, threading.Lock())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""A scrape target whose values are set from Python: the stand-in for 'a metric that misbehaves'
in the tests and in `make demo`, where a Player replays an incident through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import start_http_server

PLAY_INTERVAL_SECONDS = 0.1


@dataclass
class ControllableTarget:
    """Serves `<metric_name>{series=...}` gauges on 127.0.0.1:port/metrics; set() changes them."""

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
def controllable_target(metric_name: str = "test_value",
                        port: int = 0) -> Iterator[ControllableTarget]:
    """A target on 127.0.0.1:port (0: a free port, which target.port then holds)."""
    registry = CollectorRegistry()
    gauge = Gauge(metric_name, "A value set by the test", ["series"], registry=registry)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield ControllableTarget(server.server_address[1], gauge, threading.Lock())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Player:
    """Sets one series of a target to value_at(unix time) every PLAY_INTERVAL_SECONDS on a
    thread of its own, from entering the context until leaving it."""

    def __init__(self, target: ControllableTarget, series: str,
                 value_at: Callable[[float], float]) -> None:
        self.target = target
        self.series = series
        self.value_at = value_at
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"play-{series}", daemon=True)

    def __enter__(self) -> Player:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self.target.set(self.series, self.value_at(time.time()))
            if self._stopping.wait(PLAY_INTERVAL_SECONDS):
                return

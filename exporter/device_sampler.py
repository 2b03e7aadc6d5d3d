"""One thread per GPU that reads it on an interval, as DCGM's field watches do.

Reading an H100 through NVML takes 5-8 ms, so reading 8 GPUs on the scrape path costs 40-64 ms
a scrape, and one hung GPU would stall the others' reads. Instead each GPU has its own thread
that runs every NVML call about that GPU: its watches (the gpu collector's reading, the
per-process reading), each every `interval`, and one-off calls from others (the Xid thread's
event registration) with a deadline. A scrape only copies the latest readings (microseconds a
GPU). A GPU that hangs stops only its own thread: its readings age, and readers treat it as down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.worker import Call, CallTimeout


@dataclass(frozen=True)
class Reading:
    """The outcome of one run of a watch."""

    value: Any
    error: BaseException | None
    finished_at: float  # time.monotonic()
    seconds: float


@dataclass
class _Watch:
    function: Callable[[], Any]
    interval_seconds: float
    due: float = 0.0
    latest: Reading | None = None


class DeviceSampler:
    """The thread of one GPU: watches run on their interval, one-off calls before them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Condition()
        self._watches: dict[str, _Watch] = {}
        self._calls: list[Call] = []
        self._busy_since: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def watch(self, key: str, function: Callable[[], Any], interval_seconds: float) -> None:
        """Run function now and then every interval (a key already watched is left as it is)."""
        with self._lock:
            if key not in self._watches:
                self._watches[key] = _Watch(function, interval_seconds)
                self._ensure_thread()
                self._lock.notify_all()

    def latest(self, key: str) -> Reading | None:
        with self._lock:
            watch = self._watches.get(key)
            return None if watch is None else watch.latest

    def wait_first(self, key: str, deadline: float) -> Reading | None:
        """The first reading of `key`, waiting until `deadline` (monotonic) at most."""
        with self._lock:
            while (watch := self._watches.get(key)) is not None and watch.latest is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            return None if watch is None else watch.latest

    def hung_seconds(self) -> float:
        """How long the call now running has been running (0 when idle)."""
        with self._lock:
            return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    def submit(self, function: Callable[[], Any], timeout_seconds: float) -> Call:
        """Queue a one-off call; CallTimeout at once if the thread is stuck past the deadline
        (nothing is queued behind a hung call)."""
        hung = self.hung_seconds()
        if hung > timeout_seconds:
            raise CallTimeout(f"{self.name}: a call has been running for {hung:.1f}s")
        call = Call(function)
        with self._lock:
            self._calls.append(call)
            self._ensure_thread()
            self._lock.notify_all()
        return call

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"sampler-{self.name}",
                                            daemon=True)
            self._thread.start()

    def _next(self) -> Call | _Watch | None:
        """The next thing to run, waiting until one is due; None once stopped."""
        with self._lock:
            while not self._stopping:
                if self._calls:
                    return self._calls.pop(0)
                now = time.monotonic()
                due = min(self._watches.values(), key=lambda watch: watch.due, default=None)
                if due is not None and due.due <= now:
                    return due
                self._lock.wait(None if due is None else due.due - now)
            return None

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            started = time.monotonic()
            with self._lock:
                self._busy_since = started
            if isinstance(job, Call):
                job.run()
                with self._lock:
                    self._busy_since = None
                continue
            watch = job
            value, error = None, None
            try:
                value = watch.function()
            except Exception as failure:  # kept for the reader, who decides what it means
                error = failure
            finished = time.monotonic()
            with self._lock:
                self._busy_since = None
                watch.latest = Reading(value, error, finished, finished - started)
                watch.due = started + watch.interval_seconds
                self._lock.notify_all()

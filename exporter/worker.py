"""Blocking calls with a deadline, shared by everyone who asks while they run.

NVML calls (and statvfs on a dead NFS mount) can hang forever, and two Prometheus servers (an HA
pair, or a hundred scrapers in a load test) ask for the same metrics at the same moment. So a
SingleFlight owns one long-lived thread for one function: a caller arriving while a call is in
flight waits for that same call and gets its result, instead of starting a second one or being
turned away, and every caller waits at most until the call's deadline. A call that is still
running past its deadline (hung) leaves its thread stuck, but no new thread or call is started
until it returns; meanwhile callers are answered at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class CallTimeout(RuntimeError):
    """The call did not finish within its deadline; it keeps running on its thread."""


class Call:
    """One run of a function: who started it when, and its result or exception once done."""

    __slots__ = ("done", "error", "finished", "function", "result", "started")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.started = time.monotonic()
        self.finished: float | None = None
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    @property
    def seconds(self) -> float:
        """How long it ran (so far, if it has not returned)."""
        return (self.finished if self.finished is not None else time.monotonic()) - self.started

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as error:  # handed to the callers, who decide what it means
            self.error = error
        finally:
            self.finished = time.monotonic()
            self.done.set()

    def wait(self, timeout_seconds: float) -> Any:
        """The result (or the exception re-raised) if the call ends by started + timeout."""
        remaining = self.started + timeout_seconds - time.monotonic()
        if not self.done.wait(max(0.0, remaining)):
            raise CallTimeout(f"no answer within {timeout_seconds:g}s (the call started "
                              f"{self.seconds:.1f}s ago is still running; no new call starts "
                              f"until it returns)")
        if self.error is not None:
            raise self.error
        return self.result


class SingleFlight:
    """Runs `function` on one daemon thread; concurrent callers share the call in flight."""

    def __init__(self, name: str, function: Callable[[], Any]) -> None:
        self.name = name
        self._function = function
        self._calls: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._current: Call | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> Call:
        """The call in flight, or a new one started now; wait on it with Call.wait."""
        with self._lock:
            if self._current is not None and not self._current.done.is_set():
                return self._current
            call = self._current = Call(self._function)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"worker-{self.name}",
                                                daemon=True)
                self._thread.start()
        self._calls.put(call)
        return call

    def call(self, timeout_seconds: float) -> Any:
        """begin() then wait: the function's result, its exception, or CallTimeout."""
        return self.begin().wait(timeout_seconds)

    def _loop(self) -> None:
        while True:
            self._calls.get().run()

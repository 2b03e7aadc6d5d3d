"""One long-lived thread that runs a collector's blocking calls with a deadline.

NVML calls (and statvfs on a dead NFS mount) can hang forever. A scrape must still answer, and a
hung call must not leave a new stuck thread behind on every scrape, so each collector owns exactly
one worker thread: while that thread is still stuck in a previous call, new work is refused at once
instead of being queued behind it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class WorkerBusy(RuntimeError):
    """The previous call has not returned yet (it is hung or slow): nothing was started."""


class WorkerTimeout(RuntimeError):
    """The call did not finish within its deadline; it keeps running on the worker thread."""


class _Job:
    __slots__ = ("done", "error", "function", "result")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class TimedWorker:
    """Runs one function at a time on a single daemon thread, waiting at most `timeout` for it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._current: _Job | None = None
        self._thread: threading.Thread | None = None

    def run(self, function: Callable[[], Any], timeout_seconds: float) -> Any:
        """Return function()'s result, re-raise its exception, or raise WorkerBusy/WorkerTimeout."""
        with self._lock:
            if self._current is not None and not self._current.done.is_set():
                raise WorkerBusy(f"{self._name}: previous call still running")
            job = _Job(function)
            self._current = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"worker-{self._name}",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)
        if not job.done.wait(timeout_seconds):
            raise WorkerTimeout(f"{self._name}: no answer within {timeout_seconds:g}s")
        if job.error is not None:
            raise job.error
        return job.result

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.function()
            except BaseException as error:  # handed to the caller, who decides what it means
                job.error = error
            finally:
                job.done.set()

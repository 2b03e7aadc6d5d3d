"""The safety limits an action must pass, checked and reserved in one step under one lock:

1. dedupe: a (rule, fingerprint, startsAt) that acted does not act again (Alertmanager re-sends
   every firing alert each repeat_interval, and after its own restarts);
2. cooldown: an action does not run again for the same placeholder values within its cooldown
   (restarting node A does not hold back node B);
3. rate limit: at most N actions in any window, across all rules;
4. concurrency: at most M actions running at once; a busy remediator skips (the alert's next
   re-send tries again) rather than queueing work for later.

Dry runs pass through 1-3 as real actions would, so a dry run shows what would really happen.
The state is rebuilt at start from the audit log's `started` lines.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from remediator.audit import record_time
from remediator.config import Limits


@dataclass(frozen=True)
class Reservation:
    dedupe_key: str
    cooldown_key: str
    moment: float
    holds_slot: bool


class SafetyLimits:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._acted: dict[str, float] = {}
        self._cooldown_until: dict[str, float] = {}
        self._recent: deque[float] = deque()
        self._running = 0

    def reserve(self, dedupe_key: str, cooldown_key: str, cooldown_seconds: float,
                runs: bool) -> Reservation | str:
        """A Reservation, or the reason the action may not run now. runs=False (a dry run)
        takes no concurrency slot."""
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            if dedupe_key in self._acted:
                return "duplicate"
            if self._cooldown_until.get(cooldown_key, 0.0) > now:
                return "cooldown"
            if len(self._recent) >= self.limits.rate_limit_actions:
                return "rate_limited"
            if runs and self._running >= self.limits.max_concurrent_actions:
                return "concurrency_limit"
            self._acted[dedupe_key] = now
            if cooldown_seconds > 0:
                self._cooldown_until[cooldown_key] = now + cooldown_seconds
            self._recent.append(now)
            if runs:
                self._running += 1
            return Reservation(dedupe_key, cooldown_key, now, runs)

    def release(self, reservation: Reservation) -> None:
        """The action finished: its concurrency slot is free (the other limits stay)."""
        if reservation.holds_slot:
            with self._lock:
                self._running -= 1

    def cancel(self, reservation: Reservation) -> None:
        """The action was never started (its audit line could not be written): undo it all."""
        with self._lock:
            self._acted.pop(reservation.dedupe_key, None)
            self._cooldown_until.pop(reservation.cooldown_key, None)
            if reservation.moment in self._recent:
                self._recent.remove(reservation.moment)
            if reservation.holds_slot:
                self._running -= 1

    def restore(self, started_records: Iterable[dict[str, Any]],
                cooldowns: dict[str, float]) -> int:
        """Rebuild dedupe, cooldown and rate state from `started` audit records (oldest first);
        cooldowns maps action name -> its cooldown now. Returns how many records were used."""
        used = 0
        with self._lock:
            for record in started_records:
                moment = record_time(record)
                if moment is None or "dedupe_key" not in record:
                    continue
                used += 1
                self._acted[record["dedupe_key"]] = moment
                cooldown = cooldowns.get(record.get("action", ""), 0.0)
                if cooldown > 0 and "cooldown_key" in record:
                    self._cooldown_until[record["cooldown_key"]] = moment + cooldown
                self._recent.append(moment)
            self._forget_old(self.clock())
        return used

    @property
    def running(self) -> int:
        return self._running

    def _forget_old(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - self.limits.rate_limit_window_seconds:
            self._recent.popleft()
        horizon = now - self.limits.dedupe_window_seconds
        for key in [key for key, moment in self._acted.items() if moment < horizon]:
            del self._acted[key]
        for key in [key for key, until in self._cooldown_until.items() if until <= now]:
            del self._cooldown_until[key]

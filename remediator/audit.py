"""The append-only JSON-lines audit log: one line per decision, fsynced before it counts.

The remediator only ever appends (O_APPEND, mode 0600); an action is started only after its
`started` line is on disk, so a crash cannot leave an action that the log does not show. Each
line is one JSON object with `time` (RFC 3339, UTC) and `event`:

- `rejected`: a request refused before any alert was read (`reason`, `http_status`, `client`);
- `skipped`: an alert that did not act (`reason`: resolved, no_matching_rule, duplicate,
  cooldown, rate_limited, concurrency_limit, missing_label, unsafe_label_value,
  unit_not_allowed);
- `dry_run`: what would have run (`invocation`);
- `started` / `finished`: an action and its result (`run_id`, `result`, `exit_code` or
  `http_status`, `output` excerpt, `duration_seconds`).

The report (remediator/report) and the remediator's own restart (dedupe and cooldown state) read
it back with read_records.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_time(record: dict[str, Any]) -> float | None:
    """A record's time as Unix seconds (None if it has no valid time)."""
    try:
        return datetime.fromisoformat(record["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class AuditLog:
    """Appends records; write() returns only once the line is fsynced (OSError otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": now_text(), **record}, ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        data = line.encode()
        with self._lock:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def read_records(path: str | Path, since: float | None = None,
                 until: float | None = None) -> Iterator[dict[str, Any]]:
    """Records with since <= time < until, in file order. A line that is not a JSON object (a
    line torn by a crash mid-write, say) is skipped rather than failing the reader."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            moment = record_time(record)
            if moment is None:
                continue
            if (since is None or moment >= since) and (until is None or moment < until):
                yield record

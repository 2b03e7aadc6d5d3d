"""Prometheus-style durations ("15s", "1h30m", "1d") as seconds, so configs read like PromQL."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
                 "y": 31536000.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number (seconds) or a string like "1h30m"; ValueError otherwise.

    Zero and negative durations are rejected here because no setting that takes a duration
    (a step, a window, an interval) means anything at zero.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 15s or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        position = 0
        seconds = 0.0
        for match in _PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            position = match.end()
        if position != len(text) or not text:
            raise ValueError(f"must be a duration like 15s, 10m, 1h30m or 1d, got {value!r}")
    else:
        raise ValueError(f"must be a duration like 15s or 1h, got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


"""Prometheus-style durations ("15s", "1h30m", "1d") as seconds, so configs read like PromQL."""

from __future__ import annotations

import math
import re

MAX_DURATION_SECONDS = 10 * 31536000.0
"""10y: longer than any window, step or interval means; 293y would overflow the thread waits."""
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
                 "y": 31536000.0}
_PART = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(ms|s|m|h|d|w|y)")


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number (seconds) or a string like "1h30m"; ValueError otherwise.

    Zero and negative durations are rejected here because no setting that takes a duration
    (a step, a window, an interval) means anything at zero; so are NaN, infinity and anything
    over MAX_DURATION_SECONDS, which no setting means either and which fail later in a thread.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 15s or 1h, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("must be a duration of at most 10y, got a huge number") from None
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
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise ValueError(f"must be a duration like 15s, 10m, 1h30m or 1d, got {shown!r}")
    else:
        raise ValueError(f"must be a duration like 15s or 1h, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"must be at most 10y, got {value!r}")
    return seconds



def parse_window(value: object) -> float:
    """Seconds in a window-like setting: a duration written as text ("30m", "1d"), or 0 (which
    turns the setting off); ValueError otherwise. A bare number is refused, because an old
    config's `window: 60` meant 60 points, and silently reading it as 60 seconds would change
    what it does."""
    if value in (0, "0"):
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"must be a duration such as 30m or 1d (a bare number is ambiguous: "
                         f"points or seconds?), got {value!r}")
    return parse_duration(value)


REFERENCE_STEP_SECONDS = 300.0
"""The coarsest step Prometheus users usually query at (5 minutes). Up to it a window given as
a duration means that duration at every step; at a coarser step (an hourly recording rule, a
daily series) it keeps the number of points it holds at this step instead, so a statistic over
it never runs on a handful of points."""


def span_seconds(duration_seconds: float, step_seconds: float) -> float:
    """The time a window given as `duration_seconds` covers on a series sampled every
    `step_seconds`: the duration itself up to the reference step, proportionally longer
    beyond it (see REFERENCE_STEP_SECONDS)."""
    return duration_seconds * max(1.0, step_seconds / REFERENCE_STEP_SECONDS)


def span_points(duration_seconds: float, step_seconds: float) -> int:
    """How many points of a series sampled every `step_seconds` a window given as
    `duration_seconds` holds (at least 1)."""
    return max(1, round(span_seconds(duration_seconds, step_seconds) / step_seconds))

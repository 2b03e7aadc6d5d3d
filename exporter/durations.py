"""Durations as the exporter's flags and config file write them: '2s', '500ms', '1m' or seconds.

The one duration parser of the exporter, shared by the command line and --config.file, so a
duration means the same in both and neither accepts an overflowing or absurd value.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,9})?)(ms|s|m)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
MAX_DURATION_SECONDS = 86400.0


def parse_duration(text: str) -> float:
    """'2s', '500ms', '1m' or plain seconds -> seconds (> 0, at most a day)."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive duration like 2s, 500ms or 1m")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than a day")
    return seconds

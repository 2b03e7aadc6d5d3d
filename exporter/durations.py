"""Durations as the exporter's flags and config file write them: '2s', '500ms', '1m' or seconds.

Shared by the command line and --config.file, so a duration means the same in both.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'2s', '500ms', '1m' or plain seconds -> seconds (> 0)."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive duration like 2s, 500ms or 1m")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]

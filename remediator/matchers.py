"""Alertmanager's label matcher syntax (`name="value"`, `!=`, `=~`, `!~`), so a remediation rule
reads like the route that sent the alert.

Regexes are anchored at both ends, as in Alertmanager and Prometheus; a label the alert does not
carry matches as the empty string, also as there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$', re.DOTALL)
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"$', re.DOTALL)
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


@dataclass(frozen=True)
class Matcher:
    name: str
    operator: Literal["=", "!=", "=~", "!~"]
    value: str
    pattern: re.Pattern | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.pattern is not None:
            found = self.pattern.fullmatch(actual) is not None
            return found if self.operator == "=~" else not found
        return (actual == self.value) == (self.operator == "=")


def parse_matcher(text: str) -> Matcher:
    """`alertname="GpuLost"`, `instance=~"gpu-.*"`, `severity!=info`; ValueError if malformed."""
    match = _MATCHER.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'{text!r} is not a matcher like name="value" or name=~"regex"')
    name, operator, raw_value = match.groups()
    value = _unquote(raw_value)
    pattern = None
    if operator in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as error:
            raise ValueError(f"{text!r}: invalid regular expression: {error}") from None
    return Matcher(name, operator, value, pattern)


def _unquote(raw: str) -> str:
    quoted = _QUOTED.match(raw)
    if quoted is None:
        if '"' in raw:
            raise ValueError(f"{raw!r}: unbalanced quotes")
        return raw
    return re.sub(r"\\(.)", lambda escape: _ESCAPES.get(escape.group(1), escape.group(0)),
                  quoted.group(1))


def all_match(matchers: tuple[Matcher, ...], labels: dict[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)

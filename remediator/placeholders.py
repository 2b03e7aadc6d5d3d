"""`{name}` placeholders: the only way alert labels reach an action.

An action declares which placeholders it uses and which label fills each; its templates may use
no other. Labels are data an alert's sender controls, so each action type decides how a value is
made inert where it lands (a whole argv item, a percent-encoded URL part, a JSON string).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

PLACEHOLDER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


def names_in(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def undeclared(text: str, declared: Mapping[str, str]) -> set[str]:
    return names_in(text) - set(declared)


def fill(text: str, values: Mapping[str, str],
         escape: Callable[[str], str] = lambda value: value) -> str:
    """text with each declared `{name}` replaced by escape(value); other braces stay as written."""
    return PLACEHOLDER.sub(
        lambda match: escape(values[match.group(1)]) if match.group(1) in values
        else match.group(0), text)


def values_from_labels(placeholders: Mapping[str, str],
                       labels: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(placeholder -> label value, the labels the alert lacks)."""
    values = {name: labels[label] for name, label in placeholders.items() if label in labels}
    missing = sorted(label for label in placeholders.values() if label not in labels)
    return values, missing

"""What every action type provides, so the dispatcher treats them alike.

`render` turns an alert's placeholder values into the invocation (the exact argv, request or
message) before anything runs: that record goes to the audit log, is what a dry run reports,
and is what `execute` then carries out. Secrets (URLs and headers read from files) are read by
`execute` only, so they never reach the audit log.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from exporter.strict_input import ConfigChecker
from remediator import placeholders

ACTION_TYPES = ("exec", "systemd_restart", "http", "notify")
OUTPUT_EXCERPT_CHARS = 1000


class ActionRefused(Exception):
    """The alert's values cannot be used safely by this action (the reason is a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Outcome:
    """How an action ended: success, failure (it ran and said no), timeout or error (it could not
    be started or completed), plus exit code / HTTP status and an output excerpt."""

    result: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadContext:
    """What parsing an action section needs besides the section itself."""

    checker: ConfigChecker
    prefix: str
    base_dir: Path
    placeholders: Mapping[str, str]
    dry_run: bool
    warnings: list[str]


class Action(ABC):
    keys: ClassVar[tuple[str, ...]]
    """The type's own keys in an action section (the common ones are handled by config.py)."""

    @classmethod
    @abstractmethod
    def from_config(cls, section: dict, context: LoadContext) -> Action:
        """Validate the type's keys; ConfigError (through context.checker) if wrong."""

    @abstractmethod
    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The invocation for these placeholder values; ActionRefused if they are unsafe here."""

    @abstractmethod
    def execute(self, invocation: dict[str, Any], timeout_seconds: float) -> Outcome:
        """Carry out a rendered invocation within timeout_seconds."""


def action_class(type_name: str) -> type[Action]:
    """The class of an action type, imported by name (remediator/actions/<type>.py)."""
    if type_name not in ACTION_TYPES:
        raise ValueError(f"unknown action type {type_name!r} (known: {', '.join(ACTION_TYPES)})")
    module = importlib.import_module(f"remediator.actions.{type_name}")
    return module.ACTION_CLASS


def excerpt(text: str) -> str:
    """The end of an action's output (where errors are), short enough for one audit line."""
    text = text.strip()
    return text if len(text) <= OUTPUT_EXCERPT_CHARS else "…" + text[-OUTPUT_EXCERPT_CHARS:]


def string_mapping(context: LoadContext, key: str, value: Any) -> dict[str, str]:
    """An optional mapping of strings to strings (environment, headers, header files)."""
    value = value or {}
    if not isinstance(value, dict) or not all(
            isinstance(name, str) and name and isinstance(item, str)
            for name, item in value.items()):
        raise context.checker.fail(key, "must be a mapping of names to strings")
    return dict(value)


def require_declared(context: LoadContext, key: str, template: str) -> None:
    """ConfigError if template uses a placeholder its action does not declare."""
    missing = sorted(placeholders.undeclared(template, context.placeholders))
    if missing:
        raise context.checker.fail(key, f"placeholder {{{missing[0]}}} is not declared in "
                                        f"{context.prefix}.placeholders")

"""Strict YAML configuration parsing, shared by the sidecar's and the remediator's configs.

Every error is a ConfigError reading "<file>: <key.path>: <reason>", so a user can go straight
to the line at fault, and unknown keys are errors (a typo must never silently fall back to a
default). The accessors below are the only way either config reads a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; str() is "<file>: <key.path>: <reason>"."""

    def __init__(self, source: str, key_path: str, reason: str) -> None:
        super().__init__(f"{source}: {key_path}: {reason}")
        self.source = source
        self.key_path = key_path
        self.reason = reason


def read_yaml_file(path: str | Path) -> Any:
    """The parsed YAML document at path; ConfigError (key "(file)") if unreadable or invalid."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(source, "(file)", f"cannot read: {error.strerror or error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, "(file)", f"not valid YAML: {error}") from None


class ConfigChecker:
    """Typed accessors that raise ConfigError with the right key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key_path: str, reason: str) -> ConfigError:
        return ConfigError(self.source, key_path, reason)

    def mapping(self, value: Any, key_path: str) -> dict:
        if not isinstance(value, dict):
            kind = "empty" if value is None else type(value).__name__
            raise self.fail(key_path, f"must be a mapping, got {kind}")
        return value

    def allowed_keys(self, section: dict, prefix: str, allowed: tuple[str, ...]) -> None:
        for key in section:
            if key not in allowed:
                raise self.fail(join_key(prefix, str(key)),
                                f"unknown key (allowed: {', '.join(allowed)})")

    def required(self, section: dict, prefix: str, key: str) -> Any:
        if section.get(key) is None:
            raise self.fail(join_key(prefix, key), "is required")
        return section[key]

    def named_sections(self, root: dict, key: str) -> dict[str, dict]:
        sections = self.mapping(self.required(root, "", key), key)
        for alias, section in sections.items():
            if not isinstance(alias, str) or not alias:
                raise self.fail(f"{key}.{alias}", "alias must be a non-empty string")
            self.mapping(section, f"{key}.{alias}")
        return sections

    def typed(self, section: dict, prefix: str, key: str, convert: Callable[[Any], Any],
              default: Any = None, required: bool = False) -> Any:
        if section.get(key) is None:
            if required:
                raise self.fail(join_key(prefix, key), "is required")
            return default
        try:
            return convert(section[key])
        except (ValueError, TypeError) as error:
            raise self.fail(join_key(prefix, key), str(error)) from None

    def alias_list(self, section: dict, prefix: str, key: str, known: Mapping[str, Any],
                   kind: str) -> list[str]:
        if section.get(key) is None:
            return list(known)
        names = section[key]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise self.fail(join_key(prefix, key),
                            f"must be a list of {kind} aliases, got {names!r}")
        for name in names:
            if name not in known:
                defined = ", ".join(known) or "none"
                raise self.fail(join_key(prefix, key),
                                f"{kind} {name!r} is not defined (defined: {defined})")
        return names


def join_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"must be a number >= 0, got {value!r}")
    return float(value)


def integer_at_least(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value!r}")
        return value
    return convert


def existing_file(value: Any) -> str:
    path = non_empty_string(value)
    if not Path(path).is_file():
        raise ValueError(f"file {path!r} does not exist")
    return path

"""The remediator's YAML configuration, validated completely before anything listens.

Errors read "<file>: <key.path>: <reason>" (exporter.strict_input's ConfigError, as the
sidecar's); the file and the token file are read as strict_input reads every config: UTF-8
only, YAML nesting and alias expansion bounded, numbers finite. Relative paths are
relative to the config file's folder. Nothing acts without a bearer token: `server.
bearer_token_file` is required and must hold a token.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomaly_sidecar.durations import parse_duration
from exporter.server import DEFAULT_MAX_CONNECTIONS, parse_listen_address
from exporter.strict_input import (
    ConfigChecker,
    ConfigError,
    InputError,
    boolean,
    integer_at_least,
    load_config_file,
    non_empty_string,
    path_string,
    read_text,
)
from remediator import placeholders
from remediator.actions.base import Action, LoadContext, action_class
from remediator.matchers import LABEL_NAME, Matcher, parse_matcher

DEFAULT_LISTEN_ADDRESS = "127.0.0.1:10102"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
ACTION_COMMON_KEYS = ("type", "placeholders", "timeout", "cooldown", "dry_run")

__all__ = ["ConfigError", "RemediatorConfig", "load_config"]


@dataclass(frozen=True)
class ServerConfig:
    listen_address: str
    host: str
    port: int
    bearer_token_file: Path
    web_config_file: Path | None
    max_body_bytes: int
    max_connections: int
    """Connections served at once, one thread each (the exporter's --web.max-connections)."""


@dataclass(frozen=True)
class Limits:
    max_concurrent_actions: int = 4
    rate_limit_actions: int = 20
    rate_limit_window_seconds: float = 3600.0
    dedupe_window_seconds: float = 7 * 86400.0
    """How long a (rule, fingerprint, startsAt) that acted is remembered, so a re-send of that
    firing does not act again."""


@dataclass(frozen=True)
class ActionConfig:
    name: str
    type: str
    action: Action
    placeholders: dict[str, str]
    """placeholder -> the alert label that fills it."""
    timeout_seconds: float
    cooldown_seconds: float
    dry_run: bool


@dataclass(frozen=True)
class Rule:
    name: str
    matchers: tuple[Matcher, ...]
    action: str


@dataclass(frozen=True)
class RemediatorConfig:
    source: str
    server: ServerConfig
    audit_log: Path
    dry_run: bool
    limits: Limits
    actions: dict[str, ActionConfig]
    rules: tuple[Rule, ...]
    warnings: list[str] = field(default_factory=list)


def load_config(path: str | Path, force_dry_run: bool = False) -> RemediatorConfig:
    """Read and validate the file. force_dry_run (the --dry-run flag) makes every action a dry
    run, so a config may be staged before the programs it names are installed."""
    return parse_config(load_config_file(path), str(path), Path(path).resolve().parent,
                        force_dry_run)


def parse_config(raw: Any, source: str, base_dir: Path,
                 force_dry_run: bool = False) -> RemediatorConfig:
    checker = ConfigChecker(source)
    root = checker.mapping(raw, "(root)")
    checker.allowed_keys(root, "", ("server", "audit_log", "dry_run", "limits", "actions",
                                    "rules"))
    dry_run = force_dry_run or checker.typed(root, "", "dry_run", boolean, False)
    warnings: list[str] = []
    server = _server(checker, checker.required(root, "", "server"), base_dir, warnings)
    audit_log = base_dir / checker.typed(root, "", "audit_log", path_string, required=True)
    if not audit_log.parent.is_dir():
        raise checker.fail("audit_log", f"folder {audit_log.parent} does not exist")
    actions = {name: _action(checker, name, section, base_dir, dry_run, warnings)
               for name, section in checker.named_sections(root, "actions").items()}
    rules = _rules(checker, root.get("rules"), actions)
    return RemediatorConfig(source, server, audit_log, dry_run,
                            _limits(checker, root.get("limits")), actions, rules, warnings)


def _server(checker: ConfigChecker, raw: Any, base_dir: Path,
            warnings: list[str]) -> ServerConfig:
    section = checker.mapping(raw, "server")
    checker.allowed_keys(section, "server", ("listen_address", "bearer_token_file",
                                             "web_config_file", "max_body_bytes",
                                             "max_connections"))
    listen_address = checker.typed(section, "server", "listen_address", non_empty_string,
                                   DEFAULT_LISTEN_ADDRESS)
    try:
        host, port = parse_listen_address(listen_address)
    except ValueError as error:
        raise checker.fail("server.listen_address", str(error)) from None
    token_file = base_dir / checker.typed(section, "server", "bearer_token_file", path_string,
                                          required=True)
    try:
        token = read_text(token_file).strip()
        mode = token_file.stat().st_mode
    except InputError as error:
        raise checker.fail("server.bearer_token_file", f"{token_file}: {error.reason}") from None
    except OSError as error:
        raise checker.fail("server.bearer_token_file",
                           f"cannot read {token_file}: {error.strerror}") from None
    if len(token) < 16:
        raise checker.fail("server.bearer_token_file",
                           f"{token_file} must hold a token of at least 16 characters")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{checker.source}: server.bearer_token_file: {token_file} is readable "
                        f"by other users (chmod 600 it)")
    web_config = checker.typed(section, "server", "web_config_file", path_string)
    web_config_file = None
    if web_config is not None:
        web_config_file = base_dir / web_config
        if not web_config_file.is_file():
            raise checker.fail("server.web_config_file", f"{web_config_file} does not exist")
    return ServerConfig(listen_address, host, port, token_file, web_config_file,
                        checker.typed(section, "server", "max_body_bytes", integer_at_least(1024),
                                      DEFAULT_MAX_BODY_BYTES),
                        checker.typed(section, "server", "max_connections",
                                      integer_at_least(1), DEFAULT_MAX_CONNECTIONS))


def _limits(checker: ConfigChecker, raw: Any) -> Limits:
    if raw is None:
        return Limits()
    section = checker.mapping(raw, "limits")
    checker.allowed_keys(section, "limits", ("max_concurrent_actions", "rate_limit",
                                             "dedupe_window"))
    defaults = Limits()
    actions, window = defaults.rate_limit_actions, defaults.rate_limit_window_seconds
    if section.get("rate_limit") is not None:
        rate = checker.mapping(section["rate_limit"], "limits.rate_limit")
        checker.allowed_keys(rate, "limits.rate_limit", ("max_actions", "window"))
        actions = checker.typed(rate, "limits.rate_limit", "max_actions", integer_at_least(1),
                                required=True)
        window = checker.typed(rate, "limits.rate_limit", "window", parse_duration,
                               required=True)
    return Limits(
        max_concurrent_actions=checker.typed(section, "limits", "max_concurrent_actions",
                                             integer_at_least(1),
                                             defaults.max_concurrent_actions),
        rate_limit_actions=actions,
        rate_limit_window_seconds=window,
        dedupe_window_seconds=checker.typed(section, "limits", "dedupe_window", parse_duration,
                                            defaults.dedupe_window_seconds),
    )


def _action(checker: ConfigChecker, name: str, section: dict, base_dir: Path,
            global_dry_run: bool, warnings: list[str]) -> ActionConfig:
    prefix = f"actions.{name}"
    type_name = checker.typed(section, prefix, "type", non_empty_string, required=True)
    try:
        cls = action_class(type_name)
    except ValueError as error:
        raise checker.fail(f"{prefix}.type", str(error)) from None
    checker.allowed_keys(section, prefix, ACTION_COMMON_KEYS + cls.keys)
    declared = _placeholders(checker, prefix, section.get("placeholders"))
    dry_run = global_dry_run or checker.typed(section, prefix, "dry_run", boolean, False)
    context = LoadContext(checker, prefix, base_dir, declared, dry_run, warnings)
    action = cls.from_config(section, context)
    unused = sorted(set(declared) - _names_used(section[key] for key in cls.keys if key in section))
    if unused:
        raise checker.fail(f"{prefix}.placeholders.{unused[0]}", "declared but not used")
    return ActionConfig(
        name=name,
        type=type_name,
        action=action,
        placeholders=declared,
        timeout_seconds=checker.typed(section, prefix, "timeout", parse_duration, 30.0),
        cooldown_seconds=checker.typed(section, prefix, "cooldown", _duration_or_zero, 900.0),
        dry_run=dry_run,
    )


def _names_used(values: Any) -> set[str]:
    """Placeholder names in every string inside values (lists and mappings walked)."""
    names: set[str] = set()
    for value in values:
        if isinstance(value, str):
            names |= placeholders.names_in(value)
        elif isinstance(value, dict):
            names |= _names_used([*value.keys(), *value.values()])
        elif isinstance(value, list):
            names |= _names_used(value)
    return names


def _duration_or_zero(value: Any) -> float:
    """A cooldown may be 0 (off); every other duration must be positive."""
    if value == 0 or value == "0s":
        return 0.0
    return parse_duration(value)


def _placeholders(checker: ConfigChecker, prefix: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    section = checker.mapping(raw, f"{prefix}.placeholders")
    for name, label in section.items():
        if not isinstance(name, str) or not placeholders.PLACEHOLDER.fullmatch(f"{{{name}}}"):
            raise checker.fail(f"{prefix}.placeholders.{name}",
                               "placeholder names are identifiers (letters, digits, _)")
        if not isinstance(label, str) or not LABEL_NAME.match(label):
            raise checker.fail(f"{prefix}.placeholders.{name}",
                               f"must name an alert label, got {label!r}")
    return dict(section)


def _rules(checker: ConfigChecker, raw: Any, actions: dict[str, ActionConfig]) -> tuple[Rule, ...]:
    if not isinstance(raw, list) or not raw:
        raise checker.fail("rules", "must be a non-empty list of rules")
    rules: list[Rule] = []
    for index, section in enumerate(raw):
        prefix = f"rules[{index}]"
        checker.mapping(section, prefix)
        checker.allowed_keys(section, prefix, ("name", "matchers", "action"))
        name = checker.typed(section, prefix, "name", non_empty_string, required=True)
        if any(rule.name == name for rule in rules):
            raise checker.fail(f"{prefix}.name", f"{name!r} is used by an earlier rule")
        texts = section.get("matchers")
        if not isinstance(texts, list) or not texts:
            raise checker.fail(f"{prefix}.matchers", "must be a non-empty list such as "
                                                     "['alertname=\"GpuLost\"']")
        matchers = []
        for position, text in enumerate(texts):
            try:
                matchers.append(parse_matcher(text))
            except ValueError as error:
                raise checker.fail(f"{prefix}.matchers[{position}]", str(error)) from None
        action = checker.typed(section, prefix, "action", non_empty_string, required=True)
        if action not in actions:
            raise checker.fail(f"{prefix}.action", f"action {action!r} is not defined "
                                                   f"(defined: {', '.join(actions) or 'none'})")
        rules.append(Rule(name, tuple(matchers), action))
    return tuple(rules)


def read_token(path: Path) -> str:
    """The bearer token as it is in the file now (read per request: rotation needs no restart).
    An unreadable or too short file yields "" and nothing is accepted."""
    try:
        token = read_text(path).strip()
    except InputError:
        return ""
    return token if len(token) >= 16 else ""


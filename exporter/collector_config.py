"""--config.file: the endpoints the `probe` collector calls, the groups `process` watches.

One YAML file holds both, so a model service's endpoint and its processes are described side by
side. Every mistake is reported at start-up as `<file>: <key.path>: <reason>` and the exporter
exits with code 2 (the --web.config.file contract), instead of a probe that silently never runs.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.durations import parse_duration
from exporter.strict_input import InputError, load_yaml_file

TOP_LEVEL_KEYS = {"probe", "process"}
PROBE_KEYS = {"targets"}
TARGET_KEYS = {"name", "url", "method", "headers", "header_files", "body", "expected_status",
               "json_field", "timeout", "interval", "latency_threshold", "tls_ca_file",
               "tls_insecure_skip_verify"}
JSON_FIELD_KEYS = {"path", "equals"}
PROCESS_KEYS = {"scan_interval", "groups"}
GROUP_KEYS = {"name", "match"}
MATCH_KEYS = {"names", "cmdline", "cgroup"}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_INTERVAL_SECONDS = 15.0
DEFAULT_SCAN_INTERVAL_SECONDS = 10.0
# Names become the `target` and `group` label values and appear in dashboard links.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


class CollectorConfigError(ValueError):
    """The config file is unusable; the message names the file, the key and why."""


@dataclass(frozen=True)
class JsonFieldCheck:
    """A field the JSON answer must have (keys and list indexes), and optionally its value."""

    path: tuple[str | int, ...]
    equals: Any = None
    compare_value: bool = False


@dataclass(frozen=True)
class ProbeTarget:
    """One model endpoint: how to call it and what counts as a good answer."""

    name: str
    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    header_files: dict[str, Path] = field(default_factory=dict)
    body: bytes | None = None
    expected_status: frozenset[int] = frozenset(range(200, 300))
    json_field: JsonFieldCheck | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    latency_threshold_seconds: float | None = None
    tls_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class ProcessGroup:
    """Processes counted together; a process must match every criterion given."""

    name: str
    names: frozenset[str] = frozenset()
    cmdline: re.Pattern | None = None
    cgroup: str | None = None


@dataclass
class ProcessConfig:
    groups: list[ProcessGroup]
    scan_interval_seconds: float = DEFAULT_SCAN_INTERVAL_SECONDS


@dataclass
class CollectorConfig:
    """The parsed file; a section is None when the file does not have it."""

    path: Path
    probe_targets: list[ProbeTarget] | None = None
    process: ProcessConfig | None = None

    def has_section(self, section: str) -> bool:
        return {"probe": self.probe_targets, "process": self.process}.get(section) is not None


def load_collector_config(path: str | Path) -> CollectorConfig:
    """Read and validate the file; raise CollectorConfigError naming the key at fault."""
    path = Path(path)
    return parse_collector_config(path, read_yaml(path))


def read_yaml(path: Path) -> Any:
    """The file's YAML document, held to strict_input's rules (UTF-8 text, bounded nesting and
    alias expansion) as the web-config is; PyYAML is imported only with --config.file."""
    try:
        return load_yaml_file(path)
    except InputError as error:
        raise CollectorConfigError(str(error)) from None


def parse_collector_config(path: Path, document: Any) -> CollectorConfig:
    """Validate an already-loaded document (file path for messages and relative paths)."""
    reader = _Reader(path)
    document = {} if document is None else document
    reader.mapping("top level", document, TOP_LEVEL_KEYS)
    config = CollectorConfig(path)
    if document.get("probe") is not None:
        config.probe_targets = _probe_targets(reader, document["probe"])
    if document.get("process") is not None:
        config.process = _process(reader, document["process"])
    return config


class _Reader:
    """Typed access to one document, every failure phrased as `<file>: <key>: <reason>`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, reason: str) -> CollectorConfigError:
        return CollectorConfigError(f"{self.path}: {where}: {reason}")

    def mapping(self, where: str, value: Any, allowed: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(where, f"unknown key {key!r} "
                                       f"(allowed: {', '.join(sorted(allowed))})")
        return value

    def items(self, where: str, value: Any) -> list:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list")
        return value

    def string(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "expected a non-empty string")
        return value

    def duration(self, where: str, value: Any, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(where, f"expected a duration like 2s, 500ms or 1m, got {value!r}")
        try:
            return parse_duration(str(value))
        except ValueError as error:
            raise self.fail(where, str(error)) from error

    def file(self, where: str, value: Any) -> Path:
        resolved = (self.path.parent / self.string(where, value)).resolve()
        if not resolved.is_file():
            raise self.fail(where, f"{resolved} does not exist")
        try:
            resolved.read_bytes()
        except OSError as error:
            raise self.fail(where, f"cannot read {resolved}: {error.strerror}") from error
        return resolved

    def name(self, where: str, value: Any, taken: dict[str, str]) -> str:
        name = self.string(where, value)
        if not _NAME.match(name):
            raise self.fail(where, f"{name!r} must be 1-64 letters, digits or _.:- "
                                   f"(it becomes a label value)")
        if name in taken:
            raise self.fail(where, f"{name!r} is already used by {taken[name]}")
        taken[name] = where.rsplit(".", 1)[0]
        return name


def _named_entries(reader: _Reader, where: str, value: Any, allowed: set[str],
                   parse: Callable[[_Reader, str, dict, str], Any]) -> list:
    """Parse a list of mappings that each carry a unique `name`."""
    taken: dict[str, str] = {}
    parsed = []
    for index, entry in enumerate(reader.items(where, value)):
        entry_where = f"{where}[{index}]"
        reader.mapping(entry_where, entry, allowed)
        name = reader.name(f"{entry_where}.name", entry.get("name"), taken)
        parsed.append(parse(reader, entry_where, entry, name))
    return parsed


def _probe_targets(reader: _Reader, section: Any) -> list[ProbeTarget]:
    reader.mapping("probe", section, PROBE_KEYS)
    return _named_entries(reader, "probe.targets", section.get("targets"), TARGET_KEYS,
                          _probe_target)


def _probe_target(reader: _Reader, where: str, entry: dict, name: str) -> ProbeTarget:
    url = _url(reader, f"{where}.url", entry.get("url"))
    method = reader.string(f"{where}.method", entry.get("method", "GET")).upper()
    if method not in METHODS:
        raise reader.fail(f"{where}.method", f"{method!r} is not one of "
                                             f"{', '.join(sorted(METHODS))}")
    body = entry.get("body")
    if body is not None and not isinstance(body, str):
        raise reader.fail(f"{where}.body", "expected a string (JSON bodies: quote them)")
    interval = reader.duration(f"{where}.interval", entry.get("interval"),
                               DEFAULT_INTERVAL_SECONDS)
    timeout = reader.duration(f"{where}.timeout", entry.get("timeout"),
                              min(DEFAULT_TIMEOUT_SECONDS, interval))
    if timeout > interval:
        raise reader.fail(f"{where}.timeout", f"{timeout:g}s is longer than the interval "
                                              f"({interval:g}s): probes would overlap")
    threshold = entry.get("latency_threshold")
    return ProbeTarget(
        name=name, url=url, method=method,
        headers=_headers(reader, f"{where}.headers", entry.get("headers")),
        header_files={header: reader.file(f"{where}.header_files.{header}", path)
                      for header, path in _header_names(
                          reader, f"{where}.header_files", entry.get("header_files")).items()},
        body=None if body is None else body.encode(),
        expected_status=_statuses(reader, f"{where}.expected_status",
                                  entry.get("expected_status")),
        json_field=_json_field(reader, f"{where}.json_field", entry.get("json_field")),
        timeout_seconds=timeout, interval_seconds=interval,
        latency_threshold_seconds=None if threshold is None else reader.duration(
            f"{where}.latency_threshold", threshold, 0.0),
        tls_context=_tls_context(reader, where, entry, url))


def _url(reader: _Reader, where: str, value: Any) -> str:
    url = reader.string(where, value)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError as error:
        raise reader.fail(where, f"{url!r} is not a valid URL: {error}") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.fail(where, f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise reader.fail(where, "credentials in the URL would be exposed in logs; put them in "
                                 "a header_files entry (e.g. Authorization)")
    if any(character.isspace() for character in url):
        raise reader.fail(where, f"{url!r} contains whitespace")
    return url


def _header_names(reader: _Reader, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reader.fail(where, f"expected a mapping of header name to value, "
                                 f"got {type(value).__name__}")
    for header in value:
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise reader.fail(where, f"{header!r} is not a valid HTTP header name")
    return value


def _headers(reader: _Reader, where: str, value: Any) -> dict[str, str]:
    headers = _header_names(reader, where, value)
    for header, text in headers.items():
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise reader.fail(f"{where}.{header}", "expected a one-line string")
        try:
            text.encode("latin-1")
        except UnicodeEncodeError as error:
            raise reader.fail(f"{where}.{header}", "HTTP header values must be Latin-1 "
                                                   "text") from error
    return dict(headers)


def _statuses(reader: _Reader, where: str, value: Any) -> frozenset[int]:
    if value is None:
        return ProbeTarget.expected_status
    codes = value if isinstance(value, list) else [value]
    if not codes or not all(isinstance(code, int) and not isinstance(code, bool)
                            and 100 <= code <= 599 for code in codes):
        raise reader.fail(where, f"expected an HTTP status code or a list of them (100-599), "
                                 f"got {value!r}")
    return frozenset(codes)


def _json_field(reader: _Reader, where: str, value: Any) -> JsonFieldCheck | None:
    if value is None:
        return None
    reader.mapping(where, value, JSON_FIELD_KEYS)
    text = reader.string(f"{where}.path", value.get("path"))
    parts = text.split(".")
    if not all(parts):
        raise reader.fail(f"{where}.path", f"{text!r} has an empty component "
                                           f"(write keys and list indexes as a.b.0.c)")
    equals = value.get("equals")
    if isinstance(equals, dict | list):
        raise reader.fail(f"{where}.equals", "expected a string, number, boolean or null")
    return JsonFieldCheck(tuple(int(part) if part.isdigit() else part for part in parts),
                          equals, "equals" in value)


def _tls_context(reader: _Reader, where: str, entry: dict, url: str) -> ssl.SSLContext | None:
    ca_file = entry.get("tls_ca_file")
    insecure = entry.get("tls_insecure_skip_verify", False)
    if not isinstance(insecure, bool):
        raise reader.fail(f"{where}.tls_insecure_skip_verify", "expected true or false")
    if not url.startswith("https://"):
        for key in ("tls_ca_file", "tls_insecure_skip_verify"):
            if key in entry:
                raise reader.fail(f"{where}.{key}", "only applies to an https:// url")
        return None
    context = ssl.create_default_context()
    if ca_file is not None:
        ca_path = reader.file(f"{where}.tls_ca_file", ca_file)
        try:
            context.load_verify_locations(str(ca_path))
        except ssl.SSLError as error:
            raise reader.fail(f"{where}.tls_ca_file", f"not a CA certificate: {error}") from error
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _process(reader: _Reader, section: Any) -> ProcessConfig:
    reader.mapping("process", section, PROCESS_KEYS)
    return ProcessConfig(
        groups=_named_entries(reader, "process.groups", section.get("groups"), GROUP_KEYS,
                              _process_group),
        scan_interval_seconds=reader.duration("process.scan_interval",
                                              section.get("scan_interval"),
                                              DEFAULT_SCAN_INTERVAL_SECONDS))


def _process_group(reader: _Reader, where: str, entry: dict, name: str) -> ProcessGroup:
    match = reader.mapping(f"{where}.match", entry.get("match"), MATCH_KEYS)
    if not match:
        raise reader.fail(f"{where}.match", "give at least one of names, cmdline, cgroup")
    names = match.get("names")
    if names is not None:
        names = names if isinstance(names, list) else [names]
        if not names or not all(isinstance(item, str) and item for item in names):
            raise reader.fail(f"{where}.match.names", "expected a process name or a list of them")
    cmdline = match.get("cmdline")
    if cmdline is not None:
        try:
            cmdline = re.compile(reader.string(f"{where}.match.cmdline", cmdline))
        except re.error as error:
            raise reader.fail(f"{where}.match.cmdline",
                              f"{cmdline!r} is not a valid regular expression: {error}") from error
    cgroup = match.get("cgroup")
    if cgroup is not None:
        cgroup = reader.string(f"{where}.match.cgroup", cgroup)
        if not cgroup.startswith("/"):
            raise reader.fail(f"{where}.match.cgroup", f"{cgroup!r} must be an absolute cgroup "
                                                       f"path like /system.slice/x.service")
        cgroup = cgroup.rstrip("/") or "/"
    return ProcessGroup(name, frozenset(names or ()), cmdline, cgroup)

"""The sidecar's YAML configuration, validated completely before anything runs.

Every error is a ConfigError reading "<file>: <key.path>: <reason>", so a user can go straight
to the line at fault. Unknown keys are errors (a typo must never silently fall back to a
default). Model parameters are validated by the model type's own Params dataclass
(base.build_params), so a new model type needs no edit here; numbers in them must be finite and
integers fit in 32 bits whatever the model. The file itself is read by exporter.strict_input:
UTF-8 only, nesting and YAML alias expansion bounded.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomaly_sidecar.detector import ScoringConfig
from anomaly_sidecar.durations import parse_duration, parse_window
from anomaly_sidecar.models.base import (
    ModelParamError,
    ModelParams,
    build_params,
    model_class,
)
from exporter.server import parse_listen_address
from exporter.strict_input import (
    MAX_INTEGER,
    InputError,
    finite_number,
    load_config_file,
    read_text,
    shorten,
)
from exporter.strict_input import ConfigChecker as _Checker
from exporter.strict_input import ConfigError as ConfigError  # re-exported
from exporter.strict_input import boolean as _bool
from exporter.strict_input import existing_file as _existing_file
from exporter.strict_input import integer_at_least as _count
from exporter.strict_input import non_empty_string as _string
from exporter.strict_input import non_negative_number as _non_negative_number

DIRECTIONS = ("both", "above", "below")
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:10101"
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_MODEL_COMMON_KEYS = ("type", "queries", "detection_direction", "min_dev_from_expected",
                      "calibration", "false_alarms_per_day", "memory", "warm_up", "quiet",
                      "rearm", "rearm_step")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str


@dataclass(frozen=True)
class HttpClientConfig:
    """How to reach a backend over HTTP(S): the reader's and the remote writer's shared keys."""

    url: str
    timeout_seconds: float = 30.0
    bearer_token_file: str | None = None
    basic_auth: BasicAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tls_ca_file: str | None = None
    tls_insecure_skip_verify: bool = False


@dataclass(frozen=True)
class ReaderConfig(HttpClientConfig):
    """How to reach the Prometheus-compatible query API."""

    default_step_seconds: float = 60.0
    max_points_per_request: int = 10000
    max_retries: int = 3


@dataclass(frozen=True)
class QueryConfig:
    """One PromQL expression (it may return many series)."""

    expr: str
    step_seconds: float
    data_range_seconds: float | None = None
    """Optional cap on the history read when fitting this query (default: the fit_window)."""


@dataclass(frozen=True)
class ModelConfig:
    alias: str
    type: str
    params: ModelParams
    queries: list[str]
    scoring: ScoringConfig = field(default_factory=ScoringConfig)


@dataclass(frozen=True)
class SchedulerConfig:
    alias: str
    fit_every_seconds: float
    fit_window_seconds: float
    infer_every_seconds: float
    models: list[str]
    alarm_catch_up_seconds: float = 600.0
    """How far back a point-alarm model's first inference after a gap (a read outage) scores
    the columns it has not scored yet; 10m, or infer_every if longer, unless configured. An
    older alarm is not published: the AnomalyAlarm rule reads the score over 10m and says the
    alarm came "within the last 10m", so a page about an alarm from an hour ago would be wrong
    about when it happened."""


@dataclass(frozen=True)
class RemoteWriteConfig(HttpClientConfig):
    """Prometheus remote write 1.0 (protobuf + snappy) of every scored point."""

    batch_size: int = 10_000
    """Samples per request at most."""
    queue_size: int = 1_000_000
    """Samples held while the backend is slow or down; beyond it new samples are dropped
    (and counted)."""
    min_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_sample_age_seconds: float = 600.0
    """Points older than this at their inference are not sent: a new series' history and
    the backfill after a long read outage would otherwise flood the backend (and Prometheus
    refuses samples older than about an hour)."""


@dataclass(frozen=True)
class WriterConfig:
    """Where outputs go: the pull endpoint (/metrics) and/or remote write."""

    pull: bool = True
    remote_write: RemoteWriteConfig | None = None


@dataclass(frozen=True)
class ShardConfig:
    """This replica's share of the series: those whose label hash falls on `index` of
    `count` (shard.py). The default, 0 of 1, is every series."""

    index: int = 0
    count: int = 1


@dataclass(frozen=True)
class ServerConfig:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    metric_name_template: str = "{name}"
    """Output names are template.format(name=...), e.g. "anomaly_sidecar_{name}"."""
    web_config_file: str | None = None
    """TLS and basic auth of /metrics, in the exporter's --web.config.file format."""

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)


@dataclass(frozen=True)
class SidecarConfig:
    source: str
    reader: ReaderConfig
    queries: dict[str, QueryConfig]
    models: dict[str, ModelConfig]
    schedulers: dict[str, SchedulerConfig]
    server: ServerConfig
    writer: WriterConfig = field(default_factory=WriterConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)


def load_config(path: str | Path) -> SidecarConfig:
    """Read and validate the YAML file at path; ConfigError on any problem."""
    return parse_config(load_config_file(path), str(path))


def parse_config(raw: Any, source: str) -> SidecarConfig:
    """Validate an already-parsed YAML document (source names it in errors)."""
    checker = _Checker(source)
    root = checker.mapping(raw, "(root)")
    checker.allowed_keys(root, "", ("reader", "queries", "models", "schedulers", "server",
                                    "writer", "shard"))
    reader = _parse_reader(checker, checker.required(root, "", "reader"))
    queries = {alias: _parse_query(checker, f"queries.{alias}", section, reader)
               for alias, section in checker.named_sections(root, "queries").items()}
    models = {alias: _parse_model(checker, alias, section, queries)
              for alias, section in checker.named_sections(root, "models").items()}
    schedulers = {alias: _parse_scheduler(checker, alias, section, models)
                  for alias, section in checker.named_sections(root, "schedulers").items()}
    server = _parse_server(checker, root.get("server"))
    return SidecarConfig(source, reader, queries, models, schedulers, server,
                         _parse_writer(checker, root.get("writer")),
                         _parse_shard(checker, root.get("shard")))


def _check_param_numbers(checker: _Checker, prefix: str, value: Any) -> None:
    """Whatever the model: no NaN or infinity, no integer beyond 32 bits (also in lists)."""
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_param_numbers(checker, f"{prefix}[{index}]", item)
    elif isinstance(value, float):
        try:
            finite_number(value)
        except ValueError as error:
            raise checker.fail(prefix, str(error)) from None
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        raise checker.fail(prefix, f"must be at most {MAX_INTEGER} in size, got "
                                   f"{shorten(repr(value), 40)}")


_HTTP_CLIENT_KEYS = ("url", "timeout", "bearer_token_file", "basic_auth", "headers",
                     "tls_ca_file", "tls_insecure_skip_verify")


def _parse_http_client(checker: _Checker, section: dict, prefix: str) -> dict[str, Any]:
    """The keys every HTTP client section shares (reader, writer.remote_write), as
    HttpClientConfig's fields."""
    url = checker.typed(section, prefix, "url", _string, required=True)
    if not url.startswith(("http://", "https://")):
        raise checker.fail(f"{prefix}.url", f"must start with http:// or https://, got {url!r}")
    basic_auth = None
    if section.get("basic_auth") is not None:
        where = f"{prefix}.basic_auth"
        auth = checker.mapping(section["basic_auth"], where)
        checker.allowed_keys(auth, where, ("username", "password", "password_file"))
        username = checker.typed(auth, where, "username", _string, required=True)
        password = checker.typed(auth, where, "password", str, "")
        password_file = checker.typed(auth, where, "password_file", _existing_file)
        if password_file is not None:
            try:
                password = read_text(password_file).strip()
            except InputError as error:
                raise checker.fail(f"{where}.password_file", error.reason) from None
        basic_auth = BasicAuth(username, password)
    headers = {}
    if section.get("headers") is not None:
        headers = checker.mapping(section["headers"], f"{prefix}.headers")
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise checker.fail(f"{prefix}.headers.{name}",
                                   "header names and values must be strings")
            if not _HEADER_NAME.match(name) or _CONTROL_CHARACTERS.search(value):
                raise checker.fail(f"{prefix}.headers.{name}",
                                   "not a valid HTTP header (a token name, and a value without "
                                   "CR, LF or other control characters)")
    if section.get("bearer_token_file") is not None and basic_auth is not None:
        raise checker.fail(f"{prefix}.bearer_token_file",
                           "use either bearer_token_file or basic_auth")
    return {
        "url": url.rstrip("/"),
        "timeout_seconds": checker.typed(section, prefix, "timeout", parse_duration, 30.0),
        "bearer_token_file": checker.typed(section, prefix, "bearer_token_file",
                                           _existing_file),
        "basic_auth": basic_auth,
        "headers": dict(headers),
        "tls_ca_file": checker.typed(section, prefix, "tls_ca_file", _existing_file),
        "tls_insecure_skip_verify": checker.typed(section, prefix, "tls_insecure_skip_verify",
                                                  _bool, False),
    }


def _parse_reader(checker: _Checker, raw: Any) -> ReaderConfig:
    section = checker.mapping(raw, "reader")
    checker.allowed_keys(section, "reader", (*_HTTP_CLIENT_KEYS, "default_step",
                                             "max_points_per_request", "max_retries"))
    return ReaderConfig(
        **_parse_http_client(checker, section, "reader"),
        default_step_seconds=checker.typed(section, "reader", "default_step", parse_duration, 60.0),
        max_points_per_request=checker.typed(section, "reader", "max_points_per_request",
                                             _count(2), 10000),
        max_retries=checker.typed(section, "reader", "max_retries", _count(0), 3),
    )


def _parse_writer(checker: _Checker, raw: Any) -> WriterConfig:
    """`writer:` in vmanomaly's style, one subsection per writer: `pull` (the /metrics
    endpoint; on when the section is absent) and `remote_write`."""
    if raw is None:
        return WriterConfig()
    section = checker.mapping(raw, "writer")
    checker.allowed_keys(section, "writer", ("pull", "remote_write"))
    pull = "pull" in section
    if pull and section["pull"] is not None:
        checker.allowed_keys(checker.mapping(section["pull"], "writer.pull"), "writer.pull", ())
    remote_write = None
    if "remote_write" in section:
        prefix = "writer.remote_write"
        remote = checker.mapping(section["remote_write"], prefix)
        checker.allowed_keys(remote, prefix, (*_HTTP_CLIENT_KEYS, "batch_size", "queue_size",
                                              "min_backoff", "max_backoff", "max_sample_age"))
        defaults = RemoteWriteConfig(url="")
        remote_write = RemoteWriteConfig(
            **_parse_http_client(checker, remote, prefix),
            batch_size=checker.typed(remote, prefix, "batch_size", _count(1),
                                     defaults.batch_size),
            queue_size=checker.typed(remote, prefix, "queue_size", _count(1),
                                     defaults.queue_size),
            min_backoff_seconds=checker.typed(remote, prefix, "min_backoff", parse_duration,
                                              defaults.min_backoff_seconds),
            max_backoff_seconds=checker.typed(remote, prefix, "max_backoff", parse_duration,
                                              defaults.max_backoff_seconds),
            max_sample_age_seconds=checker.typed(remote, prefix, "max_sample_age",
                                                 parse_duration,
                                                 defaults.max_sample_age_seconds),
        )
        if remote_write.queue_size < remote_write.batch_size:
            raise checker.fail(f"{prefix}.queue_size", f"must be >= batch_size "
                                                       f"({remote_write.batch_size})")
        if remote_write.max_backoff_seconds < remote_write.min_backoff_seconds:
            raise checker.fail(f"{prefix}.max_backoff", "must be >= min_backoff")
    if not pull and remote_write is None:
        raise checker.fail("writer", "names no writer: add pull, remote_write or both")
    return WriterConfig(pull=pull, remote_write=remote_write)


def check_shard(index: int, count: int) -> None:
    """ValueError unless 0 <= index < count (the flags and the config key share the rule)."""
    if not 0 <= index < count:
        raise ValueError(f"the shard index must be from 0 to shard count - 1 ({count - 1}), "
                         f"got {index}")


def _parse_shard(checker: _Checker, raw: Any) -> ShardConfig:
    if raw is None:
        return ShardConfig()
    section = checker.mapping(raw, "shard")
    checker.allowed_keys(section, "shard", ("index", "count"))
    count = checker.typed(section, "shard", "count", _count(1), required=True)
    index = checker.typed(section, "shard", "index", _count(0), required=True)
    try:
        check_shard(index, count)
    except ValueError as error:
        raise checker.fail("shard.index", str(error)) from None
    return ShardConfig(index, count)


def _parse_query(checker: _Checker, prefix: str, section: dict,
                 reader: ReaderConfig) -> QueryConfig:
    checker.allowed_keys(section, prefix, ("expr", "step", "data_range"))
    expr = checker.typed(section, prefix, "expr", _string, required=True)
    return QueryConfig(
        expr=expr.strip(),
        step_seconds=checker.typed(section, prefix, "step", parse_duration,
                                   reader.default_step_seconds),
        data_range_seconds=checker.typed(section, prefix, "data_range", parse_duration),
    )


def _parse_model(checker: _Checker, alias: str, section: dict,
                 queries: Mapping[str, QueryConfig]) -> ModelConfig:
    prefix = f"models.{alias}"
    type_name = checker.typed(section, prefix, "type", _string, required=True)
    raw_params = {key: value for key, value in section.items() if key not in _MODEL_COMMON_KEYS}
    for key, value in raw_params.items():
        _check_param_numbers(checker, f"{prefix}.{key}", value)
    try:
        model_type = model_class(type_name)
        params = build_params(model_type.Params, raw_params)
    except ModelParamError as error:
        reason = error.reason
        if error.key != "type" and "unknown key" in reason:
            reason = reason.replace("(allowed: ", f"(allowed: {', '.join(_MODEL_COMMON_KEYS)}, ")
        raise checker.fail(f"{prefix}.{error.key}", reason) from None
    scoring = _parse_scoring(checker, prefix, section)
    if scoring.calibration == "raw" and not model_type.has_raw_band:
        raise checker.fail(f"{prefix}.calibration",
                           f"a {type_name} model has no raw band of its own: use calibrated")
    return ModelConfig(
        alias=alias,
        type=type_name,
        params=params,
        queries=checker.alias_list(section, prefix, "queries", queries, "query"),
        scoring=scoring,
    )


def _parse_scoring(checker: _Checker, prefix: str, section: dict) -> ScoringConfig:
    """The keys every model section shares (see ScoringConfig)."""
    defaults = ScoringConfig()
    choices = {"detection_direction": DIRECTIONS, "calibration": ("calibrated", "raw")}
    chosen = {}
    for key, allowed in choices.items():
        value = checker.typed(section, prefix, key, _string, getattr(defaults, key))
        if value not in allowed:
            raise checker.fail(f"{prefix}.{key}",
                               f"must be one of {', '.join(allowed)}, got {value!r}")
        chosen[key] = value
    durations = {f"{key}_seconds": checker.typed(section, prefix, key, parse_window,
                                                 getattr(defaults, f"{key}_seconds"))
                 for key in ("memory", "warm_up", "quiet", "rearm")}
    if durations["memory_seconds"] <= 0:
        raise checker.fail(f"{prefix}.memory", "must be a positive duration")
    false_alarms = checker.typed(section, prefix, "false_alarms_per_day", _non_negative_number,
                                 defaults.false_alarms_per_day)
    if false_alarms <= 0:
        raise checker.fail(f"{prefix}.false_alarms_per_day", "must be > 0")
    return ScoringConfig(
        **chosen, **durations, false_alarms_per_day=false_alarms,
        rearm_step=checker.typed(section, prefix, "rearm_step", _non_negative_number,
                                 defaults.rearm_step),
        min_dev_from_expected=checker.typed(section, prefix, "min_dev_from_expected",
                                            _non_negative_number, 0.0))


def _parse_scheduler(checker: _Checker, alias: str, section: dict,
                     models: Mapping[str, ModelConfig]) -> SchedulerConfig:
    prefix = f"schedulers.{alias}"
    checker.allowed_keys(section, prefix, ("fit_every", "fit_window", "infer_every",
                                           "alarm_catch_up", "models"))
    durations = {key: checker.typed(section, prefix, key, parse_duration, required=True)
                 for key in ("fit_every", "fit_window", "infer_every")}
    durations["alarm_catch_up"] = checker.typed(
        section, prefix, "alarm_catch_up", parse_duration,
        default=max(SchedulerConfig.alarm_catch_up_seconds, durations["infer_every"]))
    for key in ("fit_every", "alarm_catch_up"):
        if durations[key] < durations["infer_every"]:
            raise checker.fail(f"{prefix}.{key}", f"must be >= infer_every ({section[key]} < "
                                                  f"{section['infer_every']})")
    return SchedulerConfig(
        alias=alias,
        fit_every_seconds=durations["fit_every"],
        fit_window_seconds=durations["fit_window"],
        infer_every_seconds=durations["infer_every"],
        models=checker.alias_list(section, prefix, "models", models, "model"),
        alarm_catch_up_seconds=durations["alarm_catch_up"],
    )


def _parse_server(checker: _Checker, raw: Any) -> ServerConfig:
    if raw is None:
        return ServerConfig()
    section = checker.mapping(raw, "server")
    checker.allowed_keys(section, "server", ("listen_address", "metric_name_template",
                                             "web_config_file"))
    listen_address = checker.typed(section, "server", "listen_address", _string,
                                   DEFAULT_LISTEN_ADDRESS)
    _, colon, port = listen_address.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise checker.fail("server.listen_address",
                           f"must be HOST:PORT with a port 1-65535, got {listen_address!r}")
    template = checker.typed(section, "server", "metric_name_template", _string, "{name}")
    if not _plain_name_template(template) or not _METRIC_NAME.match(
            template.format(name="anomaly_score")):
        raise checker.fail("server.metric_name_template",
                           f"must contain {{name}} (and no other field, format or conversion) "
                           f"and form a valid metric name, got {shorten(repr(template), 80)}")
    return ServerConfig(listen_address, template,
                        checker.typed(section, "server", "web_config_file", _existing_file))


def _plain_name_template(template: str) -> bool:
    """True if every replacement field is a bare {name} and there is at least one: no
    {name.x}, {name[0]}, {name!r}, {name:>9}, which format() would evaluate."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(template) if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return bool(fields) and all(field == ("name", "", None) for field in fields)

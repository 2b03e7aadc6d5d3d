"""Strict parsing of untrusted input: text files, YAML documents, numbers and config keys.

Shared by the exporter's web-config and collector config, the sidecar (its config, the answers
of the query API and the backtest CSV) and the remediator's config, so every file or answer a
user or a network peer hands us is held to the same rules: UTF-8 text only, no binary, bounded
nesting and alias expansion in YAML, finite numbers, integers that fit in 32 bits. Each problem
is an InputError naming the source, the place in it and the reason, which each caller turns into
its own documented error type; nothing here may end in a traceback.

A config file is read with load_config_file and walked with a ConfigChecker: each of its
failures is a ConfigError "<file>: <key.path>: <reason>", and unknown keys are errors (a typo
must never silently fall back to a default).

This module lives in the exporter package because that is the base install every part has; it
imports nothing beyond the standard library and PyYAML (loaded only when YAML is parsed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a YAML document (aliases followed): real
configs are under 10 deep, and Python's own recursion limit is ~1,000."""
MAX_NODES = 100_000
"""Most YAML nodes a document may expand to once its aliases are followed. A config is a few
hundred nodes; an alias bomb ("billion laughs") is billions, and must fail before it is built."""
MAX_REASON_CHARS = 300
MAX_WHERE_CHARS = 200
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
"""Linux's PATH_MAX and NAME_MAX."""
MAX_INTEGER = 2**31 - 1
"""The largest integer a config setting takes (counts, windows, sizes, seeds): 1e11 is a typo."""


class InputError(ValueError):
    """Unusable input; str() is "<source>: <where>: <reason>"."""

    def __init__(self, source: str, where: str, reason: str) -> None:
        where, reason = shorten(where, MAX_WHERE_CHARS), shorten(reason)
        super().__init__(f"{source}: {where}: {reason}")
        self.source = source
        self.where = where
        self.reason = reason


class ConfigError(InputError):
    """A configuration problem; str() is "<file>: <key.path>: <reason>"."""


def shorten(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A message part cut to `limit` characters, so no input can make an error message huge."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text from bytes (a UTF-8 byte-order mark is dropped); binary and UTF-16 refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(source, "(file)", "is UTF-16 text; save it as UTF-8")
    if b"\0" in data:
        raise InputError(source, "(file)", f"contains a NUL byte at offset {data.index(0)}: a "
                                           f"binary or UTF-16 file? expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(source, "(file)", f"is not UTF-8 text (byte 0x{data[error.start]:02x} "
                                           f"at offset {error.start})") from None


def read_text(path: str | Path, source: str | None = None) -> str:
    """The file's text, strictly UTF-8; InputError if it cannot be read or is not text."""
    source = str(path) if source is None else source
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(source, "(file)", f"cannot read: {error.strerror or error}") from None
    except ValueError as error:  # a NUL byte in the path
        raise InputError(source, "(file)", f"cannot read: {error}") from None
    return decode_text(data, source)


def load_yaml(text: str, source: str) -> Any:
    """One YAML document with PyYAML's safe types, nesting <= MAX_DEPTH and aliases expanding to
    <= MAX_NODES nodes; InputError otherwise (never the expanded value in the message)."""
    import yaml

    loader = None
    try:
        loader = _loader_class()(text)  # rejects control characters already
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except InputError:
        raise
    except yaml.YAMLError as error:
        raise InputError(source, "(file)", f"not valid YAML: {error}") from None
    except RecursionError:
        raise InputError(source, "(file)", f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str | Path, source: str | None = None) -> Any:
    """read_text then load_yaml."""
    source = str(path) if source is None else source
    return load_yaml(read_text(path, source), source)


def load_config_file(path: str | Path) -> Any:
    """A config file's YAML document under load_yaml_file's rules; ConfigError (key "(file)")
    if it is unreadable, not UTF-8 text, not YAML or past the nesting or alias limits."""
    source = str(path)
    try:
        return load_yaml_file(path, source)
    except InputError as error:
        raise ConfigError(source, error.where, error.reason) from None


def finite_number(value: Any, minimum: float | None = None,
                  maximum: float | None = None) -> float:
    """A real number (not a bool) that is finite and inside [minimum, maximum]; ValueError
    with the reason otherwise, for callers that add the key."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {shorten(repr(value))}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"must be a finite number, got an integer of {len(str(value))} "
                         f"digits") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"must be >= {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"must be <= {maximum:g}, got {value!r}")
    return number


class ConfigChecker:
    """Typed access to one config document, each failure a ConfigError with its key path."""

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
        """A mapping of user-chosen aliases to sections (the sidecar's models, the
        remediator's actions)."""
        sections = self.mapping(self.required(root, "", key), key)
        for alias, section in sections.items():
            if not isinstance(alias, str) or not alias:
                raise self.fail(f"{key}.{alias}", "alias must be a non-empty string")
            self.mapping(section, f"{key}.{alias}")
        return sections

    def typed(self, section: dict, prefix: str, key: str, convert: Callable[[Any], Any],
              default: Any = None, required: bool = False) -> Any:
        """convert(section[key]), its ValueError or TypeError turned into a ConfigError; the
        default when the key is absent or null."""
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
        """A list of aliases each defined in `known`; all of them when the key is absent."""
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


# Converters for ConfigChecker.typed: each returns the value or raises ValueError with the reason.

def non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def non_negative_number(value: Any) -> float:
    return finite_number(value, minimum=0)


def integer_at_least(minimum: int) -> Callable[[Any], int]:
    """A converter for integers from minimum to MAX_INTEGER (bools refused)."""
    def convert(value: Any) -> int:
        if (isinstance(value, bool) or not isinstance(value, int)
                or not minimum <= value <= MAX_INTEGER):
            raise ValueError(f"must be an integer from {minimum} to {MAX_INTEGER}, got "
                             f"{shorten(repr(value), 40)}")
        return value
    return convert


def path_string(value: Any) -> str:
    """A path the OS can be handed: a non-empty string without a NUL byte, at most
    MAX_PATH_CHARS long, no part of it over MAX_NAME_BYTES (otherwise even is_file() raises
    instead of answering)."""
    path = non_empty_string(value)
    if "\0" in path:
        raise ValueError("a path cannot hold a NUL byte")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"a path is at most {MAX_PATH_CHARS} characters, got {len(path)}")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
           for part in path.split("/")):
        raise ValueError(f"a file or folder name is at most {MAX_NAME_BYTES} bytes, got "
                         f"{shorten(repr(path), 100)}")
    return path


def existing_file(value: Any) -> str:
    """The path of a file that exists (a path the OS rejects is a reason, not a traceback)."""
    path = non_empty_string(value)
    try:
        exists = Path(path).is_file()
    except (OSError, ValueError) as error:
        raise ValueError(f"file {shorten(path, 100)!r}: {error}") from None
    if not exists:
        raise ValueError(f"file {shorten(path, 100)!r} does not exist")
    return path


_LOADER: type | None = None


def _loader_class() -> type:
    """A SafeLoader that stops composing past MAX_DEPTH (built once, on first use)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class DepthLimitedLoader(yaml.SafeLoader):
            depth = 0

            def compose_node(self, parent: Any, index: Any) -> Any:
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels (line "
                                         f"{mark.line + 1})")
                try:
                    return super().compose_node(parent, index)
                finally:
                    self.depth -= 1

        _LOADER = DepthLimitedLoader
    return _LOADER


def _check_expansion(root: Any, source: str) -> None:
    """Count nodes and depth as if every alias were copied out, without copying anything:
    each node is measured once (a shared node's size is reused), so a bomb costs its text."""
    import yaml

    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    in_progress: set[int] = set()

    def measure(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        if key in in_progress:
            raise InputError(source, "(file)", "a YAML alias refers to a node that contains "
                                               "it (a recursive structure)")
        in_progress.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        nodes, depth = 1, 1
        for child in children:
            child_nodes, child_depth = measure(child)
            nodes += child_nodes
            depth = max(depth, child_depth + 1)
            if nodes > MAX_NODES:
                raise InputError(source, "(file)", f"YAML aliases expand to more than "
                                                   f"{MAX_NODES:,} nodes (an alias bomb?)")
            if depth > MAX_DEPTH:
                raise InputError(source, "(file)", f"nested deeper than {MAX_DEPTH} levels "
                                                   f"once YAML aliases are followed")
        in_progress.discard(key)
        measured[key] = nodes, depth
        return nodes, depth

    measure(root)

"""Strict parsing of untrusted input: text files, YAML documents and numbers.

Shared by the exporter's web-config and by the sidecar (its config, the answers of the query
API and the backtest CSV), so every file or answer a user or a network peer hands us is held to
the same rules: UTF-8 text only, no binary, bounded nesting and alias expansion in YAML, finite
numbers. Each problem is an InputError naming the source, the place in it and the reason, which
each caller turns into its own documented error type; nothing here may end in a traceback.

This module lives in the exporter package because that is the base install every part has; it
imports nothing beyond the standard library and PyYAML (loaded only when YAML is parsed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a YAML document (aliases followed): real
configs are under 10 deep, and Python's own recursion limit is ~1,000."""
MAX_NODES = 100_000
"""Most YAML nodes a document may expand to once its aliases are followed. A config is a few
hundred nodes; an alias bomb ("billion laughs") is billions, and must fail before it is built."""
MAX_REASON_CHARS = 300


class InputError(ValueError):
    """Unusable input; str() is "<source>: <where>: <reason>"."""

    def __init__(self, source: str, where: str, reason: str) -> None:
        reason = shorten(reason)
        super().__init__(f"{source}: {where}: {reason}")
        self.source = source
        self.where = where
        self.reason = reason


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

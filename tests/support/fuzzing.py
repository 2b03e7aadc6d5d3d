"""Shared hypothesis settings and strategies for the property-based tests of input parsers,
and the hostile documents every YAML loader's tests feed it.

Runs are derandomized (the same examples every run, so CI is reproducible) and bounded: each
example must finish within EXAMPLE_DEADLINE, and the example counts keep all fuzz tests of
`make test` to about a minute on a 2-core machine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")
EXAMPLE_DEADLINE = timedelta(seconds=2)

FUZZ = settings(max_examples=2500, deadline=EXAMPLE_DEADLINE, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["15s", "1h30m", "293y", ".inf", ".nan", "{name}", "{name.x}", "_rolling",
                     "zscore", "mad", "http://127.0.0.1:9", "a\r\nb", "", "0s", "-1m"]))
"""Values likely to reach the validators' edge cases, plus arbitrary ones."""

json_values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=5),
                                        st.dictionaries(st.text(max_size=12), children,
                                                        max_size=5)),
    max_leaves=30)
"""Nested JSON-like documents (lists, string-keyed mappings, scalars)."""

raw_bytes = st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode),
                      st.text(max_size=200).map(lambda text: text.encode("utf-16")))
"""Bytes that are not what a parser expects: binary, arbitrary UTF-8, UTF-16."""


ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]) + "\n"
"""A "billion laughs" YAML document: 10 lines whose aliases expand to 9**10 strings."""

DEEP_YAML = "deep: " + "[" * 1000 + "]" * 1000 + "\n"
"""A YAML document nested 1,000 deep (past Python's recursion limit once constructed)."""


def load_file(content: bytes, name: str, load: Callable[[Path], T],
              error: type[Exception]) -> T | None:
    """Write `content` to a fresh file called `name` and load it: the result, or None when the
    loader raised `error` (any other exception fails the test) with a bounded message that
    starts with the file's path."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return load(path)
        except error as raised:
            assert str(raised).startswith(f"{path}: ") and len(str(raised)) < 2000, raised
            return None

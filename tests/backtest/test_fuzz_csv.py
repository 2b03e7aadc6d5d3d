"""Property-based: any CSV file reads as a well-formed series or raises BacktestInputError,
within a time bound."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from anomaly_sidecar.backtest import BacktestInputError, read_csv
from tests.support.fuzzing import FUZZ, load_file, raw_bytes

cells = st.one_of(st.text(max_size=12), st.integers().map(str),
                  st.floats(allow_nan=True, allow_infinity=True).map(str),
                  st.sampled_from(["timestamp", "value", "2015-01-01 00:00:00", "1600000000",
                                   "nan", "inf", "1e300", "", "\"", "a,b"]))
rows = st.lists(st.lists(cells, min_size=0, max_size=4).map(",".join), max_size=30)
ordered = st.lists(st.tuples(st.floats(0, 4000), st.floats(allow_nan=True)), max_size=40).map(
    lambda points: "timestamp,value\n" + "".join(
        f"{1_600_000_000 + sum(step for step, _ in points[:i + 1])},{value}\n"
        for i, (_, value) in enumerate(points)))
contents = st.one_of(rows.map(lambda lines: "\n".join(lines).encode()), ordered.map(str.encode),
                     raw_bytes)


@FUZZ
@given(content=contents)
def test_any_csv_reads_or_raises_backtest_input_error(content: bytes) -> None:
    series = load_file(content, "in.csv", read_csv, BacktestInputError)
    if series is not None:
        assert len(series.labels) == len(series.seconds) == len(series.values) > 0
        assert np.isfinite(series.seconds).all() and np.isfinite(series.values).any()

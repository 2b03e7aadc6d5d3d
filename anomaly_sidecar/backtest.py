"""Walk-forward backtest: run a configured model over a recorded series as the daemon would.

The series goes through the daemon's own streaming path (detector.Detector: the model, the
shared calibration and the alarm gate, with per-series state) in chunks, so every point is
scored once, from the past only, exactly as a running sidecar would score it. A model that
learns (ARIMA, LSTM) is refitted before the chunks that start at its refit points: after its
warm-up, twice that, four times ... (a fresh daemon does not wait a whole fit_every to start),
then every fit_every, each time a fresh model fitted on the preceding fit_window. Rows map 1:1
to input rows (no resampling), which is what position-matched benchmarks like NAB need.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomaly_sidecar.config import ModelConfig
from anomaly_sidecar.detector import build_detector
from anomaly_sidecar.durations import span_points
from anomaly_sidecar.models.base import SeriesBatch, model_class

OUTPUT_COLUMNS = ("timestamp", "y", "yhat", "yhat_lower", "yhat_upper", "anomaly_score")
SERIES_KEY = (("series", "backtest"),)
MIN_FIRST_FIT_POINTS = 50
"""A learning model is first fitted after its warm-up, but never on fewer points than this."""
CHUNK_POINTS = 2000
"""Points per update when nothing is refitted in between (only progress reports see it)."""


class BacktestInputError(ValueError):
    """The input file cannot be backtested; the message names the file, row and reason."""


@dataclass(frozen=True)
class Series:
    """One recorded series: the timestamps as written (kept for the output), as epoch
    seconds, and the values (NaN where a row has no number)."""

    labels: list[str]
    seconds: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Cadence:
    """When to refit, in points of the input."""

    fit_every: int
    fit_window: int
    first_fit: int

    @classmethod
    def from_seconds(cls, seconds: np.ndarray, fit_every_seconds: float,
                     fit_window_seconds: float, warm_up_seconds: float) -> Cadence:
        """Convert the scheduler's durations into points using the input's median step."""
        step = median_step(seconds)
        return cls(max(1, round(fit_every_seconds / step)),
                   max(1, round(fit_window_seconds / step)),
                   max(MIN_FIRST_FIT_POINTS, span_points(warm_up_seconds, step)))


def median_step(seconds: np.ndarray) -> float:
    """The typical spacing of the timestamps (1 s when there is none to measure)."""
    steps = np.diff(seconds)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 1.0


@dataclass(frozen=True)
class BacktestResult:
    y: np.ndarray
    yhat: np.ndarray
    yhat_lower: np.ndarray
    yhat_upper: np.ndarray
    anomaly_score: np.ndarray


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 date-time (naive = UTC)."""
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


def _parse_value(text: str) -> float:
    """A sample value; blank or non-numeric cells are gaps (NaN), as Prometheus would have."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_csv(path: Path) -> Series:
    """Read timestamp,value rows (a header row is optional)."""
    labels, seconds, values = [], [], []
    try:
        with open(path, newline="") as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise BacktestInputError(
                        f"{path}: row {line_number}: expected timestamp,value, got {row!r}")
                try:
                    moment = parse_timestamp(row[0])
                except ValueError:
                    if line_number == 1:
                        continue  # the header
                    raise BacktestInputError(
                        f"{path}: row {line_number}: timestamp {row[0]!r} is neither epoch "
                        "seconds nor ISO 8601") from None
                labels.append(row[0])
                seconds.append(moment)
                values.append(_parse_value(row[1]))
    except OSError as error:
        raise BacktestInputError(f"{path}: cannot read: {error.strerror or error}") from None
    if not values:
        raise BacktestInputError(f"{path}: no data rows")
    return Series(labels, np.asarray(seconds), np.asarray(values, dtype=float))


def series_from_range(batch: SeriesBatch, source: str) -> Series:
    """The one series of a Prometheus range result (grid points without a sample are gaps)."""
    if len(batch.keys) != 1:
        raise BacktestInputError(f"{source}: returned {len(batch.keys)} series; the backtest "
                                 "takes exactly one (narrow the query with label matchers)")
    labels = [datetime.fromtimestamp(moment, tz=UTC).isoformat() for moment in batch.timestamps]
    return Series(labels, np.asarray(batch.timestamps, dtype=float),
                  np.asarray(batch.values[0], dtype=float))


def refit_points(n_points: int, cadence: Cadence) -> list[int]:
    """Positions before which the model is refitted: first_fit, doubling until the gap
    reaches fit_every, then every fit_every."""
    points, position = [], cadence.first_fit
    while position < n_points:
        points.append(position)
        position += min(position, cadence.fit_every)
    return points


def _chunks(n_points: int, refits: list[int]) -> Iterator[tuple[int, int]]:
    """(start, end) covering all points, split at every refit and every CHUNK_POINTS."""
    bounds = sorted({0, *refits, *range(CHUNK_POINTS, n_points, CHUNK_POINTS), n_points})
    yield from itertools.pairwise(bounds)


def run_backtest(model_config: ModelConfig, series: Series, cadence: Cadence,
                 on_chunk: Callable[[int], None] | None = None) -> BacktestResult:
    """Walk forward over the series (see the module docstring); on_chunk(n) reports progress
    after each chunk of n points."""
    n_points = len(series.values)
    output = {name: np.full(n_points, np.nan) for name in OUTPUT_COLUMNS[2:]}
    seconds = strictly_increasing(series.seconds)
    detector = build_detector(model_config, median_step(seconds))
    learns = model_class(model_config.type).learns
    refits = refit_points(n_points, cadence) if learns else []
    for start, end in _chunks(n_points, refits):
        if start in refits:
            model = build_detector(model_config, detector.model.step_seconds).model
            span = cadence.fit_window
            if model.fit_seconds is not None:
                span = min(span, span_points(model.fit_seconds, detector.model.step_seconds))
            model.fit(_batch(seconds, series.values, max(0, start - span), start))
            detector.model = model
        scored = detector.update(_batch(seconds, series.values, start, end))
        for name in OUTPUT_COLUMNS[2:]:
            output[name][start:end] = getattr(scored, name)[0]
        if on_chunk is not None:
            on_chunk(end - start)
    return BacktestResult(series.values, output["yhat"], output["yhat_lower"],
                          output["yhat_upper"], output["anomaly_score"])


def strictly_increasing(seconds: np.ndarray) -> np.ndarray:
    """Timestamps with each repeated one moved 1 ms after its predecessor, so a file with a
    duplicated timestamp (a daylight-saving change) keeps every row, scored in file order."""
    nudge = 1e-3 * np.arange(len(seconds))
    return np.maximum.accumulate(seconds - nudge) + nudge


def _batch(seconds: np.ndarray, values: np.ndarray, start: int, end: int) -> SeriesBatch:
    return SeriesBatch([SERIES_KEY], seconds[start:end], values[None, start:end].astype(float))


def write_csv(path: Path, labels: Sequence[str], result: BacktestResult) -> None:
    """The output contract: one row per input row, empty cells where there is no forecast."""
    columns = [result.y, result.yhat, result.yhat_lower, result.yhat_upper, result.anomaly_score]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(OUTPUT_COLUMNS)
        for row, label in enumerate(labels):
            writer.writerow([label, *(_cell(column[row]) for column in columns)])


def _cell(value: float) -> str:
    return repr(float(value)) if np.isfinite(value) else ""


def plot(path: Path, series: Series, result: BacktestResult) -> None:
    """y, the band, and the points scored > 1, as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moments = np.array([datetime.fromtimestamp(s, tz=UTC) for s in series.seconds])
    figure, axes = plt.subplots(figsize=(14, 5))
    axes.fill_between(moments, result.yhat_lower, result.yhat_upper, color="tab:blue",
                      alpha=0.2, label="band")
    axes.plot(moments, result.y, color="black", linewidth=0.7, label="y")
    alarms = np.nan_to_num(result.anomaly_score, nan=0.0) > 1.0
    axes.scatter(moments[alarms], result.y[alarms], color="red", s=14, zorder=3,
                 label="anomaly_score > 1")
    axes.legend(loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

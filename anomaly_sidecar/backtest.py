"""Walk-forward backtest: run a configured model over a recorded series as the daemon would.

At every point only the past is used. The series is cut into chunks of `fit_every` points; at
the start of each chunk the model is refitted on the preceding `fit_window` points (the first
refits come sooner, after min_samples, 2x, 4x ... points, as a fresh daemon would not wait a
whole fit_every to start), and the chunk is then forecast with `Model.predict` (causal by
contract) from the preceding `context_points` and scored with `scoring.score_forecast`: the
very functions the daemon calls. Rows map 1:1 to input rows (no resampling), which is what
position-matched benchmarks like NAB need.
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

from anomaly_sidecar.config import ModelConfig, build_model
from anomaly_sidecar.models.base import SeriesBatch
from anomaly_sidecar.scoring import score_forecast

OUTPUT_COLUMNS = ("timestamp", "y", "yhat", "yhat_lower", "yhat_upper", "anomaly_score")
SERIES_KEY = (("series", "backtest"),)


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
    min_samples: int

    @classmethod
    def from_seconds(cls, seconds: np.ndarray, fit_every_seconds: float,
                     fit_window_seconds: float, min_samples: int) -> Cadence:
        """Convert the scheduler's durations into points using the input's median step."""
        steps = np.diff(seconds)
        steps = steps[steps > 0]
        step = float(np.median(steps)) if steps.size else 1.0
        return cls(max(1, round(fit_every_seconds / step)),
                   max(1, round(fit_window_seconds / step)), max(1, min_samples))


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
    """Positions before which the model is refitted: min_samples, doubling until the gap
    reaches fit_every, then every fit_every."""
    points, position = [], cadence.min_samples
    while position < n_points:
        points.append(position)
        position += min(position, cadence.fit_every)
    return points


def _chunks(n_points: int, cadence: Cadence) -> Iterator[tuple[int, int, bool]]:
    """(start, end, refit_before) covering all points; the chunk before min_samples is
    forecast only by models that need no fit (can_predict)."""
    starts = refit_points(n_points, cadence)
    bounds = sorted({0, *starts, n_points})
    for start, end in itertools.pairwise(bounds):
        yield start, end, start in starts


def run_backtest(model_config: ModelConfig, series: Series, cadence: Cadence,
                 on_chunk: Callable[[int], None] | None = None) -> BacktestResult:
    """Walk forward over the series (see the module docstring); on_chunk(n) reports progress
    after each chunk of n points.

    As in the daemon, every refit builds a fresh model (nothing leaks from one fit to the
    next) and shows it only the newest fit_points of the fit_window, and a point is published
    only once min_samples finite points are in its context.
    """
    n_points = len(series.values)
    output = {name: np.full(n_points, np.nan) for name in OUTPUT_COLUMNS[2:]}
    model = build_model(model_config)
    seen = np.cumsum(np.isfinite(series.values))
    for start, end, refit in _chunks(n_points, cadence):
        if refit:
            model = build_model(model_config)
            span = min(cadence.fit_window, model.fit_points or cadence.fit_window)
            model.fit(_batch(series, max(0, start - span), start))
        context_start = max(0, start - model.context_points)
        if model.can_predict(SERIES_KEY):
            forecast = model.predict(_batch(series, context_start, end), end - start)
            y = series.values[None, start:end]
            output["yhat"][start:end] = forecast.yhat[0]
            output["yhat_lower"][start:end] = forecast.yhat_lower[0]
            output["yhat_upper"][start:end] = forecast.yhat_upper[0]
            output["anomaly_score"][start:end] = score_forecast(
                y, forecast, model_config.detection_direction,
                model_config.min_dev_from_expected)[0]
        if on_chunk is not None:
            on_chunk(end - start)
    context = max(model.context_points, model_config.min_samples)
    context_start = np.maximum(np.arange(n_points) - context, 0)
    in_context = seen - np.concatenate([[0], seen])[context_start]
    output["anomaly_score"][in_context < model_config.min_samples] = np.nan
    return BacktestResult(series.values, output["yhat"], output["yhat_lower"],
                          output["yhat_upper"], output["anomaly_score"])


def _batch(series: Series, start: int, end: int) -> SeriesBatch:
    return SeriesBatch([SERIES_KEY], series.seconds[start:end],
                       series.values[None, start:end].astype(float))


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
    from anomaly_sidecar.band_plot import draw_band_plot

    draw_band_plot(path, series.seconds, result.y, result.yhat_lower, result.yhat_upper,
                   result.anomaly_score)

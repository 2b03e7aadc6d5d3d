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
import io
import itertools
import logging
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
from exporter.strict_input import InputError, read_text, shorten

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("timestamp", "y", "yhat", "yhat_lower", "yhat_upper", "anomaly_score")
SERIES_KEY = (("series", "backtest"),)
MIN_FIRST_FIT_POINTS = 50
"""A learning model is first fitted after its warm-up, but never on fewer points than this."""
CHUNK_POINTS = 2000
"""Points per update when nothing is refitted in between (only progress reports see it)."""
MIN_STEP_SECONDS = 0.001
"""Prometheus' timestamp resolution: closer rows are a unit mistake (ns or us as seconds)."""
EARLIEST_SECONDS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST_SECONDS = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
TIME_COLUMN_NAMES = {"timestamp", "time", "date", "datetime", "ds", "ts"}


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
    """A sample value; blank, non-numeric or non-finite cells are gaps (NaN), as the reader
    makes Prometheus' "NaN" and "+Inf"."""
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _csv_timestamp(text: str) -> float:
    """parse_timestamp, held to finite times from year 1 to 9999 (what datetime can show)."""
    moment = parse_timestamp(text)
    if not EARLIEST_SECONDS <= moment <= LATEST_SECONDS:  # also False for NaN
        raise ValueError(f"{moment!r} is not a time between the years 1 and 9999")
    return moment


def read_csv(path: Path) -> Series:
    """Read timestamp,value rows (a header row is optional) from a UTF-8 file.

    Rules, each broken one a BacktestInputError naming the file, row and reason: timestamps are
    epoch seconds or ISO 8601, finite, in time order and at least MIN_STEP_SECONDS apart, with
    two exceptions NAB's files need, each kept as rows and counted in a warning: a row may
    repeat the timestamp of the row before, and the clock may step back once a day by at most
    an hour (a daylight-saving change, as in NAB's machine_temperature_system_failure.csv).
    So an unsorted or reversed file is an error. A header naming the time column second
    (value,timestamp) is an error, and at least one value must be a number.
    """
    try:
        text = read_text(path)
    except InputError as error:
        raise BacktestInputError(str(error)) from None
    series = _CsvSeries(path)
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in rows:
            series.take(rows.line_num, row)
    except csv.Error as error:
        raise BacktestInputError(f"{path}: row {rows.line_num}: {error}") from None
    return series.finish()


class _CsvSeries:
    """The rows read so far and the order rules of read_csv."""

    CLOCK_CHANGE_SECONDS = 3600.0
    CLOCK_CHANGES_APART_SECONDS = 86400.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.labels: list[str] = []
        self.seconds: list[float] = []
        self.values: list[float] = []
        self.repeated: list[int] = []
        self.clock_changes: list[int] = []
        self.latest = -math.inf
        self.last_clock_change = -math.inf  # self.latest when the clock last stepped back

    def fail(self, line_number: int, reason: str) -> BacktestInputError:
        return BacktestInputError(f"{self.path}: row {line_number}: {reason}")

    def take(self, line_number: int, row: list[str]) -> None:
        """Check one CSV row and keep it (a header row is checked and skipped)."""
        if not row or not "".join(row).strip():
            return
        if len(row) < 2:
            raise self.fail(line_number, f"expected timestamp,value, got {shorten(repr(row), 80)}")
        try:
            moment = _csv_timestamp(row[0])
        except (ValueError, OverflowError) as error:
            if not self.seconds and line_number == 1:
                if row[1].strip().lower() in TIME_COLUMN_NAMES:
                    raise self.fail(1, f"the header names the time column second "
                                       f"({shorten(','.join(row), 80)}); the columns must be "
                                       f"timestamp,value") from None
                return  # the header
            raise self.fail(line_number, f"timestamp {shorten(repr(row[0]), 60)} is not epoch "
                                         f"seconds or ISO 8601 ({shorten(str(error), 80)})"
                            ) from None
        if self.seconds:
            self._check_order(line_number, row[0], moment)
        self.latest = max(self.latest, moment)
        self.labels.append(row[0])
        self.seconds.append(moment)
        self.values.append(_parse_value(row[1]))

    def _check_order(self, line_number: int, label: str, moment: float) -> None:
        step = moment - self.seconds[-1]
        if step == 0:
            self.repeated.append(line_number)
        elif step < 0:
            if (moment < self.latest - self.CLOCK_CHANGE_SECONDS
                    or self.latest - self.last_clock_change < self.CLOCK_CHANGES_APART_SECONDS):
                raise self.fail(line_number, f"timestamp {shorten(label, 40)} is earlier than "
                                             f"the row before ({self.labels[-1]}): rows must be "
                                             f"in time order (a daylight-saving step back of up "
                                             f"to 1h, once a day at most, is the one exception)")
            self.clock_changes.append(line_number)
            self.last_clock_change = self.latest
        elif step < MIN_STEP_SECONDS:
            raise self.fail(line_number, f"{step:g}s after the row before; steps under "
                                         f"{MIN_STEP_SECONDS:g}s (Prometheus' resolution) are "
                                         f"not supported: nanoseconds or microseconds written "
                                         f"as seconds?")

    def finish(self) -> Series:
        if not self.values:
            raise BacktestInputError(f"{self.path}: no data rows")
        if not any(math.isfinite(value) for value in self.values):
            raise BacktestInputError(f"{self.path}: no value in the second column is a number")
        if self.repeated:
            log.warning("%s: %d row(s) repeat the timestamp of the row before (first: row %d); "
                        "each is kept as its own point", self.path, len(self.repeated),
                        self.repeated[0])
        if self.clock_changes:
            log.warning("%s: the clock steps back (a daylight-saving change) at row(s) %s; the "
                        "rows are kept in file order", self.path,
                        ", ".join(map(str, self.clock_changes)))
        return Series(self.labels, np.asarray(self.seconds),
                      np.asarray(self.values, dtype=float))


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
    duplicated timestamp (a daylight-saving change) keeps every row, scored in file order; after
    a step back (read_csv allows one an hour long a day) the clock holds, 1 ms a row, until the
    file's time passes it again."""
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
    from anomaly_sidecar.band_plot import draw_band_plot

    draw_band_plot(path, series.seconds, result.y, result.yhat_lower, result.yhat_upper,
                   result.anomaly_score)

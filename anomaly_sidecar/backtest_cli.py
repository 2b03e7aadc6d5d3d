"""`anomaly-sidecar backtest`: the walk-forward backtest from the command line.

Without --config the shipped default configuration (default_config.yaml) is used, so the
figures a user reproduces are those of the defaults they run.

Exit codes follow click: 2 for a usage error (a wrong option, or an --out/--plot path that
cannot be written, checked before the run), 1 with "Error: <file>: <where>: <reason>" for an
input that cannot be backtested (config, CSV, query) or an output that fails to write.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from anomaly_sidecar.backtest import (
    BacktestInputError,
    Cadence,
    Series,
    parse_timestamp,
    read_csv,
    run_backtest,
    series_from_range,
    write_csv,
)
from anomaly_sidecar.config import ConfigError, ModelConfig, ReaderConfig, load_config
from anomaly_sidecar.durations import parse_duration

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
DEFAULT_FIT_EVERY_SECONDS = 86400.0
DEFAULT_FIT_WINDOW_SECONDS = 7 * 86400.0
_PROGRESS_MIN_POINTS = 5000


@dataclass(frozen=True)
class BacktestSetup:
    """A model section with the refit cadence of the scheduler that runs it."""

    model: ModelConfig
    fit_every_seconds: float
    fit_window_seconds: float
    reader: ReaderConfig


def resolve_setup(config_path: Path | None, alias: str | None) -> BacktestSetup:
    """The model `alias` (default: the only or first model) of a sidecar config, and the
    cadence of the first scheduler listing it (the shipped default cadence otherwise)."""
    config = load_config(config_path or DEFAULT_CONFIG)
    if not config.models:
        raise ConfigError(config.source, "models", "defines no model to backtest")
    alias = alias or next(iter(config.models))
    if alias not in config.models:
        raise ConfigError(config.source, "models",
                          f"no model {alias!r} (defined: {', '.join(config.models)})")
    for scheduler in config.schedulers.values():
        if alias in scheduler.models:
            return BacktestSetup(config.models[alias], scheduler.fit_every_seconds,
                                 scheduler.fit_window_seconds, config.reader)
    return BacktestSetup(config.models[alias], DEFAULT_FIT_EVERY_SECONDS,
                         DEFAULT_FIT_WINDOW_SECONDS, config.reader)


def _epoch_seconds(text: str) -> float:
    """Epoch seconds, ISO 8601 (naive = UTC, as in CSV input), "now", or a duration before now
    (e.g. 7d)."""
    if text == "now":
        return time.time()
    try:
        return parse_timestamp(text)
    except ValueError:
        return time.time() - parse_duration(text)


def read_range(setup: BacktestSetup, url: str | None, expr: str, start: str, end: str,
               step: str) -> Series:
    """One series from a Prometheus-compatible query_range (the daemon's own reader, with the
    config's auth and TLS settings; --url only replaces the address)."""
    from anomaly_sidecar.reader import PromReader, ReaderError

    reader_config = (dataclasses.replace(setup.reader, url=url.rstrip("/")) if url
                     else setup.reader)
    try:
        batch = PromReader(reader_config).query_range(
            expr, _epoch_seconds(start), _epoch_seconds(end), parse_duration(step))
    except (ReaderError, ValueError) as error:
        raise click.ClickException(f"{reader_config.url}: {expr}: {error}") from None
    return series_from_range(batch, f"{reader_config.url}: {expr}")


def _writable_file(path: Path | None, option: str) -> None:
    """BadParameter (exit 2) now, rather than a traceback after minutes of backtesting."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    reason = None
    if path.is_dir():
        reason = "is a directory"
    elif not folder.is_dir():
        reason = f"folder {folder} does not exist"
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        reason = "is not writable"
    if reason is not None:
        raise click.BadParameter(f"{path}: {reason}", param_hint=option)


@click.command("backtest")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Sidecar config (default: the shipped default model configuration).")
@click.option("--model", "alias", help="Model alias in the config (default: the first).")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Input timestamp,value CSV (timestamps ISO 8601 or epoch seconds).")
@click.option("--query", "expr", help="Instead of --csv: a PromQL expression returning one "
              "series, read with query_range.")
@click.option("--url", help="Prometheus-compatible base URL for --query (default: the "
              "config's reader.url).")
@click.option("--start", default="7d", show_default=True,
              help="Range start for --query: epoch seconds, RFC 3339, or a duration ago.")
@click.option("--end", default="now", show_default=True, help="Range end for --query.")
@click.option("--step", default="1m", show_default=True, help="Query step for --query.")
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Output CSV: timestamp,y,yhat,yhat_lower,yhat_upper,anomaly_score.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw y, the band and the points scored > 1 into this PNG.")
def backtest_command(config_path: Path | None, alias: str | None, csv_path: Path | None,
                     expr: str | None, url: str | None, start: str, end: str, step: str,
                     out_path: Path, plot_path: Path | None) -> None:
    """Run a configured model walk-forward over a recorded series (a CSV file or a Prometheus
    range), using only the past at every point, and write its forecasts and anomaly scores."""
    if (csv_path is None) == (expr is None):
        raise click.UsageError("give exactly one of --csv and --query")
    _writable_file(out_path, "--out")
    _writable_file(plot_path, "--plot")
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise click.BadParameter(f"{plot_path}: the plot is a PNG (name it .png)",
                                 param_hint="--plot")
    try:
        setup = resolve_setup(config_path, alias)
        series = (read_csv(csv_path) if csv_path is not None
                  else read_range(setup, url, expr, start, end, step))
    except (ConfigError, BacktestInputError) as error:
        raise click.ClickException(str(error)) from None
    cadence = Cadence.from_seconds(series.seconds, setup.fit_every_seconds,
                                   setup.fit_window_seconds,
                                   setup.model.scoring.warm_up_seconds)
    n_points = len(series.values)
    if n_points >= _PROGRESS_MIN_POINTS:
        with click.progressbar(length=n_points, label=f"backtest {setup.model.alias}",
                               file=sys.stderr) as bar:
            result = run_backtest(setup.model, series, cadence, on_chunk=bar.update)
    else:
        result = run_backtest(setup.model, series, cadence)
    try:
        write_csv(out_path, series.labels, result)
        if plot_path is not None:
            from anomaly_sidecar.backtest import plot

            plot(plot_path, series, result)
    except OSError as error:
        raise click.ClickException(f"{error.filename or out_path}: cannot write: "
                                   f"{error.strerror or error}") from None
    alarms = int((result.anomaly_score > 1).sum())
    click.echo(f"{n_points} points, {alarms} scored > 1 -> {out_path}", err=True)

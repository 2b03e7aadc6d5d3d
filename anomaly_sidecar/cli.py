"""Command line: `anomaly-sidecar run --config FILE` and `anomaly-sidecar check-config FILE`.

`main` is a click group so that further commands (e.g. backtest) plug in with one
`main.add_command(...)` line.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from anomaly_sidecar import __version__
from anomaly_sidecar.backtest_cli import backtest_command
from anomaly_sidecar.config import (
    ConfigError,
    ShardConfig,
    SidecarConfig,
    check_shard,
    load_config,
)
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

INVALID_CONFIG_EXIT = 2
SHARD_INDEX_ENV = "ANOMALY_SIDECAR_SHARD_INDEX"
SHARD_COUNT_ENV = "ANOMALY_SIDECAR_SHARD_COUNT"


@click.group()
@click.version_option(__version__, prog_name="anomaly-sidecar")
def main() -> None:
    """Forecast Prometheus series and publish expected values and anomaly scores as metrics."""


def _load(config_file: Path, web_config_file: Path | None = None
          ) -> tuple[SidecarConfig, WebConfig]:
    """The config and the web config of its endpoint; exit 2 with file, key and reason if
    either is invalid."""
    try:
        config = load_config(config_file)
        web_config = _web_config(config, web_config_file)
    except ConfigError as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    return config, web_config


def _web_config(config: SidecarConfig, flag_path: Path | None) -> WebConfig:
    """--web.config.file, else server.web_config_file, else none (plain HTTP, no auth)."""
    path = flag_path or config.server.web_config_file
    if path is None:
        return WebConfig()
    try:
        return load_web_config(path)
    except WebConfigError as error:
        source, key = ((str(path), "--web.config.file") if flag_path
                       else (config.source, "server.web_config_file"))
        raise ConfigError(source, key, str(error)) from None


def _shard(config: SidecarConfig, index: int | None, count: int | None) -> ShardConfig | None:
    """The flags (or their environment variables) over the config's `shard` section; exit 2
    if the result is not a shard."""
    if index is None and count is None:
        return None
    shard = ShardConfig(config.shard.index if index is None else index,
                        config.shard.count if count is None else count)
    try:
        check_shard(shard.index, shard.count)
    except ValueError as error:
        click.echo(f"invalid: --shard-index/--shard-count: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    return shard


@main.command("check-config")
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
def check_config(config_file: Path) -> None:
    """Validate CONFIG_FILE (and the web config it names) without contacting the backend
    (exit 0 valid, 2 invalid)."""
    config, _ = _load(config_file)
    click.echo(f"{config_file}: valid ({len(config.queries)} queries, {len(config.models)} "
               f"models, {len(config.schedulers)} schedulers)")


@main.command("run")
@click.option("--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration file.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where fitted models are kept, so a restart scores without refitting.")
@click.option("--verbose", is_flag=True, help="Log every fit and inference.")
@click.option("--shard-index", type=click.IntRange(min=0), envvar=SHARD_INDEX_ENV,
              help=f"This replica's shard, 0 to count - 1 (or ${SHARD_INDEX_ENV}; over the "
                   f"config's shard.index).")
@click.option("--shard-count", type=click.IntRange(min=1), envvar=SHARD_COUNT_ENV,
              help=f"How many replicas share the series (or ${SHARD_COUNT_ENV}; over the "
                   f"config's shard.count).")
@click.option("--web.config.file", "web_config_file",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TLS and basic auth of /metrics (exporter-toolkit format; over the config's "
                   "server.web_config_file).")
def run(config_file: Path, state_dir: Path | None, verbose: bool, shard_index: int | None,
        shard_count: int | None, web_config_file: Path | None) -> None:
    """Run the sidecar until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    from anomaly_sidecar.daemon import Sidecar, StartupError

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, web_config = _load(config_file, web_config_file)
    shard = _shard(config, shard_index, shard_count)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(config, config_file, state_dir, web_config, shard)
    try:
        sidecar.start()
    except StartupError as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    except OSError as error:
        click.echo(f"cannot listen on {config.server.listen_address}: {error}", err=True)
        sys.exit(1)
    stopping = threading.Event()
    reload_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    def request_reload(signum: int, frame: object) -> None:
        reload_requested.set()
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    while True:
        stopping.wait()
        if not reload_requested.is_set():
            break
        reload_requested.clear()
        stopping.clear()
        sidecar.reload()
    sidecar.stop()


main.add_command(backtest_command)


if __name__ == "__main__":  # python -m anomaly_sidecar.cli
    main()

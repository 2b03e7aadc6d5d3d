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
from anomaly_sidecar.config import ConfigError, load_config

INVALID_CONFIG_EXIT = 2


@click.group()
@click.version_option(__version__, prog_name="anomaly-sidecar")
def main() -> None:
    """Forecast Prometheus series and publish expected values and anomaly scores as metrics."""


@main.command("check-config")
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
def check_config(config_file: Path) -> None:
    """Validate CONFIG_FILE without contacting the backend (exit 0 valid, 2 invalid)."""
    try:
        config = load_config(config_file)
    except ConfigError as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    click.echo(f"{config_file}: valid ({len(config.queries)} queries, {len(config.models)} "
               f"models, {len(config.schedulers)} schedulers)")


@main.command("run")
@click.option("--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration file.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where fitted models are kept, so a restart scores without refitting.")
@click.option("--verbose", is_flag=True, help="Log every fit and inference.")
def run(config_file: Path, state_dir: Path | None, verbose: bool) -> None:
    """Run the sidecar until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    from anomaly_sidecar.server import Sidecar, StartupError

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(config_file)
    except ConfigError as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(config, config_file, state_dir)
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

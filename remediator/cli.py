"""`aiinfra-remediator run --config FILE` and `aiinfra-remediator check-config FILE`.

A bad config or web config exits with code 2 and a message naming the file, the key and the
reason, before anything listens.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from remediator import __version__
from remediator.config import ConfigError, RemediatorConfig, load_config

INVALID_CONFIG_EXIT = 2
LOG = logging.getLogger("remediator")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiinfra-remediator")
def main() -> None:
    """Act on well-understood Alertmanager alerts (webhook receiver), under strict limits."""


def _load(config_file: Path, dry_run: bool) -> tuple[RemediatorConfig, WebConfig]:
    try:
        config = load_config(config_file, force_dry_run=dry_run)
        web_config = (load_web_config(config.server.web_config_file)
                      if config.server.web_config_file else WebConfig())
    except (ConfigError, WebConfigError) as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(INVALID_CONFIG_EXIT)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    return config, web_config


@main.command("check-config")
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check as `run --dry-run` would load it.")
def check_config(config_file: Path, dry_run: bool) -> None:
    """Validate CONFIG_FILE (exit 0 valid, 2 invalid)."""
    config, _ = _load(config_file, dry_run)
    dry = sum(action.dry_run for action in config.actions.values())
    click.echo(f"{config_file}: valid ({len(config.rules)} rules, {len(config.actions)} actions, "
               f"{dry} of them dry-run)")


@main.command("run")
@click.option("--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration file.")
@click.option("--dry-run", is_flag=True,
              help="Act on nothing: audit what each action would have done.")
@click.option("--log.level", "log_level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_file: Path, dry_run: bool, log_level: str) -> None:
    """Serve the webhook until SIGTERM/SIGINT (restart to load a changed config)."""
    from remediator.audit import AuditLog
    from remediator.dispatcher import Dispatcher
    from remediator.limits import SafetyLimits
    from remediator.metrics import RemediatorMetrics
    from remediator.webhook import WebhookServer

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, web_config = _load(config_file, dry_run)
    metrics = RemediatorMetrics(config.actions)
    try:
        audit = AuditLog(config.audit_log)
    except OSError as error:
        click.echo(f"cannot open the audit log {config.audit_log}: {error.strerror}", err=True)
        sys.exit(1)
    dispatcher = Dispatcher(config, audit, metrics, SafetyLimits(config.limits))
    restored = dispatcher.restore_state()
    try:
        server = WebhookServer((config.server.host, config.server.port), metrics.registry,
                               web_config, dispatcher, config.server.bearer_token_file,
                               config.server.max_body_bytes, config.server.max_connections)
    except OSError as error:
        click.echo(f"cannot listen on {config.server.listen_address}: {error}", err=True)
        sys.exit(1)
    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    server.serve_in_thread()
    scheme = "https" if web_config.ssl_context else "http"
    LOG.info("listening on %s://%s/alerts; %d rules, %d actions%s; %d earlier actions restored "
             "from %s", scheme, config.server.listen_address, len(config.rules),
             len(config.actions), ", DRY RUN" if config.dry_run else "", restored,
             config.audit_log)
    stopping.wait()
    LOG.info("stopping: waiting for running actions")
    server.shutdown()
    server.server_close()
    dispatcher.close()
    audit.close()

"""`aiinfra-report`: one report for the last period, or one per period, kept N deep.

    aiinfra-report --since 24h --out report.html
    aiinfra-report --every 24h --out-dir reports/ --keep 14   # runs until SIGTERM

Periodic reports cover [k*period, (k+1)*period) in UTC (daily reports run midnight to
midnight) and are written when each period ends. Exit status of a single report: 0 written, 1
written but a source could not be read (the page says which) or the Slack post failed, 2 bad
arguments.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from anomaly_sidecar.durations import parse_duration
from anomaly_sidecar.state import write_atomically
from remediator.report.html import render_report
from remediator.report.sources import Sources, collect
from remediator.report.summary import remediation_rows, slack_summary
from remediator.slack import SlackError, post_message

LOG = logging.getLogger("aiinfra-report")
REPORT_PREFIX = "aiinfra-report-"


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A --since/--every/--step value in seconds (the sidecar's duration syntax)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@click.option("--prometheus-url", default="http://127.0.0.1:9090", show_default=True)
@click.option("--alertmanager-url", default="http://127.0.0.1:9093", show_default=True,
              help="Alertmanager for silences and current alerts ('' to leave out).")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The remediator's audit log (its `audit_log` setting).")
@click.option("--since", "since_seconds", callback=_duration, default=None,
              help="One report for the last DURATION (with --out).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--every", "every_seconds", callback=_duration, default=None,
              help="One report per DURATION, until SIGTERM (with --out-dir).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--keep", type=click.IntRange(min=1), default=7, show_default=True,
              help="With --every: how many reports to keep.")
@click.option("--step", "step_seconds", callback=_duration, default=None,
              help="Resolution of the alert timeline (default: period / 1440, at least 1s).")
@click.option("--top-anomalies", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--metric-name-template", default="{name}", show_default=True,
              help="The sidecar's server.metric_name_template.")
@click.option("--slack-api-url-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Post a summary to Slack (the webhook URL is read from FILE).")
@click.option("--slack-channel", default=None)
@click.option("--link-base-url", default=None,
              help="Where the reports are served, for the Slack link (e.g. https://host/reports/).")
def main(prometheus_url: str, alertmanager_url: str, audit_log: Path | None,
         since_seconds: float | None, out_path: Path | None, every_seconds: float | None,
         out_dir: Path | None, keep: int, step_seconds: float | None, top_anomalies: int,
         metric_name_template: str, slack_api_url_file: Path | None,
         slack_channel: str | None, link_base_url: str | None) -> None:
    """Write an HTML report of what fired, when, and what the remediator did about it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    single = since_seconds is not None or out_path is not None
    periodic = every_seconds is not None or out_dir is not None
    if single == periodic or (single and (since_seconds is None or out_path is None)) or (
            periodic and (every_seconds is None or out_dir is None)):
        raise click.UsageError("give either --since and --out, or --every and --out-dir")
    if "{name}" not in metric_name_template:
        raise click.BadParameter("must contain {name}", param_hint="--metric-name-template")
    sources = Sources(prometheus_url, alertmanager_url or None, audit_log, metric_name_template,
                      top_anomalies)
    slack = (slack_api_url_file, slack_channel, link_base_url)
    if single:
        end = time.time()
        ok = write_report(sources, end - since_seconds, end, step_seconds, out_path, slack)
        sys.exit(0 if ok else 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_periodically(sources, every_seconds, out_dir, keep, step_seconds, slack)


def write_report(sources: Sources, start: float, end: float, step_seconds: float | None,
                 out_path: Path, slack: tuple[Path | None, str | None, str | None]) -> bool:
    """Collect, render and write one report (atomically); post the Slack summary if asked.
    True when every source was read and the post (if any) went out."""
    data = collect(sources, start, end, step_seconds)
    write_atomically(out_path, render_report(data))
    for name, message in data.errors.items():
        LOG.warning("%s not read: %s", name, message)
    url_file, channel, link_base = slack
    posted = True
    if url_file is not None:
        link = link_base.rstrip("/") + "/" + out_path.name if link_base else None
        try:
            post_message(url_file, slack_summary(data, remediation_rows(data.audit), link),
                         channel)
        except SlackError as error:
            LOG.error("Slack summary not posted: %s", error)
            posted = False
    LOG.info("wrote %s (%d firings, %d audit lines)", out_path, len(data.episodes),
             len(data.audit))
    return posted and not data.errors


def run_periodically(sources: Sources, every_seconds: float, out_dir: Path, keep: int,
                     step_seconds: float | None,
                     slack: tuple[Path | None, str | None, str | None]) -> None:
    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    LOG.info("a report every %gs into %s, keeping %d", every_seconds, out_dir, keep)
    while True:
        boundary = (math.floor(time.time() / every_seconds) + 1) * every_seconds
        if stopping.wait(max(0.0, boundary - time.time())):
            return
        stamp = datetime.fromtimestamp(boundary, UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            write_report(sources, boundary - every_seconds, boundary, step_seconds,
                         out_dir / f"{REPORT_PREFIX}{stamp}.html", slack)
        except OSError as error:
            LOG.error("report for %s not written: %s", stamp, error)
        prune(out_dir, keep)


def prune(out_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` reports (names sort by their period's end)."""
    reports = sorted(out_dir.glob(f"{REPORT_PREFIX}*.html"))
    for old in reports[:-keep]:
        old.unlink(missing_ok=True)

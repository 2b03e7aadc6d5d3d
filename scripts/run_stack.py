"""`make run`: the whole stack on this machine's loopback ports, until Ctrl-C.

Starts the exporter, the anomaly sidecar (anomaly_sidecar/examples/stack.yml), the remediator
(remediator/examples/stack.yml), Prometheus with the shipped rules, Alertmanager with the shipped
routing and a demo model endpoint that the exporter probes (scripts/demo_model.py), prints their
URLs and when each sidecar model starts scoring, and stops them all cleanly on Ctrl-C or SIGTERM.
State and logs go to ./.run/. Slack is used only when a webhook URL file is given
(--slack-webhook-url-file or $SLACK_WEBHOOK_URL_FILE). `--demo` (`make demo`) adds simulated GPUs
and an incident replayed until its alert reaches Slack (scripts/demo.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_sidecar.config import load_config
from anomaly_sidecar.first_score import first_scores
from remediator.report.summary import format_duration
from scripts.demo import DEMO_PORTS, running_demo
from scripts.stack import (
    DEFAULT_PORTS,
    DEFAULT_REMEDIATOR_CONFIG,
    DEFAULT_SIDECAR_CONFIG,
    Stack,
    StackError,
    StackOptions,
    check_ports_free,
)

DEMO_GPUS = 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="state and logs (default: ./.run)")
    for name, port in {**DEFAULT_PORTS, **DEMO_PORTS}.items():
        parser.add_argument(f"--{name}-port", type=int, default=port,
                            help=f"loopback port of the {name} (default: {port})")
    parser.add_argument("--sidecar-config", type=Path, default=DEFAULT_SIDECAR_CONFIG)
    parser.add_argument("--remediator-config", type=Path, default=DEFAULT_REMEDIATOR_CONFIG,
                        help="remediator config; its listen address, token and audit log are "
                             "set to the stack's, other paths in it must be absolute")
    parser.add_argument("--slack-webhook-url-file", type=Path,
                        default=os.environ.get("SLACK_WEBHOOK_URL_FILE") or None,
                        help="file holding the Slack incoming-webhook URL (never the URL itself)")
    parser.add_argument("--remediation-webhook-url", default=None,
                        help="receiver of critical alerts besides Slack, instead of the stack's "
                             "remediator (it gets no bearer token)")
    parser.add_argument("--grafana-url", default=None,
                        help="a Grafana with the shipped dashboards (grafana/) on this stack's "
                             "Prometheus: alert messages link to its dashboards; without it "
                             "they carry no dashboard link")
    parser.add_argument("--gpu-simulate", type=int, default=None,
                        help="serve N simulated GPUs (demo on a machine without GPUs; "
                             f"--demo: {DEMO_GPUS})")
    parser.add_argument("--gpu-simulate-faults", default=None, metavar="SPEC",
                        help="faults of the simulated GPUs, e.g. '0:xid=79,1:lost' (the "
                             "exporter's --gpu.simulate-faults; needs --gpu-simulate or --demo)")
    parser.add_argument("--demo", action="store_true",
                        help="simulated GPUs, a demo target and an incident replayed through "
                             "it until its alert reaches Slack (a local catcher that prints "
                             "it, unless --slack-webhook-url-file)")
    args = parser.parse_args(argv)
    if args.slack_webhook_url_file is not None and not args.slack_webhook_url_file.is_file():
        parser.error(f"--slack-webhook-url-file: {args.slack_webhook_url_file} is not a file")
    if args.gpu_simulate is None and args.demo:
        args.gpu_simulate = DEMO_GPUS
    if args.gpu_simulate_faults and not args.gpu_simulate:
        parser.error("--gpu-simulate-faults: needs --gpu-simulate N (or --demo)")
    return args


def exporter_args(args: argparse.Namespace) -> list[str]:
    """The exporter's simulated GPUs and their faults, if asked for."""
    if not args.gpu_simulate:
        return []
    faults = [f"--gpu.simulate-faults={args.gpu_simulate_faults}"] if args.gpu_simulate_faults \
        else []
    return [f"--gpu.simulate={args.gpu_simulate}", *faults]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
    demo_ports = {name: getattr(args, f"{name.replace('-', '_')}_port") for name in DEMO_PORTS}
    options = StackOptions(
        run_dir=args.run_dir,
        ports=ports,
        sidecar_config=args.sidecar_config,
        remediator_config=args.remediator_config,
        slack_url_file=args.slack_webhook_url_file,
        remediation_url=args.remediation_webhook_url,
        grafana_url=args.grafana_url,
        exporter_args=exporter_args(args),
    )
    stop_requested = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    with contextlib.ExitStack() as context:
        try:
            check_ports_free({**ports, **(demo_ports if args.demo else {})})
            demo = None
            if args.demo:
                demo = context.enter_context(running_demo(
                    args.run_dir, demo_ports, args.slack_webhook_url_file))
                options = demo.stack_options(options)
            stack = Stack(options)
            stack.start()
        except StackError as error:
            print(f"run_stack: {error}", file=sys.stderr)
            return 1
        try:
            print_urls(stack, args)
            print_first_scores(stack)
            if demo is not None:
                slack = "a local catcher, printed here" if demo.catcher else "yours"
                print(f"demo target   http://{demo.target.address}/metrics  (Slack: {slack})",
                      flush=True)
                demo.watch(stack)
            print(f"logs and state in {stack.run_dir}; Ctrl-C stops everything", flush=True)
            stop_requested.wait()
            print("\nstopping ...", flush=True)
        finally:
            stack.stop()
    print("stopped", flush=True)
    return 0


def print_urls(stack: Stack, args: argparse.Namespace) -> None:
    slack = (f"Slack via {args.slack_webhook_url_file}" if args.slack_webhook_url_file
             else "Slack: the demo's catcher" if args.demo
             else "Slack off (give --slack-webhook-url-file or $SLACK_WEBHOOK_URL_FILE)")
    prometheus, alertmanager = stack.url("prometheus"), stack.url("alertmanager")
    print(f"exporter      {stack.url('exporter')}/metrics\n"
          f"sidecar       {stack.url('sidecar')}/metrics\n"
          f"remediator    {stack.url('remediator')}/metrics  (audit log: "
          f"{stack.run_dir / 'remediator-audit.jsonl'})\n"
          f"prometheus    {prometheus}  (alerts: {prometheus_page(prometheus, 'alerts')}, "
          f"runbooks: {stack.runbooks_url()})\n"
          f"alertmanager  {alertmanager}/api/v2/alerts  ({slack}; "
          f"amtool --alertmanager.url={alertmanager} alert)\n"
          f"demo model    {stack.url('model')}/metrics  (slow it down: curl -X PUT -d "
          f"'{{\"latency_seconds\": 1}}' {stack.url('model')}/control)", flush=True)


def prometheus_page(base_url: str, page: str) -> str:
    """The URL of a page of Prometheus' web UI: Debian's Prometheus has only the classic UI
    (/classic/alerts; /alerts is a 404), the upstream one has /alerts."""
    try:
        if requests.get(f"{base_url}/{page}", timeout=5).status_code == 200:
            return f"{base_url}/{page}"
    except requests.RequestException:
        pass
    return f"{base_url}/classic/{page}"


def print_first_scores(stack: Stack) -> None:
    """When each sidecar model starts scoring a new series (anomaly_sidecar/first_score.py)."""
    config = load_config(stack.run_dir / "sidecar.yml")
    by_model: dict[str, list] = {}
    for first in first_scores(config):
        by_model.setdefault(first.model_alias, []).append(first)
    print(f"sidecar models score a new series within this long of its first sample "
          f"(from {stack.options.sidecar_config}):", flush=True)
    for model_alias, firsts in by_model.items():
        slowest = max(firsts, key=lambda first: first.seconds)
        queries = ", ".join(first.query_alias for first in firsts)
        fit = (f", a first fit tried every {format_duration(slowest.fit_retry_seconds)}"
               if slowest.fit_retry_seconds else "")
        print(f"  {model_alias:<16} {format_duration(slowest.seconds):>8}  on {queries}  "
              f"(first forecast within {format_duration(slowest.forecast_seconds)}, then "
              f"{format_duration(slowest.warm_up_seconds)} of warm-up{fit})", flush=True)


if __name__ == "__main__":
    sys.exit(main())

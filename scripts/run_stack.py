"""`make run`: the whole stack on this machine's loopback ports, until Ctrl-C.

Starts the exporter, the anomaly sidecar (anomaly_sidecar/examples/stack.yml), the remediator
(remediator/examples/stack.yml), Prometheus with the shipped rules, Alertmanager with the shipped
routing and a demo model endpoint that the exporter probes (scripts/demo_model.py), prints their
URLs, and stops them all cleanly on Ctrl-C or SIGTERM. State and logs go to ./.run/. Slack is
used only when a webhook URL file is given (--slack-webhook-url-file or $SLACK_WEBHOOK_URL_FILE).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.stack import (
    DEFAULT_PORTS,
    DEFAULT_REMEDIATOR_CONFIG,
    DEFAULT_SIDECAR_CONFIG,
    Stack,
    StackError,
    StackOptions,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="state and logs (default: ./.run)")
    for name, port in DEFAULT_PORTS.items():
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
    parser.add_argument("--gpu-simulate", type=int, default=0,
                        help="serve N simulated GPUs (demo on a machine without GPUs)")
    args = parser.parse_args(argv)
    if args.slack_webhook_url_file is not None and not args.slack_webhook_url_file.is_file():
        parser.error(f"--slack-webhook-url-file: {args.slack_webhook_url_file} is not a file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = StackOptions(
        run_dir=args.run_dir,
        ports={name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS},
        sidecar_config=args.sidecar_config,
        remediator_config=args.remediator_config,
        slack_url_file=args.slack_webhook_url_file,
        remediation_url=args.remediation_webhook_url,
        exporter_args=[f"--gpu.simulate={args.gpu_simulate}"] if args.gpu_simulate else [],
    )
    stop_requested = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    stack = Stack(options)
    try:
        stack.start()
    except StackError as error:
        print(f"run_stack: {error}", file=sys.stderr)
        return 1
    try:
        print_urls(stack, args)
        stop_requested.wait()
        print("\nstopping ...", flush=True)
    finally:
        stack.stop()
    print("stopped", flush=True)
    return 0


def print_urls(stack: Stack, args: argparse.Namespace) -> None:
    slack = (f"Slack via {args.slack_webhook_url_file}" if args.slack_webhook_url_file
             else "Slack off (give --slack-webhook-url-file or $SLACK_WEBHOOK_URL_FILE)")
    print(f"exporter      {stack.url('exporter')}/metrics\n"
          f"sidecar       {stack.url('sidecar')}/metrics\n"
          f"remediator    {stack.url('remediator')}/metrics  (audit log: "
          f"{stack.run_dir / 'remediator-audit.jsonl'})\n"
          f"prometheus    {stack.url('prometheus')}  (alerts: {stack.url('prometheus')}/alerts)\n"
          f"alertmanager  {stack.url('alertmanager')}  ({slack})\n"
          f"demo model    {stack.url('model')}/v1/predict  (slow it down: curl -X PUT -d "
          f"'{{\"latency_seconds\": 1}}' {stack.url('model')}/control)\n"
          f"logs and state in {stack.run_dir}; Ctrl-C stops everything", flush=True)


if __name__ == "__main__":
    sys.exit(main())

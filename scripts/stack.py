"""Start and stop the whole local stack: exporter, anomaly sidecar, remediator, Prometheus,
Alertmanager, and a demo model endpoint the exporter probes (scripts/demo_model.py).

`make run` (scripts/run_stack.py), the end-to-end tests and benchmarks/e2e_latency.py all go
through this one class, so the stack that is tested and measured is the one users start. Every
config is rendered from the shipped files (scripts/stack_config.py) into run_dir, every process
listens on 127.0.0.1 and logs to run_dir/<name>.log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.stack_config import (
    REPO_ROOT,
    alertmanager_config,
    dump_yaml,
    load_yaml,
    prometheus_config,
    remediator_config,
    rules_with_links,
    shipped_rules,
)

DEFAULT_PORTS = {"exporter": 10100, "sidecar": 10101, "remediator": 10102, "prometheus": 9090,
                 "alertmanager": 9093, "model": 10103}
DEFAULT_SIDECAR_CONFIG = REPO_ROOT / "anomaly_sidecar" / "examples" / "stack.yml"
DEFAULT_REMEDIATOR_CONFIG = REPO_ROOT / "remediator" / "examples" / "stack.yml"
# The exporter's probe targets and process group for the demo model (scripts/demo_model.py).
DEMO_EXPORTER_CONFIG = REPO_ROOT / "scripts" / "demo_exporter.yml"
DEMO_MODEL_JOB = "demo_model"  # scraped for the model server's own latency histogram
# Prometheus job name of each component (as in the shipped prometheus.yml).
JOBS = {"exporter": "aiinfra_exporter", "sidecar": "anomaly_sidecar",
        "remediator": "aiinfra_remediator", "prometheus": "prometheus",
        "alertmanager": "alertmanager"}
# Prometheus serves this folder at /user/ (--web.user-assets): the alerts' runbook links point
# at its runbooks.md, so they work on a stack without internet access and show the runbooks of
# the version that runs.
USER_ASSETS_DIR = REPO_ROOT / "prometheus"
_PR_SET_PDEATHSIG = 1


@dataclass
class StackOptions:
    """What differs between `make run`, a test and a benchmark; defaults are `make run`'s."""

    run_dir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    sidecar_config: Path = DEFAULT_SIDECAR_CONFIG
    remediator_config: Path = DEFAULT_REMEDIATOR_CONFIG
    slack_url_file: Path | None = None
    remediation_url: str | None = None
    """Where Alertmanager sends critical alerts besides Slack; None: this stack's remediator
    (with its bearer token; another URL gets no token)."""
    scrape_interval: str | None = None
    evaluation_interval: str | None = None
    route_timing: Mapping[str, str] = field(default_factory=dict)
    rule_files: Mapping[str, str] | None = None
    """File name -> rule YAML text to load instead of the shipped prometheus/rules/*.yml."""
    grafana_url: str | None = None
    """A Grafana with the shipped dashboards: the alerts' dashboard links point there; None:
    the alerts carry no dashboard link (no Grafana runs in this stack)."""
    extra_scrape_jobs: Mapping[str, str] = field(default_factory=dict)
    scrape_intervals: Mapping[str, str] = field(default_factory=dict)
    """Job name -> scrape interval of its own (e.g. an extra job scraped every second)."""
    exporter_args: Sequence[str] = ()
    prometheus_args: Sequence[str] = ()


@dataclass
class Component:
    name: str
    command: list[str]
    ready_url: str
    process: subprocess.Popen | None = None



class StackError(RuntimeError):
    """A component failed to start; the message carries the tail of its log."""


class Stack:
    """The running stack; use as a context manager (stops every child on exit)."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.run_dir = options.run_dir.resolve()
        self.components: list[Component] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.options.ports[name]}"

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until each is ready; StackError (and nothing left
        running) if one cannot start, a busy port before anything starts."""
        check_ports_free(self.options.ports)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.components = self._components()
        try:
            for component in self.components:
                self._launch(component)
            for component in self.components:
                self._wait_ready(component)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_seconds: float = 15.0) -> None:
        """SIGTERM every child (consumers first), then SIGKILL whatever outlives the timeout."""
        running = [c.process for c in reversed(self.components)
                   if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_seconds
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def log(self, name: str) -> str:
        return (self.run_dir / f"{name}.log").read_text(errors="replace")

    def _components(self) -> list[Component]:
        ports, run_dir = self.options.ports, self.run_dir
        address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        prometheus_yml = self._render_prometheus(address)
        token_file = self.remediator_token_file()
        own_remediator = self.options.remediation_url is None
        alertmanager_yml = dump_yaml(alertmanager_config(
            self.options.slack_url_file,
            f"{self.url('remediator')}/alerts" if own_remediator else self.options.remediation_url,
            self.options.route_timing, token_file if own_remediator else None),
            run_dir / "alertmanager.yml")
        sidecar_yml = self._render_sidecar(address)
        exporter_yml = self._render_exporter_config(address)
        remediator_yml = dump_yaml(remediator_config(
            self.options.remediator_config, address["remediator"], token_file,
            run_dir / "remediator-audit.jsonl", self.options.slack_url_file),
            run_dir / "remediator.yml")
        return [
            Component("model", [sys.executable, str(REPO_ROOT / "scripts" / "demo_model.py"),
                                f"--listen-address={address['model']}"],
                      f"{self.url('model')}/healthz"),
            Component("exporter", [console_script("aiinfra-exporter"),
                                   f"--web.listen-address={address['exporter']}",
                                   "--collector.probe", "--collector.process",
                                   f"--config.file={exporter_yml}",
                                   *self.options.exporter_args],
                      f"{self.url('exporter')}/metrics"),
            Component("remediator", [console_script("aiinfra-remediator"), "run", "--config",
                                     str(remediator_yml)],
                      f"{self.url('remediator')}/metrics"),
            Component("alertmanager", [
                require_binary("prometheus-alertmanager"), f"--config.file={alertmanager_yml}",
                f"--storage.path={run_dir / 'alertmanager-data'}",
                f"--web.listen-address={address['alertmanager']}",
                f"--web.external-url={self.url('alertmanager')}/", "--cluster.listen-address="],
                f"{self.url('alertmanager')}/-/ready"),
            Component("prometheus", [
                require_binary("prometheus"), f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
                f"--web.listen-address={address['prometheus']}",
                f"--web.external-url={self.url('prometheus')}/",
                f"--web.user-assets={USER_ASSETS_DIR}", "--web.enable-lifecycle",
                *self.options.prometheus_args],
                f"{self.url('prometheus')}/-/ready"),
            Component("sidecar", [console_script("anomaly-sidecar"), "run", "--config",
                                  str(sidecar_yml), "--state-dir", str(run_dir / "sidecar-state")],
                      f"{self.url('sidecar')}/metrics"),
        ]

    def remediator_token_file(self) -> Path:
        """run_dir/secrets/remediator_token: made once (random, mode 0600), then reused, so a
        restarted stack keeps the token Alertmanager and the remediator share."""
        path = self.run_dir / "secrets" / "remediator_token"
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        return path

    def runbooks_url(self) -> str:
        """Where this stack serves prometheus/runbooks.md (see USER_ASSETS_DIR)."""
        return f"{self.url('prometheus')}/user/runbooks.md"

    def _render_prometheus(self, address: Mapping[str, str]) -> Path:
        """prometheus.yml and its rule files (the shipped ones unless options.rule_files),
        with the alerts' links pointed at what this stack serves (rules_with_links)."""
        rules_dir = self.run_dir / "rules"
        shutil.rmtree(rules_dir, ignore_errors=True)
        rules_dir.mkdir(parents=True)
        rule_files = (shipped_rules() if self.options.rule_files is None
                      else self.options.rule_files)
        for file_name, text in rules_with_links(rule_files, self.runbooks_url(),
                                                self.options.grafana_url).items():
            (rules_dir / file_name).write_text(text)
        config = prometheus_config(
            {JOBS[name]: address[name] for name in JOBS}, address["alertmanager"],
            [str(rules_dir / "*.yml")], self.options.scrape_interval,
            self.options.evaluation_interval,
            extra_jobs={DEMO_MODEL_JOB: address["model"], **self.options.extra_scrape_jobs},
            job_intervals=self.options.scrape_intervals)
        return dump_yaml(config, self.run_dir / "prometheus.yml")

    def _render_exporter_config(self, address: Mapping[str, str]) -> Path:
        """The demo exporter config with its probes pointed at this stack's demo model."""
        config = load_yaml(DEMO_EXPORTER_CONFIG)
        shipped = f"127.0.0.1:{DEFAULT_PORTS['model']}"
        for target in config["probe"]["targets"]:
            target["url"] = target["url"].replace(shipped, address["model"])
        return dump_yaml(config, self.run_dir / "exporter.yml")

    def _render_sidecar(self, address: Mapping[str, str]) -> Path:
        """The sidecar config with its reader and listen address on this stack's ports."""
        config = load_yaml(self.options.sidecar_config)
        config["reader"]["url"] = self.url("prometheus")
        config.setdefault("server", {})["listen_address"] = address["sidecar"]
        return dump_yaml(config, self.run_dir / "sidecar.yml")

    def _launch(self, component: Component) -> None:
        with (self.run_dir / f"{component.name}.log").open("wb") as log_file:
            component.process = subprocess.Popen(
                component.command, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.run_dir,
                start_new_session=True, preexec_fn=_die_with_parent,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"})

    def _wait_ready(self, component: Component, timeout_seconds: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise StackError(f"{component.name} exited with {component.process.returncode}:"
                                 f"\n{self.log(component.name)[-3000:]}")
            try:
                if requests.get(component.ready_url, timeout=1.0).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise StackError(f"{component.name} not ready at {component.ready_url} after "
                         f"{timeout_seconds}s:\n{self.log(component.name)[-3000:]}")


def check_ports_free(ports: Mapping[str, int]) -> None:
    """StackError naming the component and port when a port is taken on 127.0.0.1: one line
    before anything starts, rather than a component dying with a page of its log."""
    for name, port in ports.items():
        with socket.socket() as probe:
            # as the servers do: a port whose old connections linger in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as error:
                raise StackError(f"port {port} of the {name} is in use on 127.0.0.1 "
                                 f"({error.strerror}): stop what holds it or choose another "
                                 f"with --{name}-port") from None


def console_script(name: str) -> str:
    """A console script of this project: beside the running interpreter (the venv), else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return require_binary(name)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} not found on PATH: run `make setup` (it installs the Debian "
                         "packages prometheus and prometheus-alertmanager)")
    return path


def _die_with_parent() -> None:
    """Children get SIGTERM if the stack's process dies without stopping them (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

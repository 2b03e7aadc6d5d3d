"""`make run`'s script (scripts/run_stack.py) as a user starts it, on free ports: shared by
tests/alerting/test_run_stack.py and benchmarks/first_run.py."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from scripts.demo import SLACK_FILE
from scripts.slack_catcher import CaughtRequest
from scripts.stack import DEFAULT_PORTS
from scripts.stack_config import REPO_ROOT
from tests.support.services import free_port, query, wait_for

RUN_STACK = REPO_ROOT / "scripts" / "run_stack.py"


@dataclass
class RunningStack:
    process: subprocess.Popen
    ports: dict[str, int]
    run_dir: Path
    output_path: Path
    started_at: float
    """time.monotonic() when the script was started."""
    first_scores: dict[tuple[str, str], float] = field(default_factory=dict)
    """(model_alias, query alias) -> seconds from start until Prometheus first held its
    anomaly_score (see poll_first_scores)."""

    @property
    def output(self) -> str:
        return self.output_path.read_text()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def poll_first_scores(self) -> dict[tuple[str, str], float]:
        """Note every (model, query) scoring in Prometheus now that was not seen before."""
        for result in query(self.url("prometheus"), "anomaly_score"):
            key = (result["metric"]["model_alias"], result["metric"]["for"])
            self.first_scores.setdefault(key, time.monotonic() - self.started_at)
        return self.first_scores

    def caught(self) -> list[tuple[float, CaughtRequest]]:
        """(unix time received, request) of every message the demo's Slack catcher logged."""
        path = self.run_dir / SLACK_FILE
        lines = path.read_text().splitlines() if path.exists() else []
        return [(record["received_at"], CaughtRequest(record["path"], record["body"], 0.0))
                for record in map(json.loads, lines)]


def start_run_stack(tmp_path: Path, *options: str,
                    names: Sequence[str] = tuple(DEFAULT_PORTS)) -> RunningStack:
    """run_stack.py on free ports, once it has printed its URLs (stopped by stop_run_stack)."""
    ports = {name: free_port() for name in names}
    command = [sys.executable, str(RUN_STACK), "--run-dir", str(tmp_path / "run"), *options,
               *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]]
    output_path = tmp_path / "run_stack.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    running = RunningStack(process, ports, tmp_path / "run", output_path, time.monotonic())
    try:
        wait_for(lambda: "Ctrl-C stops everything" in running.output
                 or process.poll() is not None, 90, message="run_stack printing its URLs")
        assert process.poll() is None, running.output
    except BaseException:
        process.kill()
        process.wait()
        raise
    return running


def stop_run_stack(running: RunningStack) -> None:
    """SIGINT, as Ctrl-C: exit 0 and every child and port gone."""
    children = psutil.Process(running.process.pid).children(recursive=True)
    assert len(children) >= len(DEFAULT_PORTS)
    try:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert running.output.rstrip().endswith("stopped")
    for port in running.ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"

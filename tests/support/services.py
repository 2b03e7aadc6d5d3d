"""Start the real Prometheus, Alertmanager and VictoriaMetrics binaries on 127.0.0.1.

Each service gets a free port and its own temp dir, and is stopped (and its output shown on
failure) when the test is done. These are the Debian packages' binaries, never mocks.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_idle_clients_get_no_threads(pid: int, address: str, clients: int, cap: int) -> None:
    """Open `clients` idle connections to host:port `address` and check that the server
    process runs at most `cap` more threads than before (a connection cap at work); the
    connections are closed again before returning."""
    host, port = address.rsplit(":", 1)
    baseline = _thread_count(pid)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(clients)]
    try:
        time.sleep(1.0)
        assert _thread_count(pid) <= baseline + cap
    finally:
        for connection in idle:
            connection.close()


def _thread_count(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not on PATH: run `make test` (it installs the Debian packages)")
    return path


def stop_process(process: subprocess.Popen, timeout_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def wait_http_ok(url: str, timeout_seconds: float = 20.0, process: subprocess.Popen | None = None,
                 **request_kwargs) -> None:
    """Poll url until it answers 200; fail early if the process behind it died."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} was ready")
        try:
            response = requests.get(url, timeout=1.0, **request_kwargs)
            if response.status_code == 200:
                return
            last_error = RuntimeError(f"HTTP {response.status_code}")
        except requests.RequestException as error:
            last_error = error
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_seconds}s: {last_error}")


@dataclass
class RunningService:
    """A started binary: its base URL, its process and the file holding its output."""

    name: str
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    workdir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


@contextlib.contextmanager
def run_binary(name: str, args: Sequence[str], workdir: Path, port: int, ready_path: str,
               timeout_seconds: float = 30.0) -> Iterator[RunningService]:
    """Start `name args...`, wait for http://127.0.0.1:port{ready_path}, stop it afterwards."""
    binary = require_binary(name)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([binary, *args], stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=workdir)
    service = RunningService(name, f"http://127.0.0.1:{port}", port, process, log_path, workdir)
    try:
        try:
            wait_http_ok(service.url + ready_path, timeout_seconds, process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{name} did not start: {error}\n{service.log()}") from error
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def prometheus(workdir: Path, config_yaml: str, rule_files: dict[str, str] | None = None,
               extra_args: Sequence[str] = ()) -> Iterator[RunningService]:
    """A real Prometheus with the given prometheus.yml text (rule files written beside it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for file_name, text in (rule_files or {}).items():
        (workdir / file_name).write_text(text)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(config_yaml)
    port = free_port()
    args = [
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--web.enable-remote-write-receiver",
        "--rules.alert.resend-delay=1s",
        *extra_args,
    ]
    with run_binary("prometheus", args, workdir, port, "/-/ready") as service:
        yield service


@contextlib.contextmanager
def alertmanager(workdir: Path, config_yaml: str, template_dir: Path | None = None,
                 extra_args: Sequence[str] = ()) -> Iterator[RunningService]:
    """A real Alertmanager (Debian's prometheus-alertmanager), gossip off, on loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(config_yaml)
    port = free_port()
    args = [
        f"--config.file={config_path}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *extra_args,
    ]
    with run_binary("prometheus-alertmanager", args, workdir, port, "/-/ready") as service:
        yield service


@contextlib.contextmanager
def victoria_metrics(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[RunningService]:
    """A real single-node VictoriaMetrics on loopback with its own data dir."""
    port = free_port()
    args = [
        f"-storageDataPath={workdir / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
        "-search.disableCache",
        *extra_args,
    ]
    with run_binary("victoria-metrics", args, workdir, port, "/health") as service:
        yield service


def scrape_config(jobs: dict[str, str], interval: str = "1s", evaluation_interval: str = "1s",
                  extra: str = "") -> str:
    """prometheus.yml text scraping each job name -> host:port target."""
    lines = [
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {evaluation_interval}",
        "scrape_configs:",
    ]
    for job_name, target in jobs.items():
        lines += [
            f"  - job_name: {job_name}",
            "    static_configs:",
            f"      - targets: ['{target}']",
        ]
    return "\n".join(lines) + "\n" + extra


def query(base_url: str, promql: str) -> list[dict]:
    """Instant query against any Prometheus-compatible API; returns data.result."""
    response = requests.get(f"{base_url}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for(predicate, timeout_seconds: float, interval_seconds: float = 0.5,
             message: str = "condition"):
    """Poll predicate() until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout_seconds}s (last: {value!r})")
        time.sleep(interval_seconds)

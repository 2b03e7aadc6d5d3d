"""Shared pieces of the sidecar tests: the README's minimal config, a sidecar subprocess, a
/metrics parser and a fault-injecting proxy in front of a real backend."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cramjam
import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from anomaly_sidecar.writers import prompb
from anomaly_sidecar.writers.remote_write import HEADERS as REMOTE_WRITE_HEADERS
from tests.support.services import (
    RunningService,
    free_port,
    prometheus,
    scrape_config,
    stop_process,
    victoria_metrics,
    wait_http_ok,
)

MINIMAL_CONFIG = """\
reader:
  url: http://127.0.0.1:9090
queries:
  cpu:
    expr: sum by (instance, mode) (rate(aiinfra_cpu_seconds_total{mode!="idle"}[1m]))
    step: 15s
models:
  cpu_zscore:
    type: zscore
    queries: [cpu]
schedulers:
  main:
    fit_every: 10m
    fit_window: 1d
    infer_every: 15s
    models: [cpu_zscore]
server:
  listen_address: 127.0.0.1:10101
"""
"""The issue's minimal configuration, verbatim (tests replace only URL and listen address)."""


def minimal_config(backend_url: str, listen_port: int) -> str:
    return (MINIMAL_CONFIG.replace("http://127.0.0.1:9090", backend_url)
            .replace("127.0.0.1:10101", f"127.0.0.1:{listen_port}"))


def remote_write(url: str, series: dict[str, list[tuple[float, float]]],
                 metric: str = "imported") -> None:
    """Store samples (past or future) in a Prometheus through its remote write receiver, with
    the sidecar's own encoder: each series gets labels {__name__: metric, series: name}."""
    body = prompb.encode_write_request(
        (prompb.encode_labels({"__name__": metric, "series": name}),
         prompb.encode_samples(np.array([value for _, value in points]),
                               np.array([round(stamp * 1000) for stamp, _ in points])))
        for name, points in series.items())
    requests.post(f"{url}/api/v1/write", data=cramjam.snappy.compress_raw(body).read(),
                  headers=REMOTE_WRITE_HEADERS, timeout=30).raise_for_status()


def samples(metrics_url: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called name on a /metrics page matching labels."""
    text = requests.get(metrics_url, timeout=5).text
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((sample.labels, sample.value))
    return found


def total(metrics_url: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(metrics_url, name, **labels))


@dataclass
class SidecarProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    scheme: str = "http"

    @property
    def metrics_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def scraping_backend(kind: str, workdir: Path, jobs: dict[str, str]) -> Iterator[RunningService]:
    """A real Prometheus or VictoriaMetrics scraping jobs (name -> host:port) every second."""
    config = scrape_config(jobs)
    if kind == "prometheus":
        with prometheus(workdir, config) as service:
            yield service
        return
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "scrape.yml").write_text(config)
    with victoria_metrics(workdir, [f"-promscrape.config={workdir / 'scrape.yml'}",
                                    "-promscrape.config.strictParse=false",
                                    "-search.latencyOffset=0s"]) as service:
        yield service


@contextlib.contextmanager
def sidecar_process(config_path: Path, port: int, state_dir: Path | None = None,
                    wait_ready: bool = True, args: Sequence[str] = (),
                    env: dict[str, str] | None = None, scheme: str = "http",
                    **ready_kwargs: Any) -> Iterator[SidecarProcess]:
    """`anomaly-sidecar run [args]` as a real subprocess; its output is kept beside the config.
    ready_kwargs (verify, auth) go to the readiness request."""
    command = [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", "run",
               "--config", str(config_path), *args]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    log_path = config_path.with_suffix(f".{time.monotonic_ns()}.log")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=None if env is None else {**os.environ, **env})
    sidecar = SidecarProcess(process, port, log_path, scheme)
    try:
        if wait_ready:
            try:
                wait_http_ok(sidecar.metrics_url, 60, process, **ready_kwargs)
            except (RuntimeError, TimeoutError) as error:
                raise RuntimeError(f"sidecar did not start: {error}\n{sidecar.log()}") from error
        yield sidecar
    finally:
        stop_process(process)


FORWARDED_POST_HEADERS = ("authorization", "content-encoding", "content-type",
                          "x-prometheus-remote-write-version")


class FaultProxy:
    """Forwards GET requests to a real backend, or fails them on demand: mode "ok", "error"
    (HTTP 503), "down" (connection closed without answer), "slow" (answers after delay),
    "body" (answers 200 with `body`, as a broken backend or a proxy's error page would) or
    "trickle" (forwards the answer one byte a second). POST requests (remote write) are
    forwarded in mode "ok" and fail as in "error" or "down" otherwise."""

    def __init__(self, upstream: str, slow_seconds: float = 3.0) -> None:
        self.upstream = upstream
        self.mode = "ok"
        self.failures_left = 0
        """While > 0, requests are answered 503 (and counted down), then forwarded again."""
        self.slow_seconds = slow_seconds
        self.body = b""
        self.requests_seen = 0
        self.last_headers: dict[str, str] = {}
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.requests_seen += 1
                proxy.last_headers = dict(self.headers.items())
                if proxy.mode == "down":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if proxy.failures_left > 0:
                    proxy.failures_left -= 1
                    self.send_error(503, "injected outage")
                    return
                if proxy.mode == "error":
                    self.send_error(503, "injected outage")
                    return
                if proxy.mode == "body":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(proxy.body)))
                    self.end_headers()
                    self.wfile.write(proxy.body)
                    return
                if proxy.mode == "slow":
                    time.sleep(proxy.slow_seconds)
                forwarded = {name: value for name, value in self.headers.items()
                             if name.lower() == "authorization"}
                answer = requests.get(proxy.upstream + self.path, headers=forwarded, timeout=30)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if proxy.mode == "trickle":
                    for byte in answer.content:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(1.0)
                    return
                self.wfile.write(answer.content)

            def do_POST(self) -> None:
                proxy.requests_seen += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if proxy.mode == "down":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if proxy.mode != "ok":
                    self.send_error(503, "injected outage")
                    return
                forwarded = {name: value for name, value in self.headers.items()
                             if name.lower() in FORWARDED_POST_HEADERS}
                answer = requests.post(proxy.upstream + self.path, data=body,
                                       headers=forwarded, timeout=30)
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

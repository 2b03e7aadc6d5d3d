"""Sharded sidecar replicas against one VictoriaMetrics on this machine (loopback): n = 1, 2, 4
real `anomaly-sidecar run --shard-index i --shard-count n` processes over the same 20,000
series, each remote-writing its scores into that VictoriaMetrics.

Run: .venv/bin/python benchmarks/sidecar_replicas.py [--series 20000] [--replicas 1 2 4]
     [--model composite] [--step 15s] [--history 90m] [--cycles 4]

Per n, on a fresh copy of the series (labels set="nN", so no replica reuses another run's
state): `--history` of every series is imported, the replicas start, then for `--cycles`
steps a new point of every series is imported at its own timestamp T as the clock passes T, as
a scrape would store it. Reported:
- cold start: from starting the replicas until VictoriaMetrics holds a score of every series
  at the newest imported point (the first inference reads and scores each series' history);
- series/s per replica: points scored per second of inference in the steady cycles
  (anomaly_sidecar_points_read_total over anomaly_sidecar_model_run_duration_seconds_sum, read
  included), and the sum over the replicas; ratios against n = 1 of the same run;
- freshness: from T until VictoriaMetrics answers a score at T for every series
  (count_over_time over (T - 1s, T]): the wait for the next inference (infer_every = step),
  the inference and the remote write included;
- each replica's resident memory at the end.
The replicas, VictoriaMetrics and this script share the machine's cores: on a 2-core machine
n = 4 cannot run faster than n = 2, so per-replica figures there measure sharing, not scale.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families
from sidecar_scale import import_series, synthetic_values

from anomaly_sidecar.durations import parse_duration
from tests.support.services import (
    free_port,
    stop_process,
    victoria_metrics,
    wait_http_ok,
)

CONFIG = """\
reader:
  url: {url}
  timeout: 5m
  max_points_per_request: 30000
queries:
  q:
    expr: bench_value{{set="{prefix}"}}
    step: {step}s
    data_range: {history}s
models:
  m:
    type: {model}
    queries: [q]
schedulers:
  s:
    fit_every: 1d
    fit_window: {history}s
    infer_every: {step}s
    models: [m]
server:
  listen_address: 127.0.0.1:{port}
writer:
  remote_write:
    url: {url}/api/v1/write
"""


def metric_totals(url: str) -> dict[str, float]:
    """name -> sum of its samples (labels summed over) on a /metrics page."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=30).text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def scored_series(url: str, prefix: str, stamp: float) -> int:
    """How many series have a score at `stamp` (a sample in (stamp - 1s, stamp]); 0 while
    VictoriaMetrics is too busy to answer."""
    response = requests.get(f"{url}/api/v1/query", timeout=60, params={
        "query": f'count(count_over_time(anomaly_score{{set="{prefix}"}}[1s]))',
        "time": f"{stamp:.3f}"})
    if response.status_code != 200:
        print(f"    VictoriaMetrics answered {response.status_code}: {response.text[:200]}",
              flush=True)
        return 0
    answer = response.json()["data"]["result"]
    return int(float(answer[0]["value"][1])) if answer else 0


def wait_scored(url: str, prefix: str, stamp: float, expected: int,
                timeout_seconds: float) -> None:
    """Until `expected` series have a score at `stamp` in VictoriaMetrics."""
    deadline = time.monotonic() + timeout_seconds
    while scored_series(url, prefix, stamp) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"scores at {stamp} missing after {timeout_seconds:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def replicas(workdir: Path, url: str, prefix: str, count: int, args: argparse.Namespace,
             step: float, history: float):
    processes = []
    try:
        for index in range(count):
            port = free_port()
            config = workdir / f"{prefix}-{index}.yml"
            config.write_text(CONFIG.format(url=url, prefix=prefix, step=step, history=history,
                                            model=args.model, port=port))
            log = (workdir / f"{prefix}-{index}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", "run",
                 "--config", str(config), "--shard-index", str(index), "--shard-count",
                 str(count)], stdout=log, stderr=subprocess.STDOUT)
            processes.append((process, f"http://127.0.0.1:{port}/metrics"))
        for process, metrics_url in processes:
            wait_http_ok(metrics_url, 120, process)
        yield processes
    finally:
        for process, _ in processes:
            stop_process(process, 60)


def run(url: str, workdir: Path, count: int, values: np.ndarray, args: argparse.Namespace,
        step: float, history: float) -> dict[str, float]:
    prefix = f"n{count}"
    n_series, n_points = values.shape
    end = math.floor(time.time() / step) * step
    import_series(url, prefix, values, end - step * (n_points - 1), step)
    started = time.monotonic()
    with replicas(workdir, url, prefix, count, args, step, history) as processes:
        wait_scored(url, prefix, end, int(np.isfinite(values[:, -1]).sum()), 1800)
        cold = time.monotonic() - started
        before = [metric_totals(metrics_url) for _, metrics_url in processes]
        freshness = []
        rng = np.random.default_rng(1)
        last = np.where(np.isfinite(values[:, -1:]), values[:, -1:], 50.0)
        stamp = end
        for _ in range(args.cycles):
            stamp = max(stamp + step, math.ceil(time.time() / step) * step)
            time.sleep(max(0.0, stamp - time.time()))
            import_series(url, prefix, last + rng.normal(0, 1, (n_series, 1)), stamp, step)
            wait_scored(url, prefix, stamp, n_series, 10 * step)
            freshness.append(time.time() - stamp)
        after = [metric_totals(metrics_url) for _, metrics_url in processes]
        memory = [resident_mib(process.pid) for process, _ in processes]
    rates = []
    for first, last in zip(before, after, strict=True):
        points = (last["anomaly_sidecar_points_read_total"]
                  - first["anomaly_sidecar_points_read_total"])
        seconds = (last["anomaly_sidecar_model_run_duration_seconds_sum"]
                   - first["anomaly_sidecar_model_run_duration_seconds_sum"])
        rates.append(points / seconds)
        dropped = last.get("anomaly_sidecar_remote_write_samples_dropped_total", 0)
        assert dropped == 0 and last.get("anomaly_sidecar_remote_write_samples_failed_total",
                                         0) == 0, "remote write lost samples"
    row = {"cold": cold, "per_replica": statistics.mean(rates), "total": sum(rates),
           "fresh_median": statistics.median(freshness), "fresh_max": max(freshness),
           "rss": statistics.mean(memory)}
    print(f"  n={count}: cold start {cold:6.1f} s | {row['per_replica']:8.0f} series/s per "
          f"replica, {row['total']:8.0f} in all | freshness median {row['fresh_median']:5.1f} s"
          f", max {row['fresh_max']:5.1f} s (step {step:g} s) | RSS {row['rss']:5.0f} MiB per "
          f"replica", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--model", default="composite")
    parser.add_argument("--step", default="15s")
    parser.add_argument("--history", default="90m",
                        help="history per series (the default model warms up for 1h)")
    parser.add_argument("--cycles", type=int, default=4)
    args = parser.parse_args()
    step, history = parse_duration(args.step), parse_duration(args.history)
    values = synthetic_values(args.series, round(history / step))
    print(f"{args.series} series, model {args.model}, step {step:g} s, {history:g} s of history "
          f"each, {args.cycles} steady cycles", flush=True)
    with tempfile.TemporaryDirectory() as workdir, victoria_metrics(
            Path(workdir), ["-search.latencyOffset=0s", "-search.maxQueryDuration=10m",
                            "-search.maxSamplesPerQuery=2000000000",
                            "-search.maxPointsPerTimeseries=100000",
                            "-search.maxUniqueTimeseries=1000000"]) as service:
        rows = {count: run(service.url, Path(workdir), count, values, args, step, history)
                for count in args.replicas}
    base = rows[args.replicas[0]]
    for count, row in rows.items():
        print(f"  n={count} vs n={args.replicas[0]}: per replica "
              f"{row['per_replica'] / base['per_replica']:.2f}x, in all "
              f"{row['total'] / base['total']:.2f}x, cold start {row['cold'] / base['cold']:.2f}x,"
              f" median freshness {row['fresh_median'] / base['fresh_median']:.2f}x")


if __name__ == "__main__":
    main()

"""Scale benchmark of the anomaly sidecar: 1,000 and 10,000 synthetic series served by a real
VictoriaMetrics at a 1-minute step, through the daemon's own scheduler (PromQL read included).

Run: .venv/bin/python benchmarks/sidecar_scale.py [--series 1000 10000] [--history 1d]
     [--models default zscore arima] [--cycles 3] [--statsmodels]

Per model and series count:
- cold start: the first inference of series never seen, which reads `--history` of each (the
  queries' data_range) and builds their state; also when the first block of series was
  published (scores appear block by block while the rest is still being scored);
- steady state: each further cycle, one new point per series is imported and the inference
  reads only the new points (median of `--cycles`), with the HTTP share;
- memory: the bytes of per-series state, the growth of this process' resident memory over
  the cold start (the series' state plus the read's working set) and the process' whole resident
  memory after it (run one model and one series count per command for a clean figure: memory a
  model freed is reused by the next).
`--statsmodels` adds the batched ARIMA estimator against statsmodels fitted per series: a
sample of series is fitted with statsmodels and the time per series is multiplied by the
number of series (fitting 10,000 one by one takes many minutes). BLAS is pinned to one thread
(before numpy loads): statsmodels' many small matrix calls otherwise slow down up to 20x on a
busy 2-core machine, which would flatter the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported after the thread settings above, which must precede numpy's first import.
import numpy as np  # noqa: E402
import requests  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from anomaly_sidecar.config import parse_config  # noqa: E402
from anomaly_sidecar.durations import parse_duration  # noqa: E402
from anomaly_sidecar.models._arima_batched import estimate as estimate_batched  # noqa: E402
from anomaly_sidecar.models.arima import ArimaParams, statsmodels_coefficients  # noqa: E402
from anomaly_sidecar.reader import PromReader  # noqa: E402
from anomaly_sidecar.scheduler import Job, SchedulerRunner  # noqa: E402
from anomaly_sidecar.self_metrics import SelfMetrics  # noqa: E402
from anomaly_sidecar.writers.pull import OutputCollector  # noqa: E402
from tests.support.services import victoria_metrics  # noqa: E402

STEP_SECONDS = 60
MODELS = {"zscore": {"type": "zscore"}, "mad": {"type": "mad"},
          "arima": {"type": "arima", "order": [1, 1, 1]}, "default": {"type": "composite"}}
DEFAULT_MODELS = ["default", "zscore", "arima"]
STATSMODELS_SAMPLE = 50
READ_SECONDS = "anomaly_sidecar_reader_request_duration_seconds_sum"
IMPORT_BATCH = 1000


def synthetic_values(n_series: int, n_points: int, seed: int = 0) -> np.ndarray:
    """CPU-like series: level, daily cycle, AR(1) noise, a few NaN gaps."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(n_points)
    levels = rng.uniform(20, 80, (n_series, 1))
    noise = rng.normal(0, 1, (n_series, n_points))
    for t in range(1, n_points):
        noise[:, t] += 0.6 * noise[:, t - 1]
    values = levels + 10 * np.sin(2 * np.pi * (minutes / 1440 + rng.random((n_series, 1))))
    values += noise
    values[rng.random(values.shape) < 0.001] = np.nan
    return np.round(values, 3)


def import_series(url: str, prefix: str, values: np.ndarray, first_stamp: float,
                  step_seconds: float = STEP_SECONDS) -> None:
    """Bulk-load columns starting at first_stamp into VictoriaMetrics (/api/v1/import)."""
    stamps_ms = [int((first_stamp + step_seconds * i) * 1000) for i in range(values.shape[1])]
    for start in range(0, values.shape[0], IMPORT_BATCH):
        lines = []
        for row in range(start, min(start + IMPORT_BATCH, values.shape[0])):
            finite = np.isfinite(values[row])
            lines.append(json.dumps({
                "metric": {"__name__": "bench_value", "set": prefix, "series": str(row)},
                "values": values[row][finite].tolist(),
                "timestamps": [stamp for stamp, ok in zip(stamps_ms, finite, strict=True) if ok],
            }))
        requests.post(f"{url}/api/v1/import", data="\n".join(lines), timeout=300
                      ).raise_for_status()
    requests.get(f"{url}/internal/force_flush", timeout=60)


def resident_bytes() -> int:
    """This process' resident memory (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RecordingOutputs(OutputCollector):
    """Remembers when the first series were published."""

    def __init__(self) -> None:
        super().__init__()
        self.first_published: float | None = None

    def update(self, *args, **kwargs) -> int:
        if self.first_published is None:
            self.first_published = time.perf_counter()
        return super().update(*args, **kwargs)


def run_model(url: str, prefix: str, alias: str, history: str, values: np.ndarray,
              end: float, cycles: int) -> dict[str, float]:
    """Cold start and steady-state cycles of one model over every series of `prefix`."""
    n_series = values.shape[0]
    raw = {"reader": {"url": url, "timeout": "10m", "max_points_per_request": 30000},
           "queries": {"q": {"expr": f'bench_value{{set="{prefix}"}}',
                             "step": f"{STEP_SECONDS}s", "data_range": history}},
           "models": {alias: {**MODELS[alias], "queries": ["q"]}},
           "schedulers": {"s": {"fit_every": "1h", "fit_window": history,
                                "infer_every": "1m"}}}
    config = parse_config(raw, "benchmark")
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    outputs = RecordingOutputs()
    now = [end + 1]
    reader = PromReader(config.reader, on_request=metrics.record_request)
    runner = SchedulerRunner(config.schedulers["s"], [], reader, [outputs], metrics,
                             clock=lambda: now[0])
    job = Job(config.schedulers["s"], config.models[alias], "q", config.queries["q"], None)
    rss_before = resident_bytes()
    started = time.perf_counter()
    if job.learns:
        assert runner.fit(job), f"fit of {alias} failed"
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert runner.infer(job), f"cold start of {alias} failed"
    cold_seconds = time.perf_counter() - started
    first_published = (outputs.first_published or time.perf_counter()) - started
    rss_after = resident_bytes()
    rss_growth = rss_after - rss_before
    state_bytes = sum(array.nbytes for part in job.detector.state.values()
                      for array in part.values())
    steady, http = [], []
    rng = np.random.default_rng(1)
    for cycle in range(1, cycles + 1):
        stamp = end + cycle * STEP_SECONDS
        import_series(url, prefix, values[:, -1:] + rng.normal(0, 1, (n_series, 1)), stamp)
        now[0] = stamp + 1
        read_before = registry.get_sample_value(READ_SECONDS)
        started = time.perf_counter()
        assert runner.infer(job), f"inference of {alias} failed"
        steady.append(time.perf_counter() - started)
        http.append(registry.get_sample_value(READ_SECONDS) - read_before)
    published = sum(1 for metric in outputs.collect() if metric.name == "anomaly_score"
                    for sample in metric.samples)
    middle = steady.index(statistics.median(steady)) if cycles % 2 else 0
    row = {"fit": fit_seconds, "cold": cold_seconds, "first_published": first_published,
           "steady": steady[middle], "steady_http": http[middle],
           "state_kib_per_series": state_bytes / n_series / 1024,
           "rss_growth_mib": rss_growth / 2 ** 20, "rss_mib": rss_after / 2 ** 20,
           "published": published}
    print(f"  {alias:8s} fit {fit_seconds:6.2f} s | cold start {cold_seconds:6.1f} s "
          f"(first scores after {first_published:5.1f} s) | steady cycle {row['steady']:5.2f} s "
          f"({n_series / row['steady']:7.0f} series/s, {row['steady_http']:4.2f} s HTTP) | "
          f"state {row['state_kib_per_series']:5.1f} KiB/series, RSS +{row['rss_growth_mib']:6.0f} "
          f"MiB (process {row['rss_mib']:6.0f} MiB) | scored {published}", flush=True)
    return row


def statsmodels_ratio(values: np.ndarray) -> None:
    """statsmodels on a sample, extrapolated to all series, against the batched estimation
    on the same in-memory values."""
    n_series = values.shape[0]
    order = (1, 1, 1)
    fit_values = values[:, -ArimaParams().max_fit_points:]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statsmodels_coefficients(fit_values[:STATSMODELS_SAMPLE], order)
    per_series = (time.perf_counter() - started) / min(STATSMODELS_SAMPLE, n_series)
    estimate = per_series * n_series
    started = time.perf_counter()
    estimate_batched(fit_values, order)
    estimation_seconds = time.perf_counter() - started
    print(f"  statsmodels ARIMA{order}: {per_series * 1000:.1f} ms/series (sample of "
          f"{STATSMODELS_SAMPLE}) -> ~{estimate:.0f} s for {n_series} series (extrapolated); "
          f"batched estimation {estimation_seconds:.2f} s -> ratio "
          f"{estimate / estimation_seconds:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--history", default="1d",
                        help="history per series read at the cold start (1-minute step)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=DEFAULT_MODELS)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--statsmodels", action="store_true")
    args = parser.parse_args()
    n_points = round(parse_duration(args.history) / STEP_SECONDS)
    end = math.floor(time.time() / STEP_SECONDS) * STEP_SECONDS - 3600
    with tempfile.TemporaryDirectory() as workdir, victoria_metrics(
            Path(workdir), ["-search.latencyOffset=0s", "-search.maxQueryDuration=10m",
                            "-search.maxSamplesPerQuery=2000000000",
                            "-search.maxPointsPerTimeseries=100000"]) as service:
        for n_series in args.series:
            values = synthetic_values(n_series, n_points)
            print(f"{n_series} series x {n_points} points of history:", flush=True)
            for alias in args.models:
                # each model reads its own copy of the series, so the points of its steady
                # cycles are new to it
                prefix = f"s{n_series}-{alias}"
                import_series(service.url, prefix, values, end - STEP_SECONDS * (n_points - 1))
                run_model(service.url, prefix, alias, args.history, values, end, args.cycles)
            if args.statsmodels:
                statsmodels_ratio(values)


if __name__ == "__main__":
    main()

"""Scale benchmark of the anomaly sidecar: 1,000 and 10,000 synthetic series served by a real
VictoriaMetrics, one fit and one inference cycle of each model through the daemon's own code
path (PromQL read included), and the batched ARIMA against statsmodels fitted per series.

Run: .venv/bin/python benchmarks/sidecar_scale.py [--series 1000 10000] [--fit-points 720]
     [--models zscore mad arima default]

The statsmodels figure is extrapolated: fitting 10,000 series one by one takes many minutes,
so a sample of series is fitted (and forecast) with statsmodels and the time per series is
multiplied by the number of series. The ratio is that estimate over the batched fit time.
BLAS is pinned to one thread (before numpy loads): statsmodels' many small matrix calls
otherwise slow down up to 20x on a busy 2-core machine, which would flatter the ratio; the
batched estimator measured the same with one thread or two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from anomaly_sidecar.models._arima_batched import estimate as estimate_batched  # noqa: E402
from anomaly_sidecar.models.arima import ArimaModel, statsmodels_coefficients  # noqa: E402
from anomaly_sidecar.reader import PromReader  # noqa: E402
from anomaly_sidecar.scheduler import Job, SchedulerRunner  # noqa: E402
from anomaly_sidecar.writer import OutputCollector, SelfMetrics  # noqa: E402
from tests.support.services import victoria_metrics  # noqa: E402

STEP_SECONDS = 60
MODELS = {"zscore": {"type": "zscore"}, "mad": {"type": "mad"},
          "arima": {"type": "arima", "order": [1, 1, 1]}, "default": {"type": "composite"}}
DEFAULT_MODELS = ["zscore", "mad", "arima"]
STATSMODELS_SAMPLE = 50
READ_SECONDS = "anomaly_sidecar_reader_request_duration_seconds_sum"


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


def import_series(url: str, prefix: str, values: np.ndarray, end: float) -> None:
    """Bulk-load into VictoriaMetrics with /api/v1/import (JSON lines, 1,000 series a post)."""
    stamps_ms = [int((end - STEP_SECONDS * (values.shape[1] - 1 - i)) * 1000)
                 for i in range(values.shape[1])]
    for start in range(0, values.shape[0], 1000):
        lines = []
        for row in range(start, min(start + 1000, values.shape[0])):
            finite = np.isfinite(values[row])
            lines.append(json.dumps({
                "metric": {"__name__": "bench_value", "set": prefix, "series": str(row)},
                "values": values[row][finite].tolist(),
                "timestamps": [stamp for stamp, ok in zip(stamps_ms, finite, strict=True) if ok],
            }))
        requests.post(f"{url}/api/v1/import", data="\n".join(lines), timeout=300
                      ).raise_for_status()
    requests.get(f"{url}/internal/force_flush", timeout=60)


def sidecar_config(url: str, prefix: str, fit_points: int, models: list[str]) -> dict:
    return {
        "reader": {"url": url, "timeout": "5m", "max_points_per_request": 20000},
        "queries": {"q": {"expr": f'bench_value{{set="{prefix}"}}',
                          "step": f"{STEP_SECONDS}s"}},
        "models": {alias: {**MODELS[alias], "queries": ["q"]} for alias in models},
        "schedulers": {"s": {"fit_every": "1h", "fit_window": f"{fit_points * STEP_SECONDS}s",
                             "infer_every": "1m"}},
    }


def run_cycles(url: str, prefix: str, n_series: int, fit_points: int, end: float,
               models: list[str]) -> dict[str, float]:
    """One fit and one inference per model through SchedulerRunner, printed per model; the fit
    seconds of each, which the statsmodels comparison needs."""
    config = parse_config(sidecar_config(url, prefix, fit_points, models), "benchmark")
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    outputs = OutputCollector()
    scheduler = config.schedulers["s"]
    reader = PromReader(config.reader, on_request=metrics.record_request)
    runner = SchedulerRunner(scheduler, [], reader, outputs, metrics, clock=lambda: end + 1)
    fit_seconds = {}
    for alias in models:
        job = Job(scheduler, config.models[alias], "q", config.queries["q"], None)
        started = time.perf_counter()
        if job.learns:
            assert runner.fit(job), f"fit of {alias} failed"
        fit_seconds[alias] = time.perf_counter() - started
        read_before = registry.get_sample_value(READ_SECONDS)
        started = time.perf_counter()
        assert runner.infer(job), f"inference of {alias} failed"
        infer_seconds = time.perf_counter() - started
        read_seconds = registry.get_sample_value(READ_SECONDS) - read_before
        published = sum(1 for metric in outputs.collect() if metric.name == "anomaly_score"
                        for sample in metric.samples if sample.labels["model_alias"] == alias)
        print(f"  {alias:10s} fit {fit_seconds[alias]:7.2f} s "
              f"({n_series / max(fit_seconds[alias], 1e-9):9.0f} series/s)"
              f"   inference {infer_seconds:6.2f} s ({n_series / infer_seconds:9.0f} series/s,"
              f" {read_seconds:5.2f} s of it in HTTP requests)   scored {published}", flush=True)
    return fit_seconds


def statsmodels_ratio(values: np.ndarray, batched_fit_seconds: float) -> None:
    """Time statsmodels on a sample, extrapolate to all series, compare with the batched fit:
    once as the daemon's whole fit (PromQL read included), once estimation alone on the same
    in-memory values."""
    n_series = values.shape[0]
    order = (1, 1, 1)
    fit_values = values[:, -ArimaModel.Params().max_fit_points:]
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
          f"{STATSMODELS_SAMPLE}) -> ~{estimate:.0f} s for {n_series} series (extrapolated)")
    print(f"  batched ARIMA{order}: estimation {estimation_seconds:.2f} s -> ratio "
          f"{estimate / estimation_seconds:.0f}x; whole fit incl. PromQL read "
          f"{batched_fit_seconds:.2f} s -> ratio {estimate / batched_fit_seconds:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--fit-points", type=int, default=720,
                        help="points per series in the fit window (1-minute step)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=DEFAULT_MODELS)
    args = parser.parse_args()
    end = math.floor(time.time() / STEP_SECONDS) * STEP_SECONDS - STEP_SECONDS
    with tempfile.TemporaryDirectory() as workdir, victoria_metrics(
            Path(workdir), ["-search.latencyOffset=0s", "-search.maxQueryDuration=10m",
                            "-search.maxSamplesPerQuery=2000000000"]) as service:
        for n_series in args.series:
            values = synthetic_values(n_series, args.fit_points)
            started = time.perf_counter()
            import_series(service.url, f"s{n_series}", values, end)
            print(f"{n_series} series x {args.fit_points} points "
                  f"(imported in {time.perf_counter() - started:.1f} s):")
            fit_seconds = run_cycles(service.url, f"s{n_series}", n_series, args.fit_points,
                                     end, args.models)
            if "arima" in fit_seconds:
                statsmodels_ratio(values, fit_seconds["arima"])


if __name__ == "__main__":
    main()

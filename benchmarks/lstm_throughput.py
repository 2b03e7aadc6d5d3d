"""LSTM fit and batched-inference throughput, with baselines measured in the same run.

    python3 benchmarks/lstm_throughput.py            # Keras' default backend (tensorflow here)
    KERAS_BACKEND=torch python3 benchmarks/lstm_throughput.py   # e.g. a GPU box with PyTorch

For 1k and 10k windows: the time of LstmModel.fit (default parameters, 1-minute step), of
LstmModel.advance by one point for every series (the sidecar's inference path: one batched
forward pass over every series' window), of the raw compiled call on the same windows, and of
two baselines: Keras' generic model.predict (its own batching loop) and a numpy last-value
forecast. Runs from the repo root without installing.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anomaly_sidecar.models.base import SeriesBatch
from anomaly_sidecar.models.lstm import LstmModel, LstmParams, compute_device

WINDOW_COUNTS = (1_000, 10_000)
STEP_SECONDS = 60.0
SERIES_PER_FIT = 10
REPEATS = 5


def sine_batch(n_series: int, n_points: int, seed: int = 0) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    steps = np.arange(n_points)
    phases = rng.uniform(0, 2 * np.pi, (n_series, 1))
    values = 50 + 10 * np.sin(2 * np.pi * steps / 60 + phases) \
        + rng.normal(0, 0.5, (n_series, n_points))
    keys = [(("series", str(i)),) for i in range(n_series)]
    return SeriesBatch(keys, steps.astype(float) * STEP_SECONDS, values)


def median_seconds(action: Callable[[], object]) -> float:
    action()  # warm-up: tracing / first-call allocation are not throughput
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(params: LstmParams, n_windows: int) -> None:
    """Fit on n_windows windows (10 series), then time inference over n_windows series with
    one new point each (n_windows windows in one pass) and print one table row."""
    model = LstmModel(params, STEP_SECONDS)
    window = model.window_points
    fit_batch = sine_batch(SERIES_PER_FIT, n_windows // SERIES_PER_FIT + window + 1)
    started = time.perf_counter()
    model.fit(fit_batch)
    fit_seconds = time.perf_counter() - started
    infer_batch = sine_batch(n_windows, window + 2, seed=1)
    model.fit(infer_batch)  # normalisation statistics for every series scored below
    history, newest = infer_batch.values[:, 1:window + 1], infer_batch.values[:, window + 1:]
    network = model._networks["shared"]
    windows = np.ascontiguousarray(history[..., None].astype("float32"))

    def advance_one_point() -> None:
        state = model.new_state(n_windows)
        state["window"] = history.copy()
        model.advance(state, infer_batch.keys, infer_batch.timestamps[window + 1:], newest)

    predict_s = median_seconds(advance_one_point)
    compiled_s = median_seconds(lambda: network.predict_on_batch(windows))
    keras_predict_s = median_seconds(
        lambda: network.predict(windows, batch_size=params.batch_size, verbose=0))
    numpy_s = median_seconds(lambda: infer_batch.values[:, -2].copy())
    print(f"{n_windows:>8} {fit_seconds:>8.2f} {predict_s * 1e3:>11.1f} "
          f"{compiled_s * 1e3:>12.1f} {keras_predict_s * 1e3:>17.1f} "
          f"{numpy_s * 1e3:>14.3f} {predict_s / compiled_s:>17.2f} "
          f"{keras_predict_s / compiled_s:>23.2f}", flush=True)


def main() -> None:
    params = LstmParams()
    print(f"lstm_throughput: {compute_device()}, keras backend "
          f"{os.environ.get('KERAS_BACKEND', 'tensorflow (default)')}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"params: window={params.window:.0f}s at a {STEP_SECONDS:.0f}s step, "
          f"units={params.units} layers={params.layers} "
          f"epochs={params.epochs} batch_size={params.batch_size}")
    print(f"{'windows':>8} {'fit_s':>8} {'predict_ms':>11} {'compiled_ms':>12} "
          f"{'keras.predict_ms':>17} {'numpy_last_ms':>14} {'predict/compiled':>17} "
          f"{'keras.predict/compiled':>23}")
    for n_windows in WINDOW_COUNTS:
        measure(params, n_windows)

if __name__ == "__main__":
    main()

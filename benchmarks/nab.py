"""NAB benchmark: every model, every file, through the backtest code path the CLI uses.

    python3 benchmarks/nab.py [--nab-root ../shared/datasets/nab] [--models default,zscore]
                              [--files Tweets,art_] [--workers 2]

Each file is backtested walk-forward (strictly causal) with the model's shipped defaults; the
anomaly_score s is mapped to NAB's [0, 1] by s / (1 + s) (s = 1 -> 0.5, so threshold 0.5 is the
shipped alarm threshold) and scored by anomaly_sidecar.nab_score (SCORING.md). Printed per model:
the three profiles with NAB's corpus-wide swept threshold (comparable with the scoreboard), the
standard score at the shipped threshold (anomaly_score >= 1), and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from anomaly_sidecar import nab_score  # noqa: E402
from anomaly_sidecar.backtest import Cadence, read_csv, run_backtest  # noqa: E402
from anomaly_sidecar.backtest_cli import BacktestSetup, resolve_setup  # noqa: E402
from anomaly_sidecar.config import parse_config  # noqa: E402

SHIPPED_THRESHOLD = 0.5  # nab_value(anomaly_score = 1)
BASELINE_MODELS = ("zscore", "mad", "arima", "lstm")
# The LSTM trains a network per refit; refitting it daily over 365k rows would take hours on
# 2 cores, so the benchmark refits it weekly (documented in the README next to its figure).
BENCHMARK_FIT_EVERY_SECONDS = {"lstm": 7 * 86400.0}
PUBLISHED = {"ARTime": 74.9, "Numenta HTM": 70.1, "CAD OSE": 69.9, "Random Cut Forest": 51.7,
             "Windowed Gaussian": 39.6}


def model_setup(name: str) -> BacktestSetup:
    """'default' is the shipped default model; any other name is that model type with its own
    defaults, run at the default configuration's refit cadence."""
    default = resolve_setup(None, None)
    if name == "default":
        return default
    raw = {"reader": {"url": "http://localhost:9090"}, "queries": {},
           "models": {name: {"type": name}}, "schedulers": {}}
    config = parse_config(raw, f"benchmark model {name}")
    return BacktestSetup(config.models[name],
                         BENCHMARK_FIT_EVERY_SECONDS.get(name, default.fit_every_seconds),
                         default.fit_window_seconds, config.reader)


def backtest_file(setup: BacktestSetup, path: Path) -> np.ndarray:
    """The anomaly_score column of one file's backtest (runs in a worker process)."""
    series = read_csv(path)
    cadence = Cadence.from_seconds(series.seconds, setup.fit_every_seconds,
                                   setup.fit_window_seconds, setup.model.min_samples)
    return run_backtest(setup.model, series, cadence).anomaly_score


def load_truths(nab_root: Path, files: list[str]) -> dict[str, dict[str, nab_score.FileTruth]]:
    """FileTruth per profile and file."""
    windows = json.loads((nab_root / "labels" / "combined_windows.json").read_text())
    truths: dict[str, dict[str, nab_score.FileTruth]] = {name: {} for name in nab_score.PROFILES}
    for name in files:
        series = read_csv(nab_root / "data" / name)
        rows = nab_score.window_rows(series.labels, windows[name])
        for profile_name, profile in nab_score.PROFILES.items():
            truths[profile_name][name] = nab_score.file_truth(len(series.labels), rows, profile)
    return truths


def score_model(truths: dict[str, dict[str, nab_score.FileTruth]], files: list[str],
                scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Normalised swept scores for the three profiles and the standard one at threshold 0.5."""
    mapped = [nab_score.nab_value(scores[name]) for name in files]
    result = {}
    for profile_name, profile in nab_score.PROFILES.items():
        file_truths = [truths[profile_name][name] for name in files]
        best = nab_score.sweep(file_truths, mapped, profile)
        result[profile_name] = nab_score.normalise(best.score, file_truths, profile)
        result[f"{profile_name}_threshold"] = best.threshold
    standard = nab_score.PROFILES["standard"]
    file_truths = [truths["standard"][name] for name in files]
    fixed = sum(nab_score.score_at_threshold(truth, values, SHIPPED_THRESHOLD, standard)
                for truth, values in zip(file_truths, mapped, strict=True))
    result["standard_fixed"] = nab_score.normalise(fixed, file_truths, standard)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nab-root", type=Path, default=REPO_ROOT.parent / "shared" / "datasets"
                        / "nab", help="NAB corpus (data/, labels/); never copied into the repo")
    parser.add_argument("--models", default=",".join(("default", *BASELINE_MODELS)),
                        help="comma-separated: default (the shipped default), " +
                        ", ".join(BASELINE_MODELS))
    parser.add_argument("--files", default="",
                        help="comma-separated substrings; only matching files (quick runs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    files = sorted(str(path.relative_to(args.nab_root / "data"))
                   for path in (args.nab_root / "data").glob("*/*.csv"))
    if args.files:
        files = [name for name in files if any(part in name for part in args.files.split(","))]
    if not files:
        sys.exit(f"no NAB files under {args.nab_root / 'data'} match {args.files!r}")
    truths = load_truths(args.nab_root, files)
    print(f"NAB: {len(files)} files, {args.workers} workers, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}", flush=True)
    header = (f"{'model':<10} {'standard':>9} {'low_FP':>8} {'low_FN':>8} "
              f"{'std@s>=1':>9} {'time_s':>8}")
    print(header, flush=True)
    figures = {}
    for name in args.models.split(","):
        setup = model_setup(name)
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            columns = pool.map(backtest_file, [setup] * len(files),
                               [args.nab_root / "data" / file for file in files])
            scores = dict(zip(files, columns, strict=True))
        elapsed = time.perf_counter() - started
        figures[name] = {**score_model(truths, files, scores), "seconds": elapsed}
        row = figures[name]
        print(f"{name:<10} {row['standard']:>9.1f} {row['reward_low_FP_rate']:>8.1f} "
              f"{row['reward_low_FN_rate']:>8.1f} {row['standard_fixed']:>9.1f} "
              f"{elapsed:>8.1f}", flush=True)
    print("published (standard, swept): " +
          ", ".join(f"{detector} {value}" for detector, value in PUBLISHED.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

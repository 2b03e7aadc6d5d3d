"""Walk-forward backtest: causal at every point, 1:1 rows, the CLI, plots and bad input."""

import csv
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from anomaly_sidecar import backtest, detector
from anomaly_sidecar.backtest import BacktestInputError, Cadence, Series, read_csv, run_backtest
from anomaly_sidecar.backtest_cli import backtest_command, resolve_setup
from anomaly_sidecar.cli import main
from anomaly_sidecar.config import parse_config
from anomaly_sidecar.models.base import Model, ModelParams, Residuals, SeriesBatch
from tests.support.services import victoria_metrics

STEP_SECONDS = 300


def model_config(section: dict):
    raw = {"reader": {"url": "http://localhost:9090"}, "queries": {}, "schedulers": {},
           "models": {"m": section}}
    return parse_config(raw, "test").models["m"]


def noisy_daily(n_points: int, spike_at: int | None = None, seed: int = 1) -> Series:
    rng = np.random.default_rng(seed)
    steps = np.arange(n_points)
    values = 50 + 10 * np.sin(2 * np.pi * steps / 288) + rng.normal(0, 1, n_points)
    if spike_at is not None:
        values[spike_at] += 60
    seconds = 1.4e9 + STEP_SECONDS * steps.astype(float)
    return Series([str(int(s)) for s in seconds], seconds, values)


def truncated(series: Series, n_points: int) -> Series:
    return Series(series.labels[:n_points], series.seconds[:n_points], series.values[:n_points])


CAUSALITY_MODELS = [
    {"type": "composite"},
    {"type": "zscore"},
    {"type": "mad", "window": "2h30m"},
    {"type": "arima"},
    {"type": "lstm", "window": "40m", "units": 4, "epochs": 1},
]


@pytest.mark.parametrize("section", CAUSALITY_MODELS, ids=lambda s: s["type"])
def test_scores_of_first_points_do_not_depend_on_later_points(section):
    """With refits in between (for the models that learn), a backtest of the first n points
    scores them exactly as the backtest of the whole series does."""
    series = noisy_daily(1500, spike_at=1000)
    cadence = Cadence(fit_every=400, fit_window=800, first_fit=100)
    full = run_backtest(model_config(section), series, cadence)
    for n_points in (700, 1001, 1300):
        partial = run_backtest(model_config(section), truncated(series, n_points), cadence)
        # The LSTM's float32 forward pass rounds differently for a different batch size (the
        # truncated last chunk) in the last bits; a look at the future would differ by far more.
        tolerance = 1e-6 if section["type"] == "lstm" else 0.0
        np.testing.assert_allclose(partial.anomaly_score, full.anomaly_score[:n_points],
                                   rtol=tolerance, atol=0)
        np.testing.assert_allclose(partial.yhat, full.yhat[:n_points], rtol=tolerance, atol=0)
    assert np.isfinite(full.anomaly_score[1000])
    assert full.anomaly_score[1000] > 1


class SpyModel(Model):
    """Records what the backtest shows a learning model, to check no call sees a later
    point."""

    type_name = "spy"
    Params = ModelParams
    learns = True
    calls: ClassVar[list] = []

    @property
    def fit_seconds(self) -> float:
        return 150 * STEP_SECONDS

    @property
    def history_seconds(self) -> float:
        return STEP_SECONDS

    def fit(self, batch: SeriesBatch) -> None:
        SpyModel.calls.append(("fit", batch.timestamps[-1], len(batch.timestamps)))

    def new_state(self, n_series: int) -> dict:
        return {}

    def advance(self, state, keys, timestamps, values) -> Residuals:
        SpyModel.calls.append(("advance", timestamps[0], timestamps[-1]))
        nothing = np.full(values.shape, np.nan)
        return Residuals(nothing, nothing, nothing)


def test_fits_see_only_points_before_the_chunk_they_serve(monkeypatch):
    SpyModel.calls = []
    monkeypatch.setattr(detector, "model_class", lambda name: SpyModel)
    monkeypatch.setattr(backtest, "model_class", lambda name: SpyModel)
    series = noisy_daily(1000)
    run_backtest(model_config({"type": "zscore"}), series, Cadence(300, 200, 40))
    refits = backtest.refit_points(1000, Cadence(300, 200, 40))
    assert refits == [40, 80, 160, 320, 620, 920]
    fits = [call for call in SpyModel.calls if call[0] == "fit"]
    advances = [call for call in SpyModel.calls if call[0] == "advance"]
    moments = series.seconds.tolist()
    assert [moments.index(last) + 1 for _, last, _ in fits] == refits
    # each fit sees min(start, fit_window = 200, the model's fit_seconds = 150 points)
    assert [length for _, _, length in fits] == [40, 80, 150, 150, 150, 150]
    # every point is advanced exactly once, in order, after the fit that serves it
    starts = [moments.index(first) for _, first, _ in advances]
    ends = [moments.index(last) + 1 for _, _, last in advances]
    assert starts == [0, *ends[:-1]] and ends[-1] == 1000
    assert set(refits) <= set(starts)


def test_the_warm_up_hides_scores_until_enough_history():
    series = noisy_daily(600)
    result = run_backtest(model_config({"type": "composite", "warm_up": "1d"}), series,
                          Cadence(288, 2016, 300))
    assert np.isnan(result.anomaly_score[:288]).all()
    assert np.isfinite(result.anomaly_score[289:]).all()


def write_input(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(rows)
    return path


def test_cli_writes_one_output_row_per_input_row_and_a_plot(tmp_path):
    series = noisy_daily(5200, spike_at=4000)
    rows = [(f"2015-03-{1 + i // 288:02d} {i % 288 // 12:02d}:{i % 12 * 5:02d}:00",
             f"{value:.3f}") for i, value in enumerate(series.values)]
    rows.insert(2000, rows[1999])       # a duplicated timestamp (DST-like)
    rows[3000] = (rows[3000][0], "")    # a gap
    input_path = write_input(tmp_path / "in.csv", rows)
    out, png = tmp_path / "out.csv", tmp_path / "out.png"
    result = CliRunner().invoke(main, ["backtest", "--csv", str(input_path), "--out", str(out),
                                       "--plot", str(png)])
    assert result.exit_code == 0, result.output
    with open(out) as handle:
        output = list(csv.reader(handle))
    assert output[0] == ["timestamp", "y", "yhat", "yhat_lower", "yhat_upper", "anomaly_score"]
    assert [row[0] for row in output[1:]] == [row[0] for row in rows]
    assert output[3001][1] == "" and output[3001][5] == ""
    scores = {row[0]: float(row[5]) for row in output[1:] if row[5]}
    assert scores[rows[4001][0]] > 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_setup_is_the_shipped_default_config():
    setup = resolve_setup(None, None)
    assert setup.model.alias == "default"
    assert setup.model.type == "composite"
    assert setup.fit_every_seconds == 86400


def test_unknown_model_alias_names_the_config_file(tmp_path):
    result = CliRunner().invoke(backtest_command, [
        "--config", str(backtest_command_default_config()), "--model", "nope",
        "--csv", str(write_input(tmp_path / "in.csv", [("1", "1")])),
        "--out", str(tmp_path / "out.csv")])
    assert result.exit_code != 0
    assert "default_config.yaml" in result.output and "'nope'" in result.output


def backtest_command_default_config() -> Path:
    from anomaly_sidecar.backtest_cli import DEFAULT_CONFIG

    return DEFAULT_CONFIG


@pytest.mark.parametrize(("rows", "message"), [
    ([("2015-01-01 00:00:00", "1"), ("yesterday", "2")], "row 3: timestamp 'yesterday'"),
    ([("2015-01-01 00:00:00",)], "row 2: expected timestamp,value"),
    ([], "no data rows"),
])
def test_bad_input_names_file_and_row(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("timestamp", "value"), *rows])
    with pytest.raises(BacktestInputError) as error:
        read_csv(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_backtest_reads_a_prometheus_range_from_a_real_backend(tmp_path):
    """History imported into a real VictoriaMetrics, read back through the daemon's reader."""
    step, n_points = 60, 1500
    end = (int(time.time()) // step) * step - 3600
    stamps = end - step * np.arange(n_points)[::-1]
    values = noisy_daily(n_points).values
    values[1200] += 80
    with victoria_metrics(tmp_path / "vm") as vm:
        line = json.dumps({"metric": {"__name__": "bt_value", "job": "x"},
                           "values": values.round(4).tolist(),
                           "timestamps": (stamps * 1000).tolist()})
        requests.post(f"{vm.url}/api/v1/import", data=line, timeout=10).raise_for_status()
        requests.get(f"{vm.url}/internal/force_flush", timeout=10).raise_for_status()
        out = tmp_path / "out.csv"
        result = CliRunner().invoke(main, [
            "backtest", "--query", "bt_value", "--url", vm.url, "--start", str(stamps[0]),
            "--end", str(stamps[-1]), "--step", "1m", "--out", str(out)])
        missing = CliRunner().invoke(main, [
            "backtest", "--query", "no_such_metric", "--url", vm.url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n_points
    assert [float(row["y"]) for row in rows[1195:1205]] == pytest.approx(values[1195:1205])
    assert float(rows[1200]["anomaly_score"]) > 1
    assert missing.exit_code != 0 and "returned 0 series" in missing.output


def run_cli_on_a_terminal(arguments: list[str]) -> str:
    """Run the CLI in a child process whose stderr is a pseudo-terminal, as an operator's shell
    is (click draws progress bars only on a TTY); returns what reached that terminal."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", *arguments],
            stderr=terminal, stdout=subprocess.DEVNULL, cwd=Path(__file__).parents[2])
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(controller)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(("n_points", "shows_bar"), [(6000, True), (1000, False)])
def test_long_runs_show_a_progress_bar_on_a_terminal(tmp_path, n_points, shows_bar):
    series = noisy_daily(n_points)
    rows = [(label, str(value)) for label, value in zip(series.labels, series.values,
                                                         strict=True)]
    input_path = write_input(tmp_path / "in.csv", rows)
    config = tmp_path / "zscore.yml"
    config.write_text(json.dumps({"reader": {"url": "http://localhost:9090"}, "queries": {},
                                  "models": {"fast": {"type": "zscore"}}, "schedulers": {}}))
    shown = run_cli_on_a_terminal(["backtest", "--config", str(config), "--csv",
                                   str(input_path), "--out", str(tmp_path / "out.csv")])
    assert f"{n_points} points" in shown
    assert ("backtest fast" in shown and "100%" in shown) == shows_bar, shown

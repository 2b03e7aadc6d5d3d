"""The sidecar as users run it: a subprocess reading a real Prometheus that scrapes a target
the test controls, and scraping the sidecar back, so scores are checked with PromQL."""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scripts.demo_target import ControllableTarget, controllable_target
from tests.sidecar.helpers import (
    FaultProxy,
    minimal_config,
    samples,
    sidecar_process,
    total,
)
from tests.support.services import (
    RunningService,
    free_port,
    prometheus,
    query,
    scrape_config,
    wait_for,
)

NOISE = tuple(10.0 + 0.3 * value for value in
              np.random.default_rng(0).standard_normal(600).round(3).tolist())
"""What the target serves while 'normal', one value a second: noise whose calibrated scores
stay below 1 (a repeating pattern of a few values would make its own largest error look as
rare as the sensitivity allows)."""


@dataclass
class Stack:
    prometheus: RunningService
    target: ControllableTarget
    sidecar_ports: dict[str, int]
    wiggling: dict[str, bool]


@contextlib.contextmanager
def wiggle(target: ControllableTarget, wiggling: dict[str, bool]) -> Iterator[None]:
    """Cycle every series whose flag is set through NOISE, one value per second."""
    stop = threading.Event()

    def run() -> None:
        tick = 0
        while not stop.wait(1.0 - (time.time() % 1.0)):
            for series, enabled in list(wiggling.items()):
                if enabled:
                    target.set(series, NOISE[tick % len(NOISE)])
            tick += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """One Prometheus for the module: scrapes the target, a CPU-like target and the sidecar
    ports the tests will use, every second."""
    workdir = tmp_path_factory.mktemp("daemon")
    ports = {name: free_port() for name in ("spike", "minimal", "restart", "resume", "faults")}
    with controllable_target() as target, \
            controllable_target("aiinfra_cpu_seconds_total") as cpu_target:
        cpu_target.set("cpu0", 123.0)
        wiggling = {"a": True, "b": True, "r": True}
        jobs = {"target": target.address, "cpu": cpu_target.address}
        jobs.update({f"sidecar_{name}": f"127.0.0.1:{port}" for name, port in ports.items()})
        with wiggle(target, wiggling), prometheus(workdir / "prometheus",
                                                  scrape_config(jobs)) as service:
            yield Stack(service, target, ports, wiggling)


def write_config(path: Path, backend_url: str, port: int, body: str) -> Path:
    path.write_text(f"reader:\n  url: {backend_url}\n  timeout: 2s\n  max_retries: 1\n{body}"
                    f"server:\n  listen_address: 127.0.0.1:{port}\n")
    return path


ZSCORE_BODY = """\
queries:
  spike:
    expr: test_value{series=~"a|b"}
    step: 1s
  empty:
    expr: test_value{series="never-set"}
    step: 1s
models:
  z:
    type: zscore
    window: 20s
    warm_up: 10s
    quiet: 0
    rearm: 0
schedulers:
  s:
    fit_every: 1m
    fit_window: 5m
    infer_every: 1s
"""


def promql_value(stack: Stack, promql: str) -> float | None:
    result = query(stack.prometheus.url, promql)
    return float(result[0]["value"][1]) if result else None


def test_spike_scores_above_one_in_prometheus(stack, tmp_path):
    """Must-show 1, plus NaN in the data and a query that returns nothing."""
    port = stack.sidecar_ports["spike"]
    config = write_config(tmp_path / "spike.yml", stack.prometheus.url, port, ZSCORE_BODY)
    with sidecar_process(config, port) as sidecar:
        wait_for(lambda: promql_value(stack, 'anomaly_sidecar_model_warm{series="a"}') == 1, 90,
                 message="series a warm in Prometheus")
        stack.wiggling["b"] = False
        stack.target.set("b", math.nan)
        time.sleep(3)
        stack.wiggling["b"] = True
        time.sleep(8)
        before = promql_value(stack, 'max_over_time(anomaly_score{series="a"}[10s])')
        assert before is not None and before < 1
        assert promql_value(stack, 'max_over_time(anomaly_score{series="b"}[3s])') < 1
        assert math.isfinite(promql_value(stack, 'yhat{series="b"}'))

        stack.wiggling["a"] = False
        stack.target.set("a", 30.0)
        spike = wait_for(lambda: promql_value(stack, 'anomaly_score{series="a"} > 1'), 20,
                         message="anomaly_score > 1 after the spike")
        assert spike > 1
        labels = query(stack.prometheus.url, 'anomaly_score{series="a"}')[0]["metric"]
        assert {labels["for"], labels["model_alias"], labels["scheduler_alias"]} == {
            "spike", "z", "s"}
        assert not samples(sidecar.metrics_url, "anomaly_score", **{"for": "empty"})
        assert total(sidecar.metrics_url, "anomaly_sidecar_model_runs_total",
                     stage="infer") > 10
        assert total(sidecar.metrics_url, "anomaly_sidecar_model_run_errors_total") == 0
        assert sidecar.process.poll() is None
    stack.wiggling["a"] = True


def test_minimal_config_runs_verbatim(stack, tmp_path):
    """The README's minimal config, only URL and port replaced: infers and publishes the
    warm-up state of the CPU series (a zscore learns nothing, so nothing is fitted)."""
    port = stack.sidecar_ports["minimal"]
    config = tmp_path / "minimal.yml"
    config.write_text(minimal_config(stack.prometheus.url, port))
    with sidecar_process(config, port) as sidecar:
        warm = wait_for(lambda: samples(sidecar.metrics_url, "anomaly_sidecar_model_warm",
                                        **{"for": "cpu"}), 45, message="cpu series published")
        labels, value = warm[0]
        assert value == 0
        assert labels["model_alias"] == "cpu_zscore" and labels["scheduler_alias"] == "main"
        assert "instance" in labels and "__name__" not in labels
        assert total(sidecar.metrics_url, "anomaly_sidecar_model_runs_total", stage="infer") >= 1
        assert total(sidecar.metrics_url, "anomaly_sidecar_model_runs_total", stage="fit") == 0
        assert samples(sidecar.metrics_url, "anomaly_sidecar_build_info")


def prepare_restart(stack: Stack, tmp_path: Path, name: str, body: str,
                    history_points: int) -> tuple[int, Path, Path]:
    """Port, state directory and config of a restart test, once Prometheus holds the history
    the model needs (series "r", one point a second)."""
    config = write_config(tmp_path / f"{name}.yml", stack.prometheus.url,
                          stack.sidecar_ports[name], body)
    wait_for(lambda: promql_value(
        stack, f'count_over_time(test_value{{series="r"}}[2m]) >= {history_points}'),
        150, message=f"{history_points} points of history")
    return stack.sidecar_ports[name], tmp_path / "state", config


RESTART_BODY = """\
queries:
  r:
    expr: test_value{series="r"}
    step: 1s
models:
  ar:
    type: arima
    order: [1, 1, 1]
    warm_up: 10s
schedulers:
  s:
    fit_every: 1h
    fit_window: 10m
    infer_every: 5s
"""


def test_restart_scores_at_once_without_refit(stack, tmp_path):
    """Must-show 4: SIGKILL after a fit; the new process restores the state and publishes
    scores within one infer_every of serving /metrics, without fitting again."""
    port, state_dir, config = prepare_restart(stack, tmp_path, "restart", RESTART_BODY, 50)
    with sidecar_process(config, port, state_dir) as first:
        wait_for(lambda: samples(first.metrics_url, "anomaly_score", series="r"), 30,
                 message="first process scoring")
        assert total(first.metrics_url, "anomaly_sidecar_model_runs_total", stage="fit") == 1
        assert list(state_dir.glob("s/ar/r/current"))
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    with sidecar_process(config, port, state_dir) as second:
        serving = time.monotonic()
        wait_for(lambda: samples(second.metrics_url, "anomaly_score", series="r"), 5,
                 interval_seconds=0.1, message="scores within one infer_every")
        assert time.monotonic() - serving <= 5
        assert total(second.metrics_url, "anomaly_sidecar_model_runs_total", stage="fit") == 0
        assert "restored" in second.log()


RESUME_BODY = """\
queries:
  r:
    expr: test_value{series="r"}
    step: 1s
models:
  default:
    type: composite
    warm_up: 10s
schedulers:
  s:
    fit_every: 1h
    fit_window: 2m
    infer_every: 1s
"""


def test_restart_resumes_from_saved_state_without_reading_history_again(stack, tmp_path):
    """A stopped sidecar saves every series' state; the next process restores it and its first
    inference reads only the points that arrived in between, not the history again (counted
    by anomaly_sidecar_points_read_total), and it publishes scores at once."""
    port, state_dir, config = prepare_restart(stack, tmp_path, "resume", RESUME_BODY, 100)
    with sidecar_process(config, port, state_dir) as first:
        wait_for(lambda: samples(first.metrics_url, "anomaly_score", series="r"), 30,
                 message="first process scoring")
        first_read = total(first.metrics_url, "anomaly_sidecar_points_read_total")
        assert first_read >= 90, "the first read covers the series' history"
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=30)
    stopped = time.monotonic()
    with sidecar_process(config, port, state_dir) as second:
        wait_for(lambda: total(second.metrics_url, "anomaly_sidecar_model_runs_total",
                               stage="infer") >= 1, 10, interval_seconds=0.1,
                 message="first inference after the restart")
        points = total(second.metrics_url, "anomaly_sidecar_points_read_total")
        assert points <= time.monotonic() - stopped + 3, "only the points since the stop"
        assert samples(second.metrics_url, "anomaly_score", series="r"), "scored at once"
        assert "restored s/default/r: 1 series" in second.log()


FAULTS_BODY = """\
queries:
  f:
    expr: test_value{series="a"}
    step: 1s
models:
  m:
    type: mad
    window: 10s
    warm_up: 10s
schedulers:
  s:
    fit_every: 30s
    fit_window: 5m
    infer_every: 1s
"""


def test_backend_outage_keeps_last_scores_and_recovers(stack, tmp_path):
    """Unreachable, then slow, then back: the sidecar serves its last scores throughout,
    counts the errors, and resumes by itself. A bad reload keeps the running config."""
    port = stack.sidecar_ports["faults"]
    with FaultProxy(stack.prometheus.url, slow_seconds=4) as proxy:
        config = write_config(tmp_path / "faults.yml", proxy.url, port, FAULTS_BODY)
        with sidecar_process(config, port) as sidecar:
            url = sidecar.metrics_url
            wait_for(lambda: samples(url, "anomaly_score", **{"for": "f"}), 60,
                     message="scores before the outage")
            for mode in ("down", "slow"):
                errors_before = total(url, "anomaly_sidecar_reader_errors_total")
                proxy.mode = mode
                wait_for(lambda before=errors_before: total(
                    url, "anomaly_sidecar_reader_errors_total") >= before + 2, 20,
                    message=f"errors counted while {mode}")
                assert samples(url, "anomaly_score", **{"for": "f"}), "last scores still served"
                assert sidecar.process.poll() is None
            proxy.mode = "ok"
            recovered = time.time()
            wait_for(lambda: max(value for _, value in samples(
                url, "anomaly_sidecar_last_success_timestamp_seconds", stage="infer"))
                > recovered, 20, message="inference resumes by itself")

            config.write_text(config.read_text().replace("type: mad", "type: no_such_model"))
            sidecar.process.send_signal(signal.SIGHUP)
            wait_for(lambda: total(url, "anomaly_sidecar_config_last_reload_successful") == 0,
                     10, message="failed reload reported")
            time.sleep(2)
            assert samples(url, "anomaly_score", **{"for": "f"})
            assert "reload failed" in sidecar.log()
            assert "models.m.type: unknown model type 'no_such_model'" in sidecar.log()

            config.write_text(config.read_text().replace("type: no_such_model", "type: zscore"))
            sidecar.process.send_signal(signal.SIGHUP)
            # A good reload first lets the old scheduler's in-flight read finish (it may still be
            # one of the slow ones above), so allow for the proxy delay plus retries.
            wait_for(lambda: total(url, "anomaly_sidecar_config_last_reload_successful") == 1,
                     30, message="good reload reported")
            wait_for(lambda: samples(url, "anomaly_sidecar_model_info", type="zscore"), 20,
                     message="the changed model publishes")
            assert "configuration reloaded" in sidecar.log()


def test_bad_promql_is_reported_at_start_from_the_backend(stack, tmp_path):
    body = ZSCORE_BODY.replace('test_value{series=~"a|b"}', "rate(test_value[1m]")
    config = write_config(tmp_path / "bad.yml", stack.prometheus.url, free_port(), body)
    result = subprocess.run(
        [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", "run",
         "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "queries.spike.expr: rejected by the backend" in result.stderr
    assert "parse error" in result.stderr


def test_unreachable_backend_at_run_time_is_counted_not_fatal(tmp_path):
    """Must-show 3's last case: check-config accepts it; at run time it is logged and
    counted while the sidecar keeps serving."""
    port = free_port()
    config = write_config(tmp_path / "down.yml", f"http://127.0.0.1:{free_port()}", port,
                          ZSCORE_BODY)
    with sidecar_process(config, port) as sidecar:
        wait_for(lambda: total(sidecar.metrics_url, "anomaly_sidecar_model_run_errors_total",
                               stage="infer") >= 2, 20,
                 message="failed inferences counted and retried")
        assert total(sidecar.metrics_url, "anomaly_sidecar_reader_errors_total") >= 4
        assert "cannot reach" in sidecar.log()
        assert sidecar.process.poll() is None

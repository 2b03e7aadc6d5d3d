"""check-config: the minimal config is valid; each kind of mistake is rejected with a message
naming file, key path and reason, and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly_sidecar.config import ConfigError, load_config
from anomaly_sidecar.durations import parse_duration, parse_window, span_points, span_seconds
from tests.sidecar.helpers import MINIMAL_CONFIG


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", "check-config",
         str(path)], capture_output=True, text=True, timeout=60)


def test_minimal_config_from_the_issue_is_valid(tmp_path):
    path = tmp_path / "minimal.yml"
    path.write_text(MINIMAL_CONFIG)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    config = load_config(path)
    assert config.queries["cpu"].step_seconds == 15
    assert config.models["cpu_zscore"].queries == ["cpu"]
    assert config.schedulers["main"].fit_window_seconds == 86400
    assert config.server.host_port == ("127.0.0.1", 10101)


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(("    type: zscore\n", "    type: zscore\n    windw: 30\n"),
                 "models.cpu_zscore.windw: unknown key", id="unknown-model-key"),
    pytest.param(("queries:\n", "queries:\n  typo_section: 1\n"),
                 "queries.typo_section: must be a mapping, got int", id="wrong-section-type"),
    pytest.param(("server:\n", "serverr:\n"), "serverr: unknown key", id="unknown-top-key"),
    pytest.param(("    step: 15s\n", "    step: [15s]\n"),
                 "queries.cpu.step: must be a duration like 15s or 1h, got list", id="wrong-type"),
    pytest.param(("    type: zscore\n", "    type: zscore\n    window: ten\n"),
                 "models.cpu_zscore.window: must be a duration like 15s, 10m, 1h30m or 1d, "
                 "got 'ten'", id="wrong-param-type"),
    pytest.param(("    type: zscore\n", "    type: zscore\n    window: 30\n"),
                 "models.cpu_zscore.window: must be a duration such as 30m or 1d (a bare number "
                 "is ambiguous: points or seconds?), got 30", id="bare-number-window"),
    pytest.param(("    type: zscore\n", "    type: zscore\n    quiet: 30\n"),
                 "models.cpu_zscore.quiet: must be a duration such as 30m", id="bare-number-quiet"),
    pytest.param(("    type: zscore\n", "    type: zscore\n    calibration: strict\n"),
                 "models.cpu_zscore.calibration: must be one of calibrated, raw, got 'strict'",
                 id="unknown-calibration"),
    pytest.param(("    type: zscore\n", "    type: composite\n    calibration: raw\n"),
                 "models.cpu_zscore.calibration: a composite model has no raw band of its own",
                 id="raw-composite"),
    pytest.param(("    type: zscore\n", "    type: zscore\n    false_alarms_per_day: 0\n"),
                 "models.cpu_zscore.false_alarms_per_day: must be > 0", id="zero-sensitivity"),
    pytest.param(("    queries: [cpu]\n", "    queries: [cpu, mem]\n"),
                 "models.cpu_zscore.queries: query 'mem' is not defined (defined: cpu)",
                 id="missing-query"),
    pytest.param(("    fit_every: 10m\n", "    fit_every: 10s\n"),
                 "schedulers.main.fit_every: must be >= infer_every (10s < 15s)",
                 id="fit-every-below-infer-every"),
    pytest.param(("    fit_every: 10m\n", "    fit_every: 10m\n    alarm_catch_up: 5s\n"),
                 "schedulers.main.alarm_catch_up: must be >= infer_every (5s < 15s)",
                 id="alarm-catch-up-below-infer-every"),
    pytest.param(("    models: [cpu_zscore]\n", "    models: [cpu_arima]\n"),
                 "schedulers.main.models: model 'cpu_arima' is not defined", id="missing-model"),
    pytest.param(("    type: zscore\n", "    type: prophet\n"),
                 "models.cpu_zscore.type: unknown model type 'prophet'", id="unknown-type"),
    pytest.param(("server:\n", "writer:\n  remote_writ: {}\nserver:\n"),
                 "writer.remote_writ: unknown key (allowed: pull, remote_write)",
                 id="unknown-writer"),
    pytest.param(("server:\n", "writer: {}\nserver:\n"),
                 "writer: names no writer: add pull, remote_write or both", id="no-writer"),
    pytest.param(("server:\n", "writer:\n  remote_write:\n    timeout: 5s\nserver:\n"),
                 "writer.remote_write.url: is required", id="remote-write-without-url"),
    pytest.param(("server:\n", "writer:\n  remote_write:\n    url: http://vm:8428/api/v1/write\n"
                                "    batch_size: 100\n    queue_size: 10\nserver:\n"),
                 "writer.remote_write.queue_size: must be >= batch_size (100)",
                 id="queue-below-batch"),
    pytest.param(("server:\n", "writer:\n  remote_write:\n    url: vm:8428\nserver:\n"),
                 "writer.remote_write.url: must start with http:// or https://, got 'vm:8428'",
                 id="remote-write-url-scheme"),
    pytest.param(("server:\n", "shard:\n  index: 3\n  count: 3\nserver:\n"),
                 "shard.index: the shard index must be from 0 to shard count - 1 (2), got 3",
                 id="shard-index-beyond-count"),
    pytest.param(("server:\n", "server:\n  web_config_file: /nonexistent/web.yml\n"),
                 "server.web_config_file: file '/nonexistent/web.yml' does not exist",
                 id="missing-web-config"),
])
def test_check_config_rejects(tmp_path, edit, message):
    old, new = edit
    assert old in MINIMAL_CONFIG
    path = tmp_path / "bad.yml"
    path.write_text(MINIMAL_CONFIG.replace(old, new, 1))
    result = check_config(path)
    assert result.returncode == 2
    assert f"{path}: {message}" in result.stderr
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in str(raised.value)


def test_alarm_catch_up_defaults_to_ten_minutes_or_infer_every(tmp_path):
    path = tmp_path / "catch_up.yml"
    path.write_text(MINIMAL_CONFIG)
    assert load_config(path).schedulers["main"].alarm_catch_up_seconds == 600
    path.write_text(MINIMAL_CONFIG.replace("    infer_every: 15s\n", "    infer_every: 15m\n")
                    .replace("    fit_every: 10m\n", "    fit_every: 30m\n"))
    assert load_config(path).schedulers["main"].alarm_catch_up_seconds == 900


def test_arima_order_errors_name_the_model_key(tmp_path):
    path = tmp_path / "arima.yml"
    path.write_text(MINIMAL_CONFIG.replace("    type: zscore\n",
                                           "    type: arima\n    order: [1, 5, 1]\n"))
    with pytest.raises(ConfigError, match=r"models\.cpu_zscore\.order: needs 0 <= p,q <= 10"):
        load_config(path)


def test_unreachable_url_is_not_a_check_time_error(tmp_path):
    """check-config never contacts the backend: reachability is a run-time matter (see
    test_faults for how the running sidecar reports it)."""
    path = tmp_path / "unreachable.yml"
    path.write_text(MINIMAL_CONFIG.replace("http://127.0.0.1:9090", "http://127.0.0.1:9"))
    assert check_config(path).returncode == 0


def test_durations():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration(15) == 15
    for bad in ("15", "1x", "", "0s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_window_means_its_duration_up_to_five_minute_steps_and_its_points_beyond():
    """The same `1h` holds 240 points at 15 s and 12 at 5 min; at an hourly step it keeps the
    12 points it holds at 5 minutes rather than shrinking to one."""
    assert [span_points(3600, step) for step in (15, 60, 300, 3600)] == [240, 60, 12, 12]
    assert span_seconds(3600, 60) == 3600
    assert span_seconds(3600, 3600) == 12 * 3600
    assert parse_window("0") == 0 and parse_window("2h") == 7200
    with pytest.raises(ValueError, match="ambiguous"):
        parse_window(60)


def test_the_web_config_is_checked_with_the_config(tmp_path):
    """A web config the exporter would refuse stops check-config and run alike (exit 2),
    naming the sidecar config's key and the web config's own file and key."""
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    path = tmp_path / "sidecar.yml"
    path.write_text(MINIMAL_CONFIG.replace(
        "server:\n", f"server:\n  web_config_file: {web_config}\n"))
    result = check_config(path)
    assert result.returncode == 2
    assert (f"{path}: server.web_config_file: {web_config}: basic_auth_users.prometheus: "
            f"not a bcrypt hash") in result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--shard-index", "3", "--shard-count", "3"], {},
     "--shard-index/--shard-count: the shard index must be from 0 to shard count - 1 (2), "
     "got 3"),
    ([], {"ANOMALY_SIDECAR_SHARD_INDEX": "1"},
     "the shard index must be from 0 to shard count - 1 (0), got 1"),
    (["--shard-count", "0"], {}, "Invalid value for '--shard-count'"),
])
def test_shard_flags_and_variables_are_checked_before_anything_runs(tmp_path, args, env,
                                                                    message):
    path = tmp_path / "sidecar.yml"
    path.write_text(MINIMAL_CONFIG)
    result = subprocess.run(
        [sys.executable, "-c", "from anomaly_sidecar.cli import main; main()", "run",
         "--config", str(path), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env})
    assert result.returncode == 2
    assert message in result.stderr

"""Hostile and broken input to the sidecar: every bad config ends in a ConfigError with file, key
and reason and exit 2 (never a traceback), and a backend answering 200 with a body that is not a
query API answer is counted and logged, at start-up and on SIGHUP alike."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anomaly_sidecar.config import ConfigError, ReaderConfig, load_config
from anomaly_sidecar.reader import (
    BadAnswer,
    PromReader,
    parse_answer,
    parse_matrix,
    parse_vector,
)
from tests.sidecar.helpers import (
    MINIMAL_CONFIG,
    FaultProxy,
    minimal_config,
    sidecar_process,
    total,
)
from tests.support.fuzzing import ALIAS_BOMB
from tests.support.services import free_port, wait_for


def check_config(path: Path, *, module: bool = False) -> subprocess.CompletedProcess:
    entry = (["-m", "anomaly_sidecar.cli"] if module
             else ["-c", "from anomaly_sidecar.cli import main; main()"])
    return subprocess.run([sys.executable, *entry, "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def edited(old: str, new: str) -> str:
    assert old in MINIMAL_CONFIG
    return MINIMAL_CONFIG.replace(old, new, 1)


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(edited("    step: 15s\n", "    step: .inf\n"),
                 "queries.cpu.step: must be a finite duration", id="inf-duration"),
    pytest.param(edited("    step: 15s\n", "    step: .nan\n"),
                 "queries.cpu.step: must be a finite duration", id="nan-duration"),
    pytest.param(edited("    fit_window: 1d\n", "    fit_window: 293y\n"),
                 "schedulers.main.fit_window: must be at most 10y", id="293y"),
    pytest.param(edited("    type: zscore\n", "    type: zscore\n    threshold: .nan\n"),
                 "models.cpu_zscore.threshold: must be a finite number", id="threshold-nan"),
    pytest.param(edited("    type: zscore\n", "    type: zscore\n    window: 100000000000\n"),
                 "models.cpu_zscore.window: must be at most 2147483647", id="window-1e11"),
    pytest.param(edited("    type: zscore\n",
                        "    type: zscore\n    min_dev_from_expected: .inf\n"),
                 "models.cpu_zscore.min_dev_from_expected: must be a finite number",
                 id="min-dev-inf"),
    pytest.param(edited("    type: zscore\n", "    type: _rolling\n"),
                 "models.cpu_zscore.type: unknown model type '_rolling'", id="private-type"),
    pytest.param(edited("server:\n", 'server:\n  metric_name_template: "{name}{name.x}"\n'),
                 "server.metric_name_template: must contain {name}", id="template-attribute"),
    pytest.param(edited("  url: http://127.0.0.1:9090\n",
                        '  url: http://127.0.0.1:9090\n  headers: {X-Tenant: "a\\r\\nX: b"}\n'),
                 "reader.headers.X-Tenant: not a valid HTTP header", id="header-crlf"),
    pytest.param(MINIMAL_CONFIG + "x: " + "[" * 1000 + "]" * 1000 + "\n",
                 "(file): not valid YAML: nested deeper than 64 levels", id="1000-deep"),
    pytest.param(ALIAS_BOMB + MINIMAL_CONFIG,
                 "(file): YAML aliases expand to more than 100,000 nodes", id="alias-bomb"),
])
def test_bad_config_is_a_clear_error_with_exit_2(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(content)
    started = time.monotonic()
    result = check_config(path)
    assert time.monotonic() - started < 20  # the alias bomb took 92 s and 3 GB
    assert result.returncode == 2, result.stderr
    assert f"{path}: {message}" in result.stderr
    assert "Traceback" not in result.stderr and "lol" not in result.stderr
    with pytest.raises(ConfigError, match="^" + str(path)):
        load_config(path)


@pytest.mark.parametrize(("encode", "message"), [
    pytest.param(lambda text: text.encode("utf-16"), "(file): is UTF-16 text", id="utf-16"),
    pytest.param(lambda text: text.replace("cpu:", "cpu\u00e9:", 1).encode("latin-1"),
                 "(file): is not UTF-8 text (byte 0xe9", id="latin-1"),
    pytest.param(lambda text: b"\x00\x01\x02" + text.encode(), "(file): contains a NUL byte",
                 id="binary"),
])
def test_config_that_is_not_utf8_text_exits_2(tmp_path, encode, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_bytes(encode(MINIMAL_CONFIG))
    result = check_config(path)
    assert result.returncode == 2, result.stderr
    assert f"{path}: {message}" in result.stderr and "Traceback" not in result.stderr


def test_python_dash_m_runs_the_cli(tmp_path) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(MINIMAL_CONFIG)
    assert "valid (1 queries" in check_config(path, module=True).stdout
    path.write_text(edited("    step: 15s\n", "    step: .inf\n"))
    assert check_config(path, module=True).returncode == 2


RANGE_GARBAGE = [b"[]", b'"str"', b'{"status":"success"}', b'{"status":"success","data":[]}',
                 b'{"status":"success","data":{"resultType":"matrix",'
                 b'"result":[{"metric":{},"values":[[1,2]]}]}',
                 b'{"status":"success","data":{"resultType":"matrix","result":{"a":1}}}',
                 b"<html>proxy error</html>", b"[" * 100_000]
INSTANT_GARBAGE = [b'{"status":"success","data":{"resultType":"matrix","result":[]}}',
                   b'{"status":"success","data":{"resultType":"vector",'
                   b'"result":[{"metric":{},"value":[1,2]}]}}',
                   b'{"status":"success","data":{"resultType":"vector",'
                   b'"result":[{"metric":{"a":1},"value":[1,"2"]}]}}',
                   b'{"status":"success","data":{"resultType":"vector",'
                   b'"result":[{"metric":{}}]}}', b"[]"]
QUERIES = {"/api/v1/query_range": lambda reader: reader.query_range("up", 1000, 1060, 15),
           "/api/v1/query": lambda reader: reader.query("up", 1000)}


@pytest.mark.parametrize(("path", "body"),
                         [("/api/v1/query_range", body) for body in RANGE_GARBAGE]
                         + [("/api/v1/query", body) for body in INSTANT_GARBAGE])
def test_a_200_that_is_not_a_query_answer_is_a_counted_reader_error(path: str,
                                                                    body: bytes) -> None:
    outcomes: list[bool] = []
    with FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.mode, proxy.body = "body", body
        reader = PromReader(ReaderConfig(url=proxy.url, max_retries=0),
                            on_request=lambda seconds, ok: outcomes.append(ok))
        with pytest.raises(BadAnswer, match=f"{path}: "):
            QUERIES[path](reader)
    assert outcomes == [False]  # counted as a failed request, not retried


def test_parse_vector_reads_the_documented_shape() -> None:
    data = parse_answer(json.dumps({"status": "success", "data": {
        "resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "a"}, "value": [10, "1"]},
            {"metric": {"job": "b"}, "value": [10, "+Inf"]}]}}).encode())
    vector = parse_vector(data)
    assert vector[(("job", "a"),)] == 1.0 and np.isnan(vector[(("job", "b"),)])


def test_parse_matrix_reads_the_documented_shape() -> None:
    data = parse_answer(json.dumps({"status": "success", "data": {
        "resultType": "matrix", "result": [{"metric": {"__name__": "up", "job": "a"},
                                            "values": [[10, "1"], [25.5, "NaN"]]}]}}).encode())
    [(key, stamps, numbers)] = parse_matrix(data)
    assert key == (("job", "a"),)
    np.testing.assert_array_equal(stamps, [10.0, 25.5])
    assert numbers[0] == 1.0 and np.isnan(numbers[1])


def test_the_daemon_survives_a_backend_answering_garbage_at_start_and_on_sighup(tmp_path):
    with FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.mode, proxy.body = "body", b"[]"
        port = free_port()
        config = tmp_path / "sidecar.yml"
        config.write_text(minimal_config(proxy.url, port)
                          .replace("infer_every: 15s", "infer_every: 1s")
                          .replace("fit_every: 10m", "fit_every: 2s"))
        with sidecar_process(config, port) as sidecar:
            wait_for(lambda: total(sidecar.metrics_url, "anomaly_sidecar_reader_errors_total")
                     >= 2, 30, message="the bad answers counted as reader errors")
            proxy.body = b'{"status":"success"}'
            sidecar.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "configuration reloaded" in sidecar.log(), 30,
                     message="the reload to go through")
            errors = total(sidecar.metrics_url, "anomaly_sidecar_reader_errors_total")
            wait_for(lambda: total(sidecar.metrics_url, "anomaly_sidecar_reader_errors_total")
                     > errors, 30, message="more bad answers counted after the reload")
            assert sidecar.process.poll() is None
            log = sidecar.log()
    assert "answered 200 with an unusable body: expected a JSON object, got list" in log
    assert "'data' must be an object, got NoneType" in log
    assert "Traceback" not in log

"""The Inference dashboard shows data: every query of every panel, run against a real Prometheus
that evaluates the shipped rules and scrapes a real exporter (probe and process collectors, a
simulated GPU) probing a real model endpoint that also exposes its own latency histogram."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from scripts.demo_model import DemoModel, serving
from tests.alerting.shipped import plain_dashboard_queries, queries_without_data, rule_files
from tests.exporter.support import exporter_process
from tests.support.services import prometheus, query, scrape_config, wait_for

# Needs the anomaly sidecar scoring the probe latency; the shipped stack example does that.
NEEDS_SIDECAR = "anomaly_score{"


@pytest.fixture(scope="module")
def inference_prometheus(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inference")
    worker_name = f"aiinfra-worker-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen([worker_name, "-c", "import time; time.sleep(600)"],
                              executable=sys.executable)
    config = workdir / "exporter.yml"
    try:
        with serving(DemoModel(latency_seconds=0.02)) as model_url:
            config.write_text(
                "probe:\n  targets:\n"
                f"    - {{name: model, url: '{model_url}/v1/predict', method: POST, "
                f"body: '{{\"inputs\": [1]}}', interval: 200ms, latency_threshold: 1s}}\n"
                "    - {name: down, url: 'http://127.0.0.1:1/v1/predict', interval: 200ms}\n"
                "process:\n  scan_interval: 1s\n  groups:\n"
                f"    - {{name: worker, match: {{names: [{worker_name}]}}}}\n")
            with exporter_process(workdir / "exporter", "--collector.probe",
                                  "--collector.process", f"--config.file={config}",
                                  "--gpu.simulate=1",
                                  f"--gpu.simulate-faults=0:pid={worker.pid}") as exporter:
                jobs = {"aiinfra_exporter": exporter.address,
                        "model": model_url.removeprefix("http://")}
                rules = {f"rules-{path.name}": path.read_text() for path in rule_files()}
                with prometheus(workdir / "prometheus",
                                scrape_config(jobs, extra="rule_files: ['rules-*.yml']\n"),
                                rule_files=rules) as service:
                    yield service
    finally:
        worker.kill()
        worker.wait(timeout=10)


def inference_queries() -> list[str]:
    return plain_dashboard_queries("inference.json")


def test_the_dashboard_has_the_issue_panels() -> None:
    queries = " ".join(inference_queries())
    for name in ("aiinfra_probe_duration_seconds", "aiinfra_probe_success",
                 "instance_histogram:request_duration_seconds:p99_rate5m",
                 "aiinfra_process_group_cpu_seconds_total",
                 "group:aiinfra_process_group_memory_utilisation:ratio",
                 "aiinfra_process_group_gpu_memory_bytes",
                 "aiinfra_process_group_gpu_utilization_ratio"):
        assert name in queries, name


def test_every_panel_query_returns_data(inference_prometheus) -> None:
    checked = [promql for promql in inference_queries() if NEEDS_SIDECAR not in promql]
    assert len(checked) >= 20
    assert queries_without_data(inference_prometheus.url, checked, 90) == []


def test_passive_rules_record_the_model_servers_own_latency(inference_prometheus) -> None:
    """demo_model_request_duration_seconds becomes histogram="demo_model" p50/p99 series."""
    url = inference_prometheus.url

    def p99() -> list[dict] | None:
        return query(url, 'instance_histogram:request_duration_seconds:p99_rate5m'
                          '{job="model", histogram="demo_model"}') or None

    (series,) = wait_for(p99, 60, 1.0, message="the demo model's own p99")
    assert 0.02 <= float(series["value"][1]) <= 0.1  # 20 ms answers, 5 ms buckets around them

"""A real Prometheus scrapes the real exporter process serving 4 simulated GPUs."""

from __future__ import annotations

from tests.exporter.support import exporter_process
from tests.support.services import prometheus, query, scrape_config, wait_for


def test_prometheus_scrapes_gpu_and_host_metrics(tmp_path) -> None:
    with exporter_process(tmp_path / "exporter", "--gpu.simulate=4") as exporter, \
            prometheus(tmp_path / "prometheus",
                       scrape_config({"aiinfra": exporter.address})) as server:
        utilization = wait_for(lambda: query(server.url, "aiinfra_gpu_utilization_ratio"), 30,
                               message="aiinfra_gpu_utilization_ratio in Prometheus")
        assert sorted(series["metric"]["gpu"] for series in utilization) == ["0", "1", "2", "3"]
        assert all(0 <= float(series["value"][1]) <= 1 for series in utilization)
        assert len({series["metric"]["uuid"] for series in utilization}) == 4
        cpu = query(server.url, 'sum by (mode) (aiinfra_cpu_seconds_total{job="aiinfra"})')
        assert {series["metric"]["mode"] for series in cpu} >= {"user", "system", "idle"}
        up = query(server.url, 'up{job="aiinfra"}')
        assert [series["value"][1] for series in up] == ["1"]
        failing = query(server.url, "aiinfra_scrape_collector_success == 0")
        assert failing == [], failing

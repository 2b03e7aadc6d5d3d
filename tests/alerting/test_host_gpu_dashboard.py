"""The Host and GPU dashboard shows data: every query of every panel, run against a real
Prometheus that evaluates the shipped rules and scrapes a real exporter (two simulated GPUs with
GPM, NVLink and PCIe, one Xid; the InfiniBand fixture sysfs tree)."""

from __future__ import annotations

import pytest

from tests.alerting.shipped import plain_dashboard_queries, queries_without_data, rule_files
from tests.exporter.support import INFINIBAND_SYSFS, exporter_process
from tests.support.services import prometheus, scrape_config

PROFILING_NAMES = ("aiinfra_gpu_sm_active_ratio", "aiinfra_gpu_tensor_active_ratio",
                   "aiinfra_gpu_sm_occupancy_ratio", "aiinfra_gpu_dram_active_ratio",
                   "aiinfra_gpu_pipe_active_ratio", "aiinfra_gpu_nvlink_receive_bytes_total",
                   "aiinfra_gpu_nvlink_errors_total", "aiinfra_gpu_pcie_transmit_bytes_total",
                   "aiinfra_gpu_pcie_current_link_generation", "aiinfra_gpu_pcie_max_link_width",
                   "aiinfra_infiniband_port_data_received_bytes_total",
                   "aiinfra_infiniband_port_errors_total", "aiinfra_infiniband_port_state_id",
                   "aiinfra_infiniband_port_rate_bytes_per_second")


@pytest.fixture(scope="module")
def host_gpu_prometheus(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("host-gpu")
    with exporter_process(workdir / "exporter", "--gpu.simulate=2",
                          "--gpu.simulate-faults=0:xid=79", "--collector.gpu.sample-interval=1s",
                          f"--path.sysfs={INFINIBAND_SYSFS}") as exporter:
        rules = {f"rules-{path.name}": path.read_text() for path in rule_files()}
        with prometheus(workdir / "prometheus",
                        scrape_config({"aiinfra_exporter": exporter.address},
                                      extra="rule_files: ['rules-*.yml']\n"),
                        rule_files=rules) as service:
            yield service


def test_the_dashboard_has_the_training_efficiency_panels() -> None:
    queries = " ".join(plain_dashboard_queries("host-gpu.json"))
    for name in PROFILING_NAMES:
        assert name in queries, name


def test_every_panel_query_returns_data(host_gpu_prometheus) -> None:
    queries = plain_dashboard_queries("host-gpu.json")
    assert len(queries) >= 30
    assert queries_without_data(host_gpu_prometheus.url, queries, 90) == []

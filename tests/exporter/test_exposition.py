"""The exposition itself: promtool lints it clean, and the GPU part matches a golden file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from exporter.nvml_sim import SimulatedNVML, parse_fault_spec
from tests.exporter.support import (
    INFINIBAND_SYSFS,
    build_scrape,
    exporter_process,
    exposition,
)
from tests.support.services import wait_for

GOLDEN = Path(__file__).parent / "golden" / "gpu_exposition.txt"
# Everything that varies between runs or machines is masked; the rest must match byte for byte.
MASKS = (
    (re.compile(r"^(aiinfra_scrape_collector_duration_seconds\{[^}]*\}) .*$", re.M),
     r"\1 <seconds>"),
    (re.compile(r'python_version="[^"]*"'), 'python_version="<python>"'),
    (re.compile(r"^(aiinfra_gpu_(mig_)?profiling_interval_seconds\{[^}]*\}) .*$", re.M),
     r"\1 <seconds>"),
)


def promtool_check(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not on PATH: run `make test` (it installs Debian's prometheus)"
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)


def test_promtool_finds_nothing_on_the_full_output(tmp_path) -> None:
    faults = "0:mig=2,1:processes=2,1:model=a100,2:xid=79,3:lost"
    waited_for = ("aiinfra_gpu_xid_errors_total{", "aiinfra_gpu_mig_tensor_active_ratio{")
    with exporter_process(tmp_path, "--gpu.simulate=4", f"--gpu.simulate-faults={faults}",
                          "--collector.gpu_processes", "--collector.gpu.sample-interval=200ms",
                          "--collector.gpu_profiling.nvlink-per-link",
                          f"--path.sysfs={INFINIBAND_SYSFS}") as exporter:
        deadline = time.monotonic() + 10
        text = ""
        while not all(name in text for name in waited_for) and time.monotonic() < deadline:
            text = requests.get(exporter.url + "/metrics", timeout=5).text
            time.sleep(0.1)
    for expected in ("aiinfra_cpu_seconds_total{", "aiinfra_gpu_mig_info{",
                     "aiinfra_gpu_process_memory_bytes{", "aiinfra_gpu_xid_errors_total{",
                     "aiinfra_filesystem_avail_bytes{",
                     "aiinfra_pressure_cpu_waiting_seconds_total", *waited_for,
                     "aiinfra_gpu_nvlink_link_errors_total{", "aiinfra_gpu_pcie_max_link_width{",
                     "aiinfra_infiniband_port_data_received_bytes_total{"):
        assert expected in text, expected
    result = promtool_check(text)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout


def test_promtool_flags_a_bad_exposition() -> None:
    """The lint check above can fail: promtool does complain about a wrongly named counter."""
    result = promtool_check("# HELP bad_count A counter\n# TYPE bad_count counter\nbad_count 1\n")
    assert "bad_count" in result.stdout + result.stderr


def test_gpu_exposition_matches_golden_file() -> None:
    """GPU 0 has GPM (and per MIG instance), GPU 1 is an A100 (no GPM, 12 NVLink links), GPU 2's
    GPM sampling fails (no profiling series), GPU 3 is lost. The infiniband part has its own
    golden file (test_infiniband)."""
    nvml = SimulatedNVML(4, clock=lambda: 120.0)
    parse_fault_spec("0:mig=2,1:processes=2,1:model=a100,2:unsupported=nvmlDeviceGetFanSpeed,"
                     "2:error=nvmlGpmSampleGet,3:lost", nvml)
    scrape = build_scrape(["gpu", "gpu_processes", "gpu_profiling"], nvml,
                          gpu_sample_interval_seconds=0.05)
    text = wait_for(lambda: (lambda t: t if t.count("aiinfra_gpu_mig_sm_active_ratio{") == 2
                             else None)(exposition(scrape)), 5, 0.05, "GPM ratios")
    scrape.stop()
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed: rerun with UPDATE_GOLDEN=1 and review"


def test_fast_renderer_is_byte_identical_to_prometheus_client() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.exposition import generate_latest

    from exporter.exposition import render

    class Fixed:
        """Deterministic families, including the values and labels that need escaping."""

        def collect(self):
            odd = GaugeMetricFamily("odd_values", 'Help with \\ and\nnewline and "quotes".',
                                    labels=["b", "a"])
            for number, value in enumerate((0.0, -1.5, 1e-9, 85899345920.0, 123456789.5,
                                            float("inf"), float("-inf"), float("nan"), 7)):
                odd.add_metric([f'x"\\\n{number}', "é"], value)
            counter = CounterMetricFamily("events", "Events.", labels=["kind"])
            counter.add_metric(["a"], 3)
            latency = HistogramMetricFamily("latency_seconds", "A histogram.", labels=["target"])
            latency.add_metric(["x"], [("0.005", 1.0), ("60.0", 4.0), ("+Inf", 5.0)], 75.5)
            return [odd, counter, latency, GaugeMetricFamily("no_labels", "Plain.", value=2)]

    nvml = SimulatedNVML(4, clock=lambda: 33.0)
    parse_fault_spec("0:mig=2,1:processes=2,3:lost", nvml)
    for collector in (Fixed(), build_scrape(["gpu", "gpu_processes"], nvml)):
        registry = CollectorRegistry()
        registry.register(collector)
        mask = MASKS[0]
        ours = mask[0].sub(mask[1], render(registry).decode())
        theirs = mask[0].sub(mask[1], generate_latest(registry).decode())
        assert ours == theirs

"""scripts/gpu_check.py's logic, driven with the simulated NVML (the real run needs a GPU)."""

from __future__ import annotations

import importlib.util

import pytest

from exporter.nvml import NvmlSession
from exporter.nvml_sim import SimulatedNVML, parse_fault_spec
from tests.exporter.support import REPO_ROOT


@pytest.fixture(scope="module")
def gpu_check():
    path = REPO_ROOT / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.XID_SETTLE_SECONDS = 0.2
    return module


def session(count: int, faults: str = "") -> NvmlSession:
    nvml = SimulatedNVML(count)
    parse_fault_spec(faults, nvml)
    return NvmlSession(nvml)


def test_healthy_gpus_pass_and_every_series_is_printed(gpu_check, capsys) -> None:
    assert gpu_check.check(session(2, "1:unsupported=nvmlDeviceGetFanSpeed"), 3, True) == 0
    out = capsys.readouterr().out
    assert 'aiinfra_gpu_utilization_ratio{gpu="1"' in out
    assert len([line for line in out.splitlines() if line.startswith("  GPU ")
                and " series; " in line]) == 2  # one timing line per GPU
    assert "unsupported here: aiinfra_gpu_fan_speed_ratio" in out
    assert "scrape-path time per GPU" in out and "target <= 1 ms" in out
    assert "OK: every collector succeeded" in out


def test_a_down_gpu_fails_the_check(gpu_check, capsys) -> None:
    assert gpu_check.check(session(2, "0:lost"), 1, True) == 1
    captured = capsys.readouterr()
    assert "DOWN" in captured.out and "1 GPU(s) down" in captured.err


def test_missing_nvml_fails_with_a_clear_message(gpu_check, capsys) -> None:
    assert gpu_check.check(session(0, "driver:missing"), 1, True) == 2
    assert "NVML unavailable" in capsys.readouterr().err


def test_per_group_gpu_usage_matches_nvml_per_process(gpu_check, capsys) -> None:
    import os

    nvml = SimulatedNVML(1)
    nvml.attach_process(0, os.getpid(), 3 * 1024**3, sm_percent=25)
    assert gpu_check.check(NvmlSession(nvml), 1, True) == 0
    out = capsys.readouterr().out
    assert "aiinfra_process_group_gpu_memory_bytes{gpu='0'} 3221225472" in out
    assert "aiinfra_process_group_gpu_utilization_ratio{gpu='0'} 0.25" in out
    assert "NVML per-process memory on GPU 0, summed: 3221225472" in out


def test_profiling_fields_are_printed_with_their_read_time(gpu_check, capsys) -> None:
    assert gpu_check.check(session(2, "1:model=a100"), 2, True) == 0
    out = capsys.readouterr().out
    assert "per-GPU profiling read time" in out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()
             if line.startswith("  GPU ") and " series, NVLink links: " in line}
    assert set(lines) == {"GPU 0 NVIDIA H100 80GB HBM3 (simulated)",
                          "GPU 1 NVIDIA A100-SXM4-80GB (simulated)"}
    h100, a100 = lines.values()
    assert " ms, max " in h100 and "NVLink links: 18 up; absent here: none" in h100
    assert "NVLink links: 12 up; absent here: aiinfra_gpu_dram_active_ratio" in a100
    assert "    aiinfra_gpu_tensor_active_ratio " in out  # GPU 0's GPM values
    assert "    aiinfra_gpu_pcie_max_link_generation 4" in out  # GPU 1's PCIe link
    assert "scrape-path time per GPU (gpu_profiling collector" in out

"""Every NVML function the exporter calls exists in pynvml (nvidia-ml-py) and in the simulator,
so a misspelt getter fails here instead of reading as 'unsupported' on every GPU."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pynvml
import pytest

from exporter.nvml import LEGACY_NVML_FUNCTIONS
from exporter.nvml_sim import SimulatedNVML
from tests.exporter.support import REPO_ROOT, build_scrape, collector_success, exposition

NVML_NAME = re.compile(r"^nvml[A-Z][A-Za-z0-9_]*$")
SOURCES = sorted(path for path in (REPO_ROOT / "exporter").rglob("*.py")
                 if path.name != "nvml_sim.py")


def called_nvml_functions(path: Path) -> set[str]:
    """NVML names used as strings (getters called by name) or as attributes of an NVML object
    (`nvml.nvmlInit()`, `self.session.nvml.nvml...`), leaving out constants read from the
    pynvml module itself and fields of NVML's structs."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if NVML_NAME.match(node.value):
                names.add(node.value)
        elif isinstance(node, ast.Attribute) and NVML_NAME.match(node.attr) and is_nvml(node.value):
            names.add(node.attr)
    return names


def is_nvml(node: ast.expr) -> bool:
    """`nvml` or `<anything>.nvml`: the session's NVML module (real or simulated)."""
    return ((isinstance(node, ast.Name) and node.id == "nvml")
            or (isinstance(node, ast.Attribute) and node.attr == "nvml"))


def all_called() -> set[str]:
    return set().union(*(called_nvml_functions(path) for path in SOURCES))


def test_the_scan_finds_the_collectors_calls() -> None:
    called = all_called()
    assert len(called) > 30, called  # the scan itself works
    assert {"nvmlInit", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetFieldValues",
            "nvmlEventSetWait_v2", "nvmlDeviceGetComputeRunningProcesses",
            "nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleGet",
            "nvmlGpmMigSampleGet", "nvmlGpmMetricsGet", "nvmlGpmSampleFree",
            "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkWidth"} <= called


# Values from NVIDIA's nvml.h (R550+) and the NVML API reference's nvmlGpmMetricId_t: the
# profiling collector reads these ids through pynvml's constants, so a renumbered or missing
# constant would read the wrong counter rather than fail.
NVML_H_VALUES = {
    "NVML_GPM_METRIC_GRAPHICS_UTIL": 1, "NVML_GPM_METRIC_SM_UTIL": 2,
    "NVML_GPM_METRIC_SM_OCCUPANCY": 3, "NVML_GPM_METRIC_INTEGER_UTIL": 4,
    "NVML_GPM_METRIC_ANY_TENSOR_UTIL": 5, "NVML_GPM_METRIC_DFMA_TENSOR_UTIL": 6,
    "NVML_GPM_METRIC_HMMA_TENSOR_UTIL": 7, "NVML_GPM_METRIC_DMMA_TENSOR_UTIL": 8,
    "NVML_GPM_METRIC_IMMA_TENSOR_UTIL": 9, "NVML_GPM_METRIC_DRAM_BW_UTIL": 10,
    "NVML_GPM_METRIC_FP64_UTIL": 11, "NVML_GPM_METRIC_FP32_UTIL": 12,
    "NVML_GPM_METRIC_FP16_UTIL": 13, "NVML_GPM_METRICS_GET_VERSION": 1,
    "NVML_FI_DEV_NVLINK_LINK_COUNT": 91, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX": 138,
    "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX": 139, "NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY": 161,
    "NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY": 162, "NVML_FI_DEV_NVLINK_ERROR_DL_CRC": 163,
    "NVML_FI_DEV_NVLINK_GET_STATE": 165, "NVML_FI_DEV_PCIE_COUNT_TX_BYTES": 197,
    "NVML_FI_DEV_PCIE_COUNT_RX_BYTES": 198, "NVML_NVLINK_STATE_ACTIVE": 1,
}


def test_profiling_constants_have_nvml_h_values() -> None:
    assert {name: getattr(pynvml, name, None) for name in NVML_H_VALUES} == NVML_H_VALUES
    for struct in ("c_nvmlGpmMetricsGet_t", "struct_c_nvmlGpmSample_t"):
        assert hasattr(pynvml, struct), struct
    assert [name for name, _ in pynvml.c_nvmlGpmMetricsGet_t._fields_] == [
        "version", "numMetrics", "sample1", "sample2", "metrics"]


@pytest.mark.parametrize("name", sorted(all_called()))
def test_nvml_function_exists_in_pynvml_and_the_simulator(name: str) -> None:
    if name in LEGACY_NVML_FUNCTIONS:  # a fallback for old drivers, gone from newer pynvml
        return
    assert callable(getattr(pynvml, name, None)), f"pynvml has no {name}"
    assert callable(getattr(SimulatedNVML, name, None)), f"the simulator has no {name}"


def test_an_attribute_error_inside_a_getter_is_a_failure_not_unsupported(caplog) -> None:
    """A getter that raises AttributeError (a misspelt name inside a wrapper, a bug) makes the
    collector fail loudly; before, it read as 'unsupported' and the metric silently vanished."""
    nvml = SimulatedNVML(1, clock=lambda: 0.0)

    def broken(handle):
        raise AttributeError("module 'pynvml' has no attribute 'nvmlDeviceGetFanSpeeed'")

    nvml.nvmlDeviceGetFanSpeed = broken  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING)
    text = exposition(build_scrape(["gpu"], nvml))
    assert collector_success(text) == {"gpu": 0.0}
    assert any("AttributeError" in message and "nvmlDeviceGetFanSpeeed" in message
               for message in caplog.messages)

"""The simulated NVML's profiling side: GPM samples, NVLink and PCIe field values, PCIe link state.

Split from nvml_sim so each file stays readable; SimulatedNVML mixes it in. The GPM functions
take and fill pynvml's own ctypes structures (sample buffers, nvmlGpmMetricsGet_t), so the
collector code that tests run is the code that runs against a real driver. Values follow the
device's utilisation wave and its workload: "training" keeps the tensor cores busy, "stalled"
runs kernels that leave them idle (a stalled collective, an input-bound loader) and "idle"
holds memory with no kernel running.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pynvml

if TYPE_CHECKING:
    from exporter.nvml_sim import SimulatedDevice

ALL_LINKS = 0xFFFFFFFF  # the scopeId NVML sums NVLink throughput over
WAVE_PERIOD_SECONDS = 300.0
WORKLOADS = ("training", "stalled", "idle")


@dataclass(frozen=True)
class SimulatedModel:
    """What a GPU model offers: GPM (Hopper and later), NVLink links, its PCIe link."""

    name: str
    gpm: bool
    nvlink_links: int
    pcie_generation: int
    pcie_width: int = 16
    memory_gib: int = 80


MODELS = {
    "h100": SimulatedModel("NVIDIA H100 80GB HBM3 (simulated)", True, 18, 5),
    "a100": SimulatedModel("NVIDIA A100-SXM4-80GB (simulated)", False, 12, 4),
    "l4": SimulatedModel("NVIDIA L4 (simulated)", False, 0, 4, memory_gib=24),
}

# Share of the utilisation wave each GPM metric shows, by workload (the rest report 0).
_GPM_SHARES = {
    "training": {
        pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 1.0, pynvml.NVML_GPM_METRIC_SM_UTIL: 0.95,
        pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 0.45, pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 0.6,
        pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: 0.55, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 0.5,
        pynvml.NVML_GPM_METRIC_FP32_UTIL: 0.08, pynvml.NVML_GPM_METRIC_FP16_UTIL: 0.05,
        pynvml.NVML_GPM_METRIC_INTEGER_UTIL: 0.1,
    },
    "stalled": {
        pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 1.0, pynvml.NVML_GPM_METRIC_SM_UTIL: 0.9,
        pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 0.1, pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 0.02,
        pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: 0.02, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 0.05,
        pynvml.NVML_GPM_METRIC_INTEGER_UTIL: 0.05,
    },
    "idle": {},
}
GPM_METRIC_IDS = frozenset(value for name, value in vars(pynvml).items()
                           if name.startswith("NVML_GPM_METRIC_") and name != "NVML_GPM_METRIC_MAX")
_NVLINK_ERRORS = {pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_CRC: 3,
                  pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY: 2,
                  pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY: 0}
NVLINK_LINK_BYTES_PER_SECOND = 25e9  # one NVLink 4 link, one direction, flat out
PCIE_BYTES_PER_SECOND = 8e9
ERRORS_GROW_EVERY_SECONDS = 60.0


@dataclass
class _GpmSample:
    index: int
    gpu_instance_id: int | None
    taken_at: float


def _success(kind: int, value: float) -> SimpleNamespace:
    member = {pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal"}.get(kind, "ullVal")
    return SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, valueType=kind,
                           value=SimpleNamespace(**{member: int(value)}))


class SimulatedProfiling:
    """GPM, NVLink and PCIe for SimulatedNVML (which provides devices, clock and _device)."""

    devices: list[SimulatedDevice]
    clock: Callable[[], float]
    _device: Callable[..., SimulatedDevice]
    _utilization_percent: Callable[[int], int]

    def _init_profiling(self) -> None:
        self._gpm_samples: dict[int, tuple[Any, _GpmSample | None]] = {}

    def model(self, device: SimulatedDevice) -> SimulatedModel:
        return MODELS[device.model]

    # -- dynamics ---------------------------------------------------------------------------
    def _busy_ratio(self, device: SimulatedDevice, at: float) -> float:
        """The device's utilisation wave (0.1-0.9) at simulated time `at`; ~0 when idle."""
        if device.workload == "idle":
            return 0.0
        return 0.5 + 0.4 * math.sin(2 * math.pi * at / WAVE_PERIOD_SECONDS + device.index)

    @staticmethod
    def _busy_seconds(device: SimulatedDevice, now: float) -> float:
        """The wave integrated from 0 to `now`: seconds of full-speed work, for byte counters
        that grow with the load (and never go back)."""
        if device.workload == "idle":
            return 0.0
        phase = 2 * math.pi / WAVE_PERIOD_SECONDS
        return 0.5 * now - 0.4 / phase * (math.cos(phase * now + device.index)
                                          - math.cos(device.index))

    # -- GPM --------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> SimpleNamespace:
        device = self._device(handle, "nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(version=pynvml.NVML_GPM_SUPPORT_VERSION,
                               isSupportedDevice=int(self.model(device).gpm))

    def nvmlGpmSampleAlloc(self) -> Any:
        """A real pynvml sample pointer (so it fits nvmlGpmMetricsGet_t), known by address."""
        buffer = pynvml.struct_c_nvmlGpmSample_t()
        sample = ctypes.pointer(buffer)
        self._gpm_samples[ctypes.addressof(buffer)] = (buffer, None)
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        if self._gpm_samples.pop(ctypes.addressof(sample.contents), None) is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        device = self._device(handle, "nvmlGpmSampleGet")
        return self._record_sample(device, None, sample)

    def nvmlGpmMigSampleGet(self, handle: Any, gpu_instance_id: int, sample: Any) -> Any:
        device = self._device(handle, "nvmlGpmMigSampleGet")
        if not 1 <= gpu_instance_id <= device.mig_instances:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self._record_sample(device, gpu_instance_id, sample)

    def _record_sample(self, device: SimulatedDevice, gpu_instance_id: int | None,
                       sample: Any) -> Any:
        if not self.model(device).gpm:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        address = ctypes.addressof(sample.contents)
        if address not in self._gpm_samples:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        buffer, _ = self._gpm_samples[address]
        self._gpm_samples[address] = (buffer, _GpmSample(device.index, gpu_instance_id,
                                                         self.clock()))
        return sample

    def nvmlGpmMetricsGet(self, metrics_get: Any) -> Any:
        """Fill metrics_get.metrics[:numMetrics] from the two samples, as NVML does."""
        if metrics_get.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first, second = (self._gpm_samples.get(ctypes.addressof(pointer.contents), (None, None))[1]
                         for pointer in (metrics_get.sample1, metrics_get.sample2))
        if first is None or second is None or (first.index, first.gpu_instance_id) != (
                second.index, second.gpu_instance_id) or second.taken_at < first.taken_at:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        device = self._device(SimpleNamespace(index=second.index, mig_slot=None),
                              "nvmlGpmMetricsGet")
        busy = self._busy_ratio(device, (first.taken_at + second.taken_at) / 2)
        if second.gpu_instance_id is not None:  # instances share the GPU unevenly
            busy *= 0.5 + 0.25 * (second.gpu_instance_id % 2)
        shares = _GPM_SHARES[device.workload]
        for metric in metrics_get.metrics[:metrics_get.numMetrics]:
            if metric.metricId in GPM_METRIC_IDS:
                metric.nvmlReturn = pynvml.NVML_SUCCESS
                metric.value = 100.0 * busy * shares.get(metric.metricId, 0.0)
            else:
                metric.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
        return metrics_get

    # -- PCIe link --------------------------------------------------------------------------
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        """Idle GPUs drop to generation 1 to save power, as real ones do."""
        device = self._device(handle, "nvmlDeviceGetCurrPcieLinkGeneration")
        if device.pcie_link is not None:
            return device.pcie_link[0]
        if self._utilization_percent(device.index) <= 5 or device.workload == "idle":
            return 1
        return self.model(device).pcie_generation

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        device = self._device(handle, "nvmlDeviceGetMaxPcieLinkGeneration")
        return self.model(device).pcie_generation

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        device = self._device(handle, "nvmlDeviceGetCurrPcieLinkWidth")
        return device.pcie_link[1] if device.pcie_link is not None else self.model(
            device).pcie_width

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        device = self._device(handle, "nvmlDeviceGetMaxPcieLinkWidth")
        return self.model(device).pcie_width

    # -- NVLink and PCIe field values ---------------------------------------------------------
    def _profiling_field(self, device: SimulatedDevice, field_id: int, scope: int,
                         now: float) -> SimpleNamespace | None:
        """A NVLink or PCIe field entry at `now`, or None if the field is not one of these."""
        links = self.model(device).nvlink_links
        busy_seconds = self._busy_seconds(device, now)
        long_long = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
        if field_id in (pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
                        pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES):
            share = 0.3 if field_id == pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES else 1.0
            return _success(long_long, PCIE_BYTES_PER_SECOND * share * busy_seconds)
        nvlink = (pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, pynvml.NVML_FI_DEV_NVLINK_GET_STATE,
                  pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
                  pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, *_NVLINK_ERRORS)
        if field_id not in nvlink:
            return None
        if links == 0:
            return SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=0,
                                   value=None)
        if field_id == pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT:
            return _success(pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, links)
        if field_id in (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
                        pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX) and scope == ALL_LINKS:
            kib = sum(self._link_kib(busy_seconds, link) for link in range(links))
            return _success(long_long, kib)
        if scope >= links:
            return SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_INVALID_ARGUMENT, valueType=0,
                                   value=None)
        if field_id == pynvml.NVML_FI_DEV_NVLINK_GET_STATE:
            return _success(pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, 1)
        if field_id in _NVLINK_ERRORS:  # a few old errors; GPU 1's link 2 keeps replaying
            growing = int(now // ERRORS_GROW_EVERY_SECONDS) if (
                device.index, scope, field_id) == (1, 2, pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY
            ) else 0
            return _success(long_long, (scope + device.index) % 2 * _NVLINK_ERRORS[field_id]
                            + growing)
        return _success(long_long, self._link_kib(busy_seconds, scope))

    @staticmethod
    def _link_kib(busy_seconds: float, link: int) -> int:
        """KiB one link has carried (NVML counts NVLink data in KiB); links differ a little."""
        return int(NVLINK_LINK_BYTES_PER_SECOND * (1 - 0.02 * (link % 3)) * busy_seconds / 1024)

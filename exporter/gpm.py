"""GPM, NVML's GPU Performance Monitoring (Hopper and later): what the SMs, tensor cores, pipes and
DRAM did between two samples of a GPU, or of one MIG GPU instance.

NVML computes these only from two samples, so a GpmSampler keeps two sample buffers and takes
one sample per reading, on the GPU's sampler thread: each reading covers the time since the
previous one and costs two NVML calls there (sample, compute), none on the scrape path. NVML
refreshes the counters behind a sample about every 100 ms, so samples closer together than
that are not taken (the previous reading is kept).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import pynvml

from exporter.nvml import is_field_unavailable, nvml_function

MIN_SAMPLE_SECONDS = 0.1

# The GPM metrics read, as (metric family suffix, extra label values); all are 0-100 percent.
GPM_METRICS: dict[int, tuple[str, tuple[str, ...]]] = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: ("graphics_active_ratio", ()),
    pynvml.NVML_GPM_METRIC_SM_UTIL: ("sm_active_ratio", ()),
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: ("sm_occupancy_ratio", ()),
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: ("tensor_active_ratio", ()),
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: ("dram_active_ratio", ()),
    pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: ("pipe_active_ratio", ("tensor_hmma",)),
    pynvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL: ("pipe_active_ratio", ("tensor_imma",)),
    pynvml.NVML_GPM_METRIC_DFMA_TENSOR_UTIL: ("pipe_active_ratio", ("tensor_dfma",)),
    pynvml.NVML_GPM_METRIC_DMMA_TENSOR_UTIL: ("pipe_active_ratio", ("tensor_dmma",)),
    pynvml.NVML_GPM_METRIC_FP64_UTIL: ("pipe_active_ratio", ("fp64",)),
    pynvml.NVML_GPM_METRIC_FP32_UTIL: ("pipe_active_ratio", ("fp32",)),
    pynvml.NVML_GPM_METRIC_FP16_UTIL: ("pipe_active_ratio", ("fp16",)),
    pynvml.NVML_GPM_METRIC_INTEGER_UTIL: ("pipe_active_ratio", ("integer",)),
}
GPM_METRIC_IDS = list(GPM_METRICS)


@dataclass(frozen=True)
class GpmReading:
    """The ratios (0-1) NVML computed between two samples, by metric id, and how far apart
    the samples were."""

    ratios: dict[int, float]
    interval_seconds: float


def gpm_supported(nvml: Any, handle: Any) -> bool:
    """Whether the GPU offers GPM (Hopper and later, with a driver that knows it)."""
    query = nvml_function(nvml, "nvmlGpmQueryDeviceSupport")
    if query is None:
        return False
    try:
        return bool(query(handle).isSupportedDevice)
    except pynvml.NVMLError as error:
        if is_field_unavailable(error):
            return False
        raise


class GpmSampler:
    """Two sample buffers of one GPU (or of one of its MIG GPU instances) and the last reading.

    Use it on the GPU's sampler thread only. Raises NVMLError when the GPU itself fails; an
    'unsupported' answer (MIG mode, an instance gone) gives no reading instead.
    """

    def __init__(self, nvml: Any, handle: Any, gpu_instance_id: int | None = None) -> None:
        self.nvml = nvml
        self.handle = handle
        self.gpu_instance_id = gpu_instance_id
        self._buffers = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        self._previous_at: float | None = None  # when _buffers[0] was filled
        self._last: GpmReading | None = None

    def read(self) -> GpmReading | None:
        """Sample now; the ratios since the previous sample (None after the first one)."""
        now = time.monotonic()
        if self._previous_at is not None and now - self._previous_at < MIN_SAMPLE_SECONDS:
            return self._last
        try:
            self._sample(self._buffers[1])
            previous_at, self._previous_at = self._previous_at, now
            self._buffers.reverse()  # the new sample is the next reading's first
            if previous_at is None:
                return None
            self._last = GpmReading(self._metrics(self._buffers[1], self._buffers[0]),
                                    now - previous_at)
        except pynvml.NVMLError as error:
            if is_field_unavailable(error):
                self._previous_at, self._last = None, None
                return None
            raise
        return self._last

    def close(self) -> None:
        """Give NVML its buffers back (a MIG instance that went away)."""
        for buffer in self._buffers:
            with contextlib.suppress(pynvml.NVMLError):  # gone with the GPU: nothing to free
                self.nvml.nvmlGpmSampleFree(buffer)

    def _sample(self, buffer: Any) -> None:
        if self.gpu_instance_id is None:
            self.nvml.nvmlGpmSampleGet(self.handle, buffer)
        else:
            self.nvml.nvmlGpmMigSampleGet(self.handle, self.gpu_instance_id, buffer)

    def _metrics(self, older: Any, newer: Any) -> dict[int, float]:
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(GPM_METRIC_IDS)
        request.sample1 = older
        request.sample2 = newer
        for slot, metric_id in enumerate(GPM_METRIC_IDS):
            request.metrics[slot].metricId = metric_id
        answer = self.nvml.nvmlGpmMetricsGet(request)
        return {metric.metricId: metric.value / 100
                for metric in answer.metrics[:len(GPM_METRIC_IDS)]
                if metric.nvmlReturn == pynvml.NVML_SUCCESS}

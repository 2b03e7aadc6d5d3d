"""GPU profiling collector: is the GPU doing useful work, and what do its links carry.

What dcgm-exporter reads through the DCGM host engine, read from NVML alone: SM, tensor, pipe
and DRAM activity from GPM (Hopper and later; per MIG GPU instance too), NVLink throughput and
error counters and PCIe byte counters from one nvmlDeviceGetFieldValues call, and the PCIe link
generation and width against their maxima. NVLink is reported per GPU (NVML's total traffic,
errors summed over the links, links up); --collector.gpu_profiling.nvlink-per-link adds each
link's series, 108 more per H100 (dcgm-exporter leaves per-link fields out by default too).
Everything is read on each GPU's sampler thread every --collector.gpu.sample-interval; the GPM
ratios cover exactly the time between two readings, published as
aiinfra_gpu_profiling_interval_seconds. A scrape copies the latest reading. A field the GPU or
driver lacks is left out silently; a GPU whose profiling calls fail (lost, Unknown) loses its
profiling series alone, logged once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pynvml
from prometheus_client.core import Metric

from exporter.collectors.gpu import BatchedField
from exporter.device_watch import DeviceState
from exporter.families import FamilyBook
from exporter.gpm import GPM_METRICS, GpmSampler, gpm_supported
from exporter.nvml import GpuDevice, field_reading, read_mig
from exporter.nvml_collector import LOG, NvmlCollector, Rows
from exporter.registry import ExporterOptions, register

ALL_LINKS = 0xFFFFFFFF  # the scopeId for which NVML sums a throughput counter over all links
KIB = 1 / 1024  # BatchedField divides: NVML counts NVLink data in KiB

# One nvmlDeviceGetFieldValues call per reading: the device-wide fields, then each link's.
DEVICE_FIELDS = {
    (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS): BatchedField(
        "aiinfra_gpu_nvlink_receive_bytes", divide=KIB),
    (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS): BatchedField(
        "aiinfra_gpu_nvlink_transmit_bytes", divide=KIB),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0): BatchedField("aiinfra_gpu_pcie_receive_bytes"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0): BatchedField("aiinfra_gpu_pcie_transmit_bytes"),
}
LINK_FIELDS = {
    pynvml.NVML_FI_DEV_NVLINK_GET_STATE: BatchedField("aiinfra_gpu_nvlink_link_up"),
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: BatchedField(
        "aiinfra_gpu_nvlink_link_receive_bytes", divide=KIB),
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: BatchedField(
        "aiinfra_gpu_nvlink_link_transmit_bytes", divide=KIB),
    pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_CRC: BatchedField("aiinfra_gpu_nvlink_link_errors",
                                                         ("crc",)),
    pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY: BatchedField("aiinfra_gpu_nvlink_link_errors",
                                                            ("replay",)),
    pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY: BatchedField("aiinfra_gpu_nvlink_link_errors",
                                                              ("recovery",)),
}
LINK_TOTALS = {  # per-link family -> its per-GPU sum, always reported
    "aiinfra_gpu_nvlink_link_up": "aiinfra_gpu_nvlink_links_up",
    "aiinfra_gpu_nvlink_link_errors": "aiinfra_gpu_nvlink_errors",
}
PCIE_LINK = {  # family -> (current getter, maximum getter)
    "generation": ("nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration"),
    "width": ("nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth"),
}
_GPM_HELP = {
    "graphics_active_ratio": "Fraction of the interval any graphics or compute engine was busy",
    "sm_active_ratio": "Fraction of the interval the SMs had at least one warp (SM activity)",
    "sm_occupancy_ratio": "Resident warps as a fraction of the SMs' maximum",
    "tensor_active_ratio": "Fraction of the interval any tensor pipe was busy",
    "dram_active_ratio": "Device memory bandwidth used, as a fraction of its peak",
    "pipe_active_ratio": "Fraction of the interval a pipe was busy (tensor by type, and "
                         "non-tensor fp64, fp32, fp16, integer)",
}


def declare_families(book: FamilyBook) -> None:
    """Every profiling family, in exposition order (MIG ones per GPU instance)."""
    for prefix, scope, instance_labels in (("aiinfra_gpu_", "GPU", ()),
                                           ("aiinfra_gpu_mig_", "MIG GPU instance",
                                            ("gpu_instance_id",))):
        book.gauge(f"{prefix}profiling_interval_seconds",
                   f"Length of the interval the {scope}'s GPM ratios cover.", instance_labels)
        for suffix, help_text in _GPM_HELP.items():
            extra = ("pipe",) if suffix == "pipe_active_ratio" else ()
            book.gauge(prefix + suffix, f"{help_text} (GPM, {scope}).",
                       (*instance_labels, *extra))
    book.counter("aiinfra_gpu_nvlink_receive_bytes", "NVLink data received, all links.")
    book.counter("aiinfra_gpu_nvlink_transmit_bytes", "NVLink data sent, all links.")
    book.gauge("aiinfra_gpu_nvlink_links_up", "NVLink links active.")
    book.counter("aiinfra_gpu_nvlink_errors",
                 "NVLink data-link errors by type (crc, replay, recovery), all links.", ("type",))
    book.gauge("aiinfra_gpu_nvlink_link_up", "1 if the NVLink link is active.", ("link",))
    book.counter("aiinfra_gpu_nvlink_link_receive_bytes", "NVLink data received on a link.",
                 ("link",))
    book.counter("aiinfra_gpu_nvlink_link_transmit_bytes", "NVLink data sent on a link.",
                 ("link",))
    book.counter("aiinfra_gpu_nvlink_link_errors",
                 "NVLink data-link errors by type (crc, replay, recovery).", ("link", "type"))
    book.counter("aiinfra_gpu_pcie_receive_bytes", "Bytes the GPU received over PCIe.")
    book.counter("aiinfra_gpu_pcie_transmit_bytes", "Bytes the GPU sent over PCIe.")
    book.gauge("aiinfra_gpu_pcie_current_link_generation",
               "PCIe generation the link runs at now (idle GPUs may step down to save power).")
    book.gauge("aiinfra_gpu_pcie_max_link_generation",
               "Highest PCIe generation this GPU and its slot support together.")
    book.gauge("aiinfra_gpu_pcie_current_link_width", "PCIe lanes the link runs on now.")
    book.gauge("aiinfra_gpu_pcie_max_link_width", "PCIe lanes this GPU and its slot support.")


@dataclass
class _Profile:
    """What is learnt about one GPU once (its GPM support, links, PCIe maxima) and its GPM
    samplers by MIG GPU instance (None: the whole GPU). Used on the GPU's thread only."""

    gpm: bool | None = None
    field_ids: list[tuple[int, int]] | None = None
    pcie_max: dict[str, Any] = field(default_factory=dict)
    samplers: dict[int | None, GpmSampler] = field(default_factory=dict)


@register
class GpuProfilingCollector(NvmlCollector):
    name = "gpu_profiling"
    help_text = ("GPU activity (GPM: SM, tensor, DRAM), NVLink and PCIe traffic and errors, PCIe "
                 "link state")
    watch_key = "profiling"

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        self._profiles: dict[int, _Profile] = {}  # each entry used by its GPU's thread only

    def families(self, states: list[DeviceState]) -> list[Metric]:
        book = FamilyBook()
        declare_families(book)
        for state in states:
            book.commit(state.value or [])
        return book.families()

    def read_device(self, device: GpuDevice) -> Rows | None:
        """Every profiling reading of one GPU as rows, or None if its calls fail."""
        return self.read_rows(device, self._read_into)

    def _read_into(self, device: GpuDevice, rows: Rows) -> None:
        def put(name: str, value: float | None, *extra: str) -> None:
            if value is not None:
                rows.append((name, [*device.labels, *extra], float(value)))

        profile = self._profiles.setdefault(device.index, _Profile())
        self._read_gpm(device, profile, put)
        self._read_fields(device, profile, put)
        self._read_pcie_link(device, profile, put)

    def mark_down(self, device: GpuDevice, reason: str) -> None:
        """Logged once, naming this collector: the gpu collector may still read the GPU."""
        with self._down_lock:
            if device.index in self._down:
                return
            self._down.add(device.index)
        LOG.warning("GPU %d (%s): profiling readings failed: %s; its profiling series are "
                    "dropped", device.index, device.uuid or "uuid unknown", reason)

    def _read_gpm(self, device: GpuDevice, profile: _Profile, put: Any) -> None:
        """The whole GPU's GPM ratios and, with MIG on, each GPU instance's."""
        nvml = self.session.nvml
        if profile.gpm is None:
            profile.gpm = gpm_supported(nvml, device.handle)
        if not profile.gpm:
            return
        instances: list[int | None] = [None]
        mig = read_mig(nvml, device.handle)
        if mig is not None:
            instances += sorted({instance.gpu_instance_id for instance in mig.instances
                                 if instance.gpu_instance_id is not None})
        for gone in profile.samplers.keys() - set(instances):
            profile.samplers.pop(gone).close()
        for instance in instances:
            if instance not in profile.samplers:
                profile.samplers[instance] = GpmSampler(nvml, device.handle, instance)
            reading = profile.samplers[instance].read()
            if reading is None:
                continue
            prefix, labels = ("aiinfra_gpu_", ()) if instance is None else (
                "aiinfra_gpu_mig_", (str(instance),))
            put(f"{prefix}profiling_interval_seconds", reading.interval_seconds, *labels)
            for metric_id, ratio in reading.ratios.items():
                suffix, extra = GPM_METRICS[metric_id]
                put(prefix + suffix, ratio, *labels, *extra)

    def _read_fields(self, device: GpuDevice, profile: _Profile, put: Any) -> None:
        """NVLink and PCIe counters in one call (the link count is asked once)."""
        if profile.field_ids is None:
            count = self.read(device, "nvmlDeviceGetFieldValues",
                              [pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT])
            links = int(field_reading(count[0]) or 0) if count else 0
            profile.field_ids = [*DEVICE_FIELDS, *((field_id, link) for link in range(links)
                                                   for field_id in LINK_FIELDS)]
        values = self.read(device, "nvmlDeviceGetFieldValues", profile.field_ids)
        totals: dict[tuple[str, tuple[str, ...]], float] = {}  # per-link family -> sum of links
        for (field_id, scope), value in zip(profile.field_ids, values or (), strict=False):
            reading = field_reading(value)
            if reading is None:
                continue
            if (field_id, scope) in DEVICE_FIELDS:
                spec = DEVICE_FIELDS[(field_id, scope)]
                put(spec.family, reading / spec.divide, *spec.extra_labels)
                continue
            spec = LINK_FIELDS[field_id]
            if field_id == pynvml.NVML_FI_DEV_NVLINK_GET_STATE:
                reading = 1.0 if reading == pynvml.NVML_NVLINK_STATE_ACTIVE else 0.0
            totals[(spec.family, spec.extra_labels)] = totals.get(
                (spec.family, spec.extra_labels), 0.0) + reading
            if self.options.nvlink_per_link:
                put(spec.family, reading / spec.divide, str(scope), *spec.extra_labels)
        for (family, extra_labels), total in totals.items():
            if family in LINK_TOTALS:
                put(LINK_TOTALS[family], total, *extra_labels)

    def _read_pcie_link(self, device: GpuDevice, profile: _Profile, put: Any) -> None:
        """Current generation and width each time; their maxima once."""
        for family, (current, maximum) in PCIE_LINK.items():
            if family not in profile.pcie_max:
                profile.pcie_max[family] = self.read(device, maximum)
            put(f"aiinfra_gpu_pcie_current_link_{family}", self.read(device, current))
            put(f"aiinfra_gpu_pcie_max_link_{family}", profile.pcie_max[family])

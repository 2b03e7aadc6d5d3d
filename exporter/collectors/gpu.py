"""GPU collector: per-GPU utilisation, memory, thermals, power, clocks, errors and MIG via NVML.

A GPU that fails a call (lost, Unknown) or hangs reports `aiinfra_gpu_up 0` and nothing else,
while the other GPUs are unaffected; a field the GPU does not support is skipped without a log
line. Each GPU is read on its own sampler thread (see nvml_collector for the staleness bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pynvml
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.device_watch import DeviceState
from exporter.families import FamilyBook
from exporter.nvml import GpuDevice, field_reading, read_field, read_mig
from exporter.nvml_collector import NvmlCollector, Rows
from exporter.registry import register

# NVML's clocks-event (formerly throttle) reason bits, named as in the NVML docs.
CLOCK_EVENT_REASONS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
ECC_TYPES = {
    "corrected": pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
    "uncorrected": pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
}


@dataclass(frozen=True)
class BatchedField:
    """Where one nvmlDeviceGetFieldValues entry goes: family, extra labels, unit divisor."""

    family: str
    extra_labels: tuple[str, ...] = ()
    divide: float = 1
    zero_means_absent: bool = False  # e.g. a GPU without an HBM sensor reports 0 C


# Read in ONE nvmlDeviceGetFieldValues call: on an H100 the eight nvmlDeviceGetViolationStatus
# calls alone took ~6 ms per GPU, the batch of all of these ~5 ms (energy being ~3 ms of it).
BATCHED_FIELDS = {
    pynvml.NVML_FI_DEV_MEMORY_TEMP: BatchedField("aiinfra_gpu_temperature_celsius", ("memory",),
                                                 zero_means_absent=True),
    pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: BatchedField("aiinfra_gpu_energy_joules",
                                                             divide=1000),  # mJ
    pynvml.NVML_FI_DEV_PERF_POLICY_POWER: BatchedField("aiinfra_gpu_violation_seconds",
                                                       ("power",), 1e9),  # ns
    pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL: BatchedField("aiinfra_gpu_violation_seconds",
                                                         ("thermal",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_SYNC_BOOST: BatchedField("aiinfra_gpu_violation_seconds",
                                                            ("sync_boost",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT: BatchedField("aiinfra_gpu_violation_seconds",
                                                             ("board_limit",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION: BatchedField(
        "aiinfra_gpu_violation_seconds", ("low_utilization",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_RELIABILITY: BatchedField("aiinfra_gpu_violation_seconds",
                                                             ("reliability",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_TOTAL_APP_CLOCKS: BatchedField(
        "aiinfra_gpu_violation_seconds", ("total_app_clocks",), 1e9),
    pynvml.NVML_FI_DEV_PERF_POLICY_TOTAL_BASE_CLOCKS: BatchedField(
        "aiinfra_gpu_violation_seconds", ("total_base_clocks",), 1e9),
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: BatchedField("aiinfra_gpu_pcie_replays"),
}
BATCHED_FIELD_IDS = list(BATCHED_FIELDS)
MIG_LABELS = ("gpu_instance_id", "compute_instance_id")


def declare_families(book: FamilyBook) -> None:
    """Every GPU family, in exposition order."""
    book.gauge("aiinfra_gpu_info", "Static GPU identity; always 1.",
               ("name", "pci_bus_id", "driver_version", "cuda_version"))
    book.gauge("aiinfra_gpu_up", "1 if the GPU answered NVML this scrape, 0 if lost or erroring.")
    book.gauge("aiinfra_gpu_utilization_ratio",
               "Fraction of the last sample period in which a kernel ran (0-1).")
    book.gauge("aiinfra_gpu_memory_copy_utilization_ratio",
               "Fraction of the last sample period in which device memory was read or written.")
    book.gauge("aiinfra_gpu_encoder_utilization_ratio", "Video encoder utilisation (0-1).")
    book.gauge("aiinfra_gpu_decoder_utilization_ratio", "Video decoder utilisation (0-1).")
    book.gauge("aiinfra_gpu_memory_used_bytes", "Device memory allocated.")
    book.gauge("aiinfra_gpu_memory_free_bytes", "Device memory free.")
    book.gauge("aiinfra_gpu_memory_total_bytes", "Device memory installed.")
    book.gauge("aiinfra_gpu_temperature_celsius", "Temperature by sensor (gpu die, memory).",
               ("sensor",))
    book.gauge("aiinfra_gpu_power_watts", "Power draw.")
    book.gauge("aiinfra_gpu_power_limit_watts", "Enforced power limit.")
    book.counter("aiinfra_gpu_energy_joules", "Energy used since the driver loaded.")
    book.gauge("aiinfra_gpu_clock_hertz", "Current clock by domain (sm, memory).", ("clock",))
    book.gauge("aiinfra_gpu_clock_event_active",
               "1 if this reason is currently holding clocks down (NVML clocks event reasons).",
               ("reason",))
    book.counter("aiinfra_gpu_violation_seconds",
                 "Time clocks were held below target by this policy.", ("policy",))
    book.counter("aiinfra_gpu_ecc_errors",
                 "ECC errors since the driver loaded (volatile counters).", ("type",))
    book.gauge("aiinfra_gpu_remapped_rows", "Memory rows remapped, by cause.", ("cause",))
    book.gauge("aiinfra_gpu_row_remap_pending", "1 if a row remap awaits a GPU reset.")
    book.gauge("aiinfra_gpu_row_remap_failed", "1 if a row remap has failed.")
    book.counter("aiinfra_gpu_pcie_replays", "PCIe replay events.")
    book.gauge("aiinfra_gpu_fan_speed_ratio", "Fan speed as a fraction of its maximum.")
    book.gauge("aiinfra_gpu_mig_mode_enabled", "1 if MIG mode is on.")
    book.gauge("aiinfra_gpu_mig_info", "A MIG instance; always 1.", (*MIG_LABELS, "mig_uuid"))
    book.gauge("aiinfra_gpu_mig_memory_used_bytes", "Memory used in a MIG instance.", MIG_LABELS)
    book.gauge("aiinfra_gpu_mig_memory_total_bytes", "Memory of a MIG instance.", MIG_LABELS)


@register
class GpuCollector(NvmlCollector):
    name = "gpu"
    help_text = "NVIDIA GPU metrics via NVML"
    watch_key = "gpu"

    def families(self, states: list[DeviceState]) -> list[Metric]:
        count = GaugeMetricFamily("aiinfra_gpus", "Number of GPUs NVML reports.")
        count.add_metric([], float(len(states)))
        book = FamilyBook()
        declare_families(book)
        for state in states:
            book.add("aiinfra_gpu_up", state.device.labels, 0.0 if state.value is None else 1.0)
            if state.value is not None:
                book.commit(state.value)
        return [count, *book.families()]

    def read_device(self, device: GpuDevice) -> Rows | None:
        """Every supported reading of one GPU as rows, or None if the GPU is lost or erroring."""
        return self.read_rows(device, self._read_into)

    def _read_into(self, device: GpuDevice, rows: Rows) -> None:
        """Append the readings; an NVMLError other than 'unsupported' means the GPU is broken."""
        labels = device.labels

        def put(name: str, value: float | None, *extra: str, divide: float = 1,
                multiply: float = 1) -> None:
            if value is not None:
                rows.append((name, [*labels, *extra], value * multiply / divide))

        session = self.session
        put("aiinfra_gpu_info", 1.0, device.name, device.pci_bus_id, session.driver_version,
            session.cuda_version)
        utilization = self.read(device, "nvmlDeviceGetUtilizationRates")
        if utilization is not None:
            put("aiinfra_gpu_utilization_ratio", utilization.gpu, divide=100)
            put("aiinfra_gpu_memory_copy_utilization_ratio", utilization.memory, divide=100)
        for codec, getter in (("encoder", "nvmlDeviceGetEncoderUtilization"),
                              ("decoder", "nvmlDeviceGetDecoderUtilization")):
            sample = self.read(device, getter)
            put(f"aiinfra_gpu_{codec}_utilization_ratio",
                sample[0] if sample is not None else None, divide=100)
        memory = self.read(device, "nvmlDeviceGetMemoryInfo")
        if memory is not None:
            put("aiinfra_gpu_memory_used_bytes", memory.used)
            put("aiinfra_gpu_memory_free_bytes", memory.free)
            put("aiinfra_gpu_memory_total_bytes", memory.total)
        put("aiinfra_gpu_temperature_celsius",
            self.read(device, "nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU), "gpu")
        put("aiinfra_gpu_power_watts", self.read(device, "nvmlDeviceGetPowerUsage"),
            divide=1000)
        put("aiinfra_gpu_power_limit_watts", self.read(device, "nvmlDeviceGetEnforcedPowerLimit"),
            divide=1000)
        for clock, clock_type in (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM)):
            put("aiinfra_gpu_clock_hertz", self.read(device, "nvmlDeviceGetClockInfo", clock_type),
                clock, multiply=1_000_000)
        reasons = self.read(device, "nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None:  # the name before driver 535
            reasons = self.read(device, "nvmlDeviceGetCurrentClocksThrottleReasons")
        if reasons is not None:
            for reason, bit in CLOCK_EVENT_REASONS.items():
                put("aiinfra_gpu_clock_event_active", 1.0 if reasons & bit else 0.0, reason)
        for error_type, type_code in ECC_TYPES.items():
            put("aiinfra_gpu_ecc_errors", self.read(device, "nvmlDeviceGetTotalEccErrors",
                                                     type_code, pynvml.NVML_VOLATILE_ECC),
                error_type)
        remapped = self.read(device, "nvmlDeviceGetRemappedRows")
        if remapped is not None:
            correctable, uncorrectable, pending, failed = remapped
            put("aiinfra_gpu_remapped_rows", correctable, "correctable")
            put("aiinfra_gpu_remapped_rows", uncorrectable, "uncorrectable")
            put("aiinfra_gpu_row_remap_pending", 1.0 if pending else 0.0)
            put("aiinfra_gpu_row_remap_failed", 1.0 if failed else 0.0)
        put("aiinfra_gpu_fan_speed_ratio", self.read(device, "nvmlDeviceGetFanSpeed"),
            divide=100)
        field_values = self.read(device, "nvmlDeviceGetFieldValues", BATCHED_FIELD_IDS)
        for field_id, field_value in zip(BATCHED_FIELD_IDS, field_values or (), strict=False):
            spec = BATCHED_FIELDS[field_id]
            reading = field_reading(field_value)
            if reading is not None and not (spec.zero_means_absent and reading == 0):
                put(spec.family, reading, *spec.extra_labels, divide=spec.divide)
        self._read_mig(device.handle, put)

    def _read_mig(self, handle: Any, put: Any) -> None:
        mig = read_mig(self.session.nvml, handle)
        if mig is None:
            return
        put("aiinfra_gpu_mig_mode_enabled", 1.0 if mig.enabled else 0.0)
        for instance in mig.instances:
            labels = [str(instance.gpu_instance_id), str(instance.compute_instance_id)]
            put("aiinfra_gpu_mig_info", 1.0, *labels, instance.uuid)
            memory = read_field(self.session.nvml, "nvmlDeviceGetMemoryInfo", instance.handle)
            if memory is not None:
                put("aiinfra_gpu_mig_memory_used_bytes", memory.used, *labels)
                put("aiinfra_gpu_mig_memory_total_bytes", memory.total, *labels)

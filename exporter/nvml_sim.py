"""A simulated NVML with the pynvml function names, for tests, benchmarks and demos without GPUs.

It raises the real pynvml error classes, so the collectors' error handling is exercised exactly as
on hardware. Per device it can be lost, fail with Unknown, hang, lack fields, fail one function,
run MIG instances, run processes and emit Xid events; it is one of a few GPU models (GPM and
NVLink or not, see nvml_sim_profiling) running a workload. Values follow slow waves of the clock
so a demo looks alive, and are fixed when the clock is (the golden-file test does that).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

from exporter.nvml_sim_profiling import MODELS, WORKLOADS, SimulatedProfiling

GIB = 1024**3
MIB = 1024**2
FAULTS = ("lost", "unknown", "hang")
HANG_SECONDS = 3600.0


class FaultSpecError(ValueError):
    """A --gpu.simulate-faults entry that cannot be understood."""


@dataclass
class SimulatedDevice:
    """What one fake GPU does: its fault, its unsupported functions, MIG and processes."""

    index: int
    fault: str | None = None
    unsupported: set[str | int] = field(default_factory=set)  # function names, field ids
    failing: set[str] = field(default_factory=set)  # functions that raise NVML_ERROR_UNKNOWN
    model: str = "h100"  # a key of nvml_sim_profiling.MODELS
    workload: str = "training"  # or "stalled" (tensor cores idle) or "idle" (no kernels)
    pcie_link: tuple[int, int] | None = None  # (generation, width) it trained at, if degraded
    mig_instances: int = 0
    processes: int = 0
    # Real pids shown as GPU processes: pid -> (memory bytes, SM percent; None: the wave).
    attached: dict[int, tuple[int, int | None]] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return f"GPU-5e1a7ed0-0000-4000-8000-{self.index:012d}"


@dataclass(frozen=True)
class _Handle:
    index: int
    mig_slot: int | None = None


class SimulatedNVML(SimulatedProfiling):
    """The subset of pynvml the collectors use, backed by N fake GPUs (H100s unless told)."""

    def __init__(self, device_count: int, clock: Callable[[], float] | None = None,
                 library_missing: bool = False, call_latency_seconds: float = 0.0) -> None:
        started = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - started)
        self.library_missing = library_missing
        self.call_latency_seconds = call_latency_seconds
        """Each device call sleeps this long (releasing the GIL, as pynvml's ctypes calls do):
        an H100 takes 5-8 ms for the gpu collector's ~20 calls."""
        self.devices = [SimulatedDevice(index) for index in range(device_count)]
        self.calling_threads: dict[int, set[str]] = {index: set() for index in range(device_count)}
        """GPU index -> names of the threads that made calls about it (tests check that each
        GPU is only asked on its own sampler thread)."""
        self.release_hangs = threading.Event()
        self._events: deque[tuple[int, int]] = deque()
        self._event_ready = threading.Condition()
        self._init_profiling()

    # -- test controls ---------------------------------------------------------------------
    def inject_xid(self, index: int, xid: int) -> None:
        """Queue an Xid critical error event for GPU `index`."""
        with self._event_ready:
            self._events.append((index, xid))
            self._event_ready.notify_all()

    def attach_process(self, index: int, pid: int, used_bytes: int = 4 * GIB,
                       sm_percent: int | None = None) -> None:
        """Show a (real) pid as a compute process on GPU `index`, for per-process tests."""
        self.devices[index].attached[pid] = (used_bytes, sm_percent)

    # -- fault plumbing ---------------------------------------------------------------------
    def _device(self, handle: _Handle, function: str) -> SimulatedDevice:
        self.calling_threads[handle.index].add(threading.current_thread().name)
        if self.call_latency_seconds:
            time.sleep(self.call_latency_seconds)
        device = self.devices[handle.index]
        if device.fault == "lost":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if device.fault == "unknown":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        if device.fault == "hang":
            self.release_hangs.wait(HANG_SECONDS)
        if function in device.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if function in device.failing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return device

    def _utilization_percent(self, index: int) -> int:
        return round(100 * self._busy_ratio(self.devices[index], self.clock()))

    # -- library ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.library_missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    def nvmlShutdown(self) -> None:
        self.release_hangs.set()

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        return f"/usr/bin/python3-sim-{pid}"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        return handle.index

    # -- identity ---------------------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        device = self._device(handle, "nvmlDeviceGetUUID")
        if handle.mig_slot is not None:
            return f"MIG-5e1a7ed0-{handle.index:04d}-4000-8000-{handle.mig_slot:012d}"
        return device.uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self.model(self._device(handle, "nvmlDeviceGetName")).name

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> SimpleNamespace:
        self._device(handle, "nvmlDeviceGetPciInfo")
        return SimpleNamespace(busId=f"00000000:{0x18 + handle.index:02X}:00.0".encode())

    # -- readings ---------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> SimpleNamespace:
        self._device(handle, "nvmlDeviceGetUtilizationRates")
        busy = self._utilization_percent(handle.index)
        return SimpleNamespace(gpu=busy, memory=busy * 6 // 10)

    def nvmlDeviceGetEncoderUtilization(self, handle: _Handle) -> list[int]:
        self._device(handle, "nvmlDeviceGetEncoderUtilization")
        return [handle.index % 3, 167000]

    def nvmlDeviceGetDecoderUtilization(self, handle: _Handle) -> list[int]:
        self._device(handle, "nvmlDeviceGetDecoderUtilization")
        return [handle.index % 2, 167000]

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> SimpleNamespace:
        device = self._device(handle, "nvmlDeviceGetMemoryInfo")
        total = self.model(device).memory_gib * GIB if handle.mig_slot is None else 10 * GIB
        held_percent = 60 if device.workload == "idle" else self._utilization_percent(
            handle.index)  # an idle job still holds its memory
        used = total * held_percent * 9 // 1000 // MIB * MIB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        self._device(handle, "nvmlDeviceGetTemperature")
        return 30 + self._utilization_percent(handle.index) * 4 // 10

    def nvmlDeviceGetFieldValues(self, handle: _Handle,
                                 field_ids: list[int | tuple[int, int]]) -> list:
        """Entries for field ids or (field id, scope id) pairs, as pynvml takes them."""
        device = self._device(handle, "nvmlDeviceGetFieldValues")
        now = self.clock()  # one snapshot: NVML's aggregates equal the sum of their parts
        return [self._field_value(device, *(entry if isinstance(entry, tuple) else (entry, 0)),
                                  now) for entry in field_ids]

    def _field_value(self, device: SimulatedDevice, field_id: int, scope: int,
                     now: float) -> SimpleNamespace:
        """One entry as NVML fills it: a per-field status, a value type and a value union."""
        profiling = self._profiling_field(device, field_id, scope, now)
        if profiling is not None and field_id not in device.unsupported:
            return profiling
        busy = self._utilization_percent(device.index)
        policies = range(pynvml.NVML_FI_DEV_PERF_POLICY_POWER,
                         pynvml.NVML_FI_DEV_PERF_POLICY_TOTAL_BASE_CLOCKS + 1)
        if field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP:
            kind, value = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, 36 + busy * 4 // 10
        elif field_id == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:  # mJ
            kind = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            value = 1_000_000_000 * (device.index + 1) + int(385_000 * self.clock())
        elif field_id in policies:  # ns held back by this policy
            kind = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            value = int(self.clock() * 1e7) * device.index * (field_id - policies.start + 1)
        elif field_id == pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER:
            kind, value = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, 2 * device.index
        else:
            kind, value = None, None
        if kind is None or field_id in device.unsupported:
            return SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=0,
                                   value=None)
        member = {pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal"}.get(kind, "ullVal")
        return SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, valueType=kind,
                               value=SimpleNamespace(**{member: value}))

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetPowerUsage")
        return 70_000 + self._utilization_percent(handle.index) * 6_300

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetEnforcedPowerLimit")
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        self._device(handle, "nvmlDeviceGetClockInfo")
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return 2619
        return 1980 if self._utilization_percent(handle.index) > 5 else 345

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        reasons = pynvml.nvmlClocksEventReasonSwPowerCap if handle.index == 1 else 0
        if self._utilization_percent(handle.index) <= 5:
            reasons |= pynvml.nvmlClocksEventReasonGpuIdle
        return reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter: int) -> int:
        self._device(handle, "nvmlDeviceGetTotalEccErrors")
        return 3 * handle.index if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else 0

    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:
        self._device(handle, "nvmlDeviceGetRemappedRows")
        return (handle.index, 0, 0, 0)

    def nvmlDeviceGetFanSpeed(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetFanSpeed")
        return 35 + handle.index

    # -- MIG --------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        device = self._device(handle, "nvmlDeviceGetMigMode")
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if device.mig_instances else 0
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, slot: int) -> _Handle:
        device = self._device(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if slot >= device.mig_instances:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.index, slot)

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetGpuInstanceId")
        return 1 + (handle.mig_slot or 0)

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        self._device(handle, "nvmlDeviceGetComputeInstanceId")
        return 0

    # -- processes --------------------------------------------------------------------------
    def _processes(self, device: SimulatedDevice) -> dict[int, tuple[int, int]]:
        """pid -> (memory bytes, SM percent) of every process on the device."""
        wave = self._utilization_percent(device.index)
        processes = {4000 + 10 * device.index + number: ((number + 1) * GIB, wave // (number + 2))
                     for number in range(device.processes)}
        for pid, (used, percent) in device.attached.items():
            processes[pid] = (used, wave if percent is None else percent)
        return processes

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[SimpleNamespace]:
        device = self._device(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used)
                for pid, (used, _percent) in self._processes(device).items()]

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle,
                                        since_microseconds: int) -> list[SimpleNamespace]:
        """One sample per process, stamped with the simulated clock (NOT_FOUND when it has not
        moved since the caller's last sample, as NVML answers when nothing new was sampled)."""
        device = self._device(handle, "nvmlDeviceGetProcessUtilization")
        stamp = int(self.clock() * 1e6) + 1
        processes = self._processes(device)
        if stamp <= since_microseconds or not processes:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return [SimpleNamespace(pid=pid, timeStamp=stamp, smUtil=percent, memUtil=percent // 2,
                                encUtil=0, decUtil=0)
                for pid, (_used, percent) in processes.items()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[SimpleNamespace]:
        self._device(handle, "nvmlDeviceGetGraphicsRunningProcesses")
        return []

    # -- Xid events -------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlDeviceRegisterEvents(self, handle: _Handle, event_types: int, event_set: Any) -> None:
        self._device(handle, "nvmlDeviceRegisterEvents")

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> SimpleNamespace:
        with self._event_ready:
            if not self._events:
                self._event_ready.wait(timeout_ms / 1000)
            if not self._events:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
            index, xid = self._events.popleft()
        return SimpleNamespace(device=_Handle(index),
                               eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid,
                               gpuInstanceId=0xFFFFFFFF,
                               computeInstanceId=0xFFFFFFFF)

    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None


def parse_fault_spec(spec: str, simulated: SimulatedNVML) -> None:
    """Apply 'INDEX:WHAT,...' to the simulated devices (or 'driver:missing').

    WHAT is one of lost, unknown, hang, unsupported=NAME (a pynvml function, or an NVML_FI_*
    field of nvmlDeviceGetFieldValues), error=NAME (that pynvml function raises
    NVML_ERROR_UNKNOWN), mig=N (N MIG instances), processes=N, pid=N (a real process shown using
    4 GiB), xid=N (one Xid event at start), model=h100|a100|l4, workload=training|stalled|idle,
    pcie=GENxWIDTH (the link trained below its maximum, e.g. pcie=3x8).
    """
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        target, _, what = entry.partition(":")
        if target == "driver":
            if what != "missing":
                raise FaultSpecError(f"{entry!r}: the only driver fault is 'driver:missing'")
            simulated.library_missing = True
            continue
        if not target.isdigit() or int(target) >= len(simulated.devices):
            raise FaultSpecError(f"{entry!r}: {target!r} is not a simulated GPU index "
                                 f"(0..{len(simulated.devices) - 1})")
        device = simulated.devices[int(target)]
        key, _, value = what.partition("=")
        if key in FAULTS and not value:
            device.fault = key
        elif key == "unsupported" and value.startswith("nvml"):
            device.unsupported.add(value)
        elif key == "unsupported" and isinstance(getattr(pynvml, value, None), int):
            device.unsupported.add(getattr(pynvml, value))  # an NVML_FI_* field id
        elif key == "error" and value.startswith("nvml"):
            device.failing.add(value)
        elif key == "model" and value in MODELS:
            device.model = value
        elif key == "workload" and value in WORKLOADS:
            device.workload = value
        elif key == "pcie" and re.fullmatch(r"[1-6]x(1|2|4|8|16)", value):
            generation, width = value.split("x")
            device.pcie_link = (int(generation), int(width))
        elif key in ("mig", "processes", "pid", "xid") and value.isdigit():
            if key == "mig":
                device.mig_instances = int(value)
            elif key == "processes":
                device.processes = int(value)
            elif key == "pid":
                simulated.attach_process(device.index, int(value))
            else:
                simulated.inject_xid(device.index, int(value))
        else:
            raise FaultSpecError(
                f"{entry!r}: expected INDEX:lost|unknown|hang|unsupported=nvmlFunction|"
                f"unsupported=NVML_FI_FIELD|error=nvmlFunction|mig=N|processes=N|pid=N|xid=N|"
                f"model={'|'.join(MODELS)}|workload={'|'.join(WORKLOADS)}|pcie=GENxWIDTH")

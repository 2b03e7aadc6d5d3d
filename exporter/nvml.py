"""The NVML boundary: one shared session over `pynvml` (or the simulated stand-in in nvml_sim).

Collectors call NVML functions by their pynvml names on `session.nvml`, which is the real pynvml
module in production. Keeping the simulation at this exact boundary means the code the tests run
is the code that runs on a GPU node.

nvmlInit runs with a deadline, on its own thread, and only system-wide calls run there; every
call about one GPU (its handle, identity, readings, event registration) runs on that GPU's own
DeviceSampler thread, so a GPU that hangs in the driver holds up nothing but itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import pynvml

from exporter.device_sampler import DeviceSampler
from exporter.registry import CollectorFailed
from exporter.worker import CallTimeout, SingleFlight

LOG = logging.getLogger("exporter.nvml")
T = TypeVar("T")

# Errors that mean "this GPU cannot give this field", not "this GPU is broken": skip the field.
_FIELD_UNAVAILABLE = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    pynvml.NVML_ERROR_INVALID_ARGUMENT,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_NO_DATA,
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    pynvml.NVML_ERROR_DEPRECATED,
    pynvml.NVML_ERROR_INSUFFICIENT_SIZE,
    pynvml.NVML_ERROR_VGPU_ECC_NOT_SUPPORTED,
}
# Of those, the ones that never change for a given GPU and driver: worth remembering.
_NEVER_SUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_FIELD_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}
INIT_RETRY_SECONDS = 30.0
INIT_TIMEOUT_SECONDS = 10.0


class NvmlUnavailable(CollectorFailed):
    """NVML cannot be used at all (no library, no driver, version mismatch)."""


def is_field_unavailable(error: BaseException) -> bool:
    """True for NVML errors that only mean 'not supported here'.

    An AttributeError is never one: a getter this pynvml lacks is found by nvml_function
    before the call, and one raised inside a call is a bug that must be seen.
    """
    return isinstance(error, pynvml.NVMLError) and error.value in _FIELD_UNAVAILABLE


def is_never_supported(error: BaseException) -> bool:
    """True when asking again is pointless: the GPU or the driver lacks the function."""
    return isinstance(error, pynvml.NVMLError) and error.value in _NEVER_SUPPORTED


# Names older pynvml releases had and newer ones dropped, called only as a fallback for old
# drivers: their absence is expected, not logged (and the test of names allows it).
LEGACY_NVML_FUNCTIONS = frozenset({"nvmlDeviceGetCurrentClocksThrottleReasons"})
_MISSING_LOGGED: set[str] = set(LEGACY_NVML_FUNCTIONS)


def nvml_function(nvml: Any, function_name: str) -> Callable[..., Any] | None:
    """The pynvml function of that name, or None (logged once) when this pynvml predates it.

    A test checks that every name the collectors use exists in pynvml and in the simulator, so
    None here means an older nvidia-ml-py than the one tested, never a misspelt name.
    """
    function = getattr(nvml, function_name, None)
    if function is None and function_name not in _MISSING_LOGGED:
        _MISSING_LOGGED.add(function_name)
        LOG.warning("this pynvml has no %s: its metrics are skipped (upgrade nvidia-ml-py)",
                    function_name)
    return function


def field_reading(field_value: Any) -> float | None:
    """The number in one nvmlDeviceGetFieldValues entry; None if this field is unsupported.

    Raises the entry's NVMLError when it says the GPU itself is broken (lost, unknown).
    """
    status = field_value.nvmlReturn
    if status != pynvml.NVML_SUCCESS:
        if status in _FIELD_UNAVAILABLE:
            return None
        raise pynvml.NVMLError(status)
    member = _FIELD_VALUE_MEMBERS.get(field_value.valueType)
    return None if member is None else float(getattr(field_value.value, member))


def read_optional(function: Callable[..., T], *args: Any) -> T | None:
    """Call an NVML getter; None if the GPU or driver does not support it, else re-raise."""
    try:
        return function(*args)
    except pynvml.NVMLError as error:
        if is_field_unavailable(error):
            return None
        raise


def read_field(nvml: Any, function_name: str, *args: Any) -> Any:
    """read_optional by pynvml function name (None, logged once, if this pynvml lacks it)."""
    function = nvml_function(nvml, function_name)
    return None if function is None else read_optional(function, *args)


def describe_error(error: BaseException) -> str:
    """'NVMLError_GpuIsLost: GPU is lost' -- the class name says more than the message alone."""
    return f"{type(error).__name__}: {error}"


def text(value: str | bytes) -> str:
    """pynvml returns bytes or str depending on version and field."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class GpuDevice:
    """A GPU found at init: its handle and the labels that never change while it is present."""

    index: int
    handle: Any = None
    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""

    @property
    def labels(self) -> list[str]:
        return [str(self.index), self.uuid]


class NvmlSession:
    """Initialises NVML once (retrying now and then while it is missing) and lists the GPUs."""

    def __init__(self, nvml: ModuleType | Any = pynvml,
                 retry_seconds: float = INIT_RETRY_SECONDS) -> None:
        self.nvml = nvml
        self.retry_seconds = retry_seconds
        self.driver_version = ""
        self.cuda_version = ""
        self.devices: list[GpuDevice] = []
        self._initialized = False
        self._last_error: NvmlUnavailable | None = None
        self._last_attempt = float("-inf")
        self._lock = threading.Lock()
        self._init = SingleFlight("nvml-init", self._initialize)
        self._samplers: dict[int, DeviceSampler] = {}

    @property
    def simulated(self) -> bool:
        return self.nvml is not pynvml

    def ensure_initialized(self, timeout_seconds: float = INIT_TIMEOUT_SECONDS) -> list[GpuDevice]:
        """The GPU list, initialising NVML if needed; raises NvmlUnavailable while it cannot,
        or if nvmlInit does not return within the timeout (it keeps trying on its thread)."""
        if self._initialized:
            return self.devices
        try:
            return self._init.call(timeout_seconds)
        except CallTimeout as error:
            raise NvmlUnavailable(f"NVML initialisation hung: {error}") from None

    def sampler(self, device: GpuDevice) -> DeviceSampler:
        """The thread that makes every NVML call about this GPU (started on first use)."""
        with self._lock:
            if device.index not in self._samplers:
                self._samplers[device.index] = DeviceSampler(f"gpu{device.index}")
            return self._samplers[device.index]

    def _initialize(self) -> list[GpuDevice]:
        """nvmlInit and discovery; runs on the nvml-init thread only (one call at a time)."""
        if self._initialized:
            return self.devices
        now = time.monotonic()
        if self._last_error is not None and now - self._last_attempt < self.retry_seconds:
            raise self._last_error
        self._last_attempt = now
        try:
            self.nvml.nvmlInit()
            self._discover()
        except pynvml.NVMLError as error:
            self._last_error = NvmlUnavailable(
                f"NVML unavailable ({describe_error(error)}); no NVIDIA driver or library on "
                f"this host? GPU metrics are absent, host metrics are unaffected")
            raise self._last_error from error
        self._last_error = None
        self._initialized = True
        return self.devices

    def _discover(self) -> None:
        """System-wide facts only: each GPU's handle and identity are read on its own thread."""
        nvml = self.nvml
        self.driver_version = text(read_optional(nvml.nvmlSystemGetDriverVersion) or "")
        cuda = read_optional(nvml.nvmlSystemGetCudaDriverVersion)
        self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
        self.devices = [GpuDevice(index) for index in range(nvml.nvmlDeviceGetCount())]

    def refresh_identity(self, device: GpuDevice) -> bool:
        """Fill in a device's handle and static labels; False if the GPU does not answer.
        Call it on the device's sampler thread."""
        nvml = self.nvml
        try:
            if device.handle is None:
                device.handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
            if not device.uuid:
                device.uuid = text(nvml.nvmlDeviceGetUUID(device.handle))
            if not device.name:
                device.name = text(read_optional(nvml.nvmlDeviceGetName, device.handle) or "")
            if not device.pci_bus_id:
                pci = read_optional(nvml.nvmlDeviceGetPciInfo, device.handle)
                device.pci_bus_id = text(pci.busId) if pci is not None else ""
        except pynvml.NVMLError as error:
            LOG.debug("GPU %d does not answer: %s", device.index, describe_error(error))
            return False
        return True

    def device_for_handle(self, handle: Any) -> GpuDevice | None:
        """Map a handle from an NVML event back to our device (by index, which NVML reports)."""
        try:
            index = self.nvml.nvmlDeviceGetIndex(handle)
        except pynvml.NVMLError:
            return None
        return self.devices[index] if 0 <= index < len(self.devices) else None

    def shutdown(self) -> None:
        with self._lock:
            for sampler in self._samplers.values():
                sampler.stop()
        if self._initialized:
            try:
                self.nvml.nvmlShutdown()
            except pynvml.NVMLError as error:
                LOG.debug("nvmlShutdown: %s", describe_error(error))
            self._initialized = False


def gpu_memory_by_pid(nvml: Any, handle: Any) -> dict[int, int]:
    """GPU memory per process on one device, compute and graphics contexts summed.

    A process whose usage NVML hides (usedGpuMemory None, e.g. from inside another container) is
    left out rather than counted as 0. Raises NVMLError when the GPU itself fails. Call it on
    the device's sampler thread, as every NVML call about one GPU.
    """
    processes = []
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        processes += read_field(nvml, getter, handle) or []
    used_by_pid: dict[int, int] = {}
    for process in processes:
        if process.usedGpuMemory is not None:
            used_by_pid[process.pid] = used_by_pid.get(process.pid, 0) + process.usedGpuMemory
    return used_by_pid


def gpu_utilization_by_pid(nvml: Any, handle: Any,
                           since_microseconds: int) -> tuple[dict[int, float] | None, int]:
    """Mean SM utilisation (0-1) per process over NVML's samples newer than `since`, and the
    newest sample's time (pass it back next time).

    `{}` means no process ran a kernel since then; None means this GPU cannot say (an older GPU
    or driver), which must not be shown as idle. Call it on the device's sampler thread.
    """
    function = nvml_function(nvml, "nvmlDeviceGetProcessUtilization")
    if function is None:
        return None, since_microseconds
    try:
        samples = function(handle, since_microseconds)
    except pynvml.NVMLError as error:
        # NOT_FOUND: no samples since then; pynvml raises SUCCESS when the count was zero.
        if error.value in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_SUCCESS):
            return {}, since_microseconds
        if is_field_unavailable(error):
            return None, since_microseconds
        raise
    totals: dict[int, list[float]] = {}
    newest = since_microseconds
    for sample in samples:
        if sample.timeStamp <= since_microseconds:
            continue
        total = totals.setdefault(sample.pid, [0.0, 0.0])
        total[0] += sample.smUtil
        total[1] += 1
        newest = max(newest, sample.timeStamp)
    return {pid: percent / count / 100 for pid, (percent, count) in totals.items()}, newest


@dataclass(frozen=True)
class MigInstance:
    """One MIG device of a GPU: a compute instance inside a GPU instance."""

    handle: Any
    gpu_instance_id: int | None
    compute_instance_id: int | None
    uuid: str


@dataclass(frozen=True)
class MigState:
    enabled: bool
    instances: list[MigInstance]


def read_mig(nvml: Any, handle: Any) -> MigState | None:
    """The GPU's MIG mode and its instances; None if the GPU has no MIG mode at all. Shared by
    the collectors that label series by MIG instance. Call it on the device's sampler thread."""
    mode = read_field(nvml, "nvmlDeviceGetMigMode", handle)
    if mode is None:
        return None
    if mode[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
        return MigState(False, [])
    instances = []
    for slot in range(read_field(nvml, "nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
        mig = read_field(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if mig is not None:
            instances.append(MigInstance(
                mig, read_field(nvml, "nvmlDeviceGetGpuInstanceId", mig),
                read_field(nvml, "nvmlDeviceGetComputeInstanceId", mig),
                text(read_field(nvml, "nvmlDeviceGetUUID", mig) or "")))
    return MigState(True, instances)

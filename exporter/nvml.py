"""The NVML boundary: one shared session over `pynvml` (or the simulated stand-in in nvml_sim).

Collectors call NVML functions by their pynvml names on `session.nvml`, which is the real pynvml
module in production. Keeping the simulation at this exact boundary means the code the tests run
is the code that runs on a GPU node.
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

from exporter.registry import CollectorFailed

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


class NvmlUnavailable(CollectorFailed):
    """NVML cannot be used at all (no library, no driver, version mismatch)."""


def is_field_unavailable(error: BaseException) -> bool:
    """True for errors that only mean 'not supported here' (including an older pynvml)."""
    if isinstance(error, AttributeError):
        return True
    return isinstance(error, pynvml.NVMLError) and error.value in _FIELD_UNAVAILABLE


def is_never_supported(error: BaseException) -> bool:
    """True when asking again is pointless: the GPU or the library lacks the function."""
    if isinstance(error, AttributeError):
        return True
    return isinstance(error, pynvml.NVMLError) and error.value in _NEVER_SUPPORTED


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
    """Call an NVML getter; None if the GPU or library does not support it, else re-raise."""
    try:
        return function(*args)
    except (pynvml.NVMLError, AttributeError) as error:
        if is_field_unavailable(error):
            return None
        raise


def read_field(nvml: Any, function_name: str, *args: Any) -> Any:
    """read_optional by pynvml function name: a name this pynvml lacks is 'unsupported' too."""
    function = getattr(nvml, function_name, None)
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

    @property
    def simulated(self) -> bool:
        return self.nvml is not pynvml

    def ensure_initialized(self) -> list[GpuDevice]:
        """The GPU list, initialising NVML if needed; raises NvmlUnavailable while it cannot."""
        with self._lock:
            if self._initialized:
                return self.devices
            now = time.monotonic()
            if self._last_error is not None and now - self._last_attempt < self.retry_seconds:
                raise self._last_error
            self._last_attempt = now
            try:
                self.nvml.nvmlInit()
            except pynvml.NVMLError as error:
                self._last_error = NvmlUnavailable(
                    f"NVML unavailable ({describe_error(error)}); no NVIDIA driver or library on "
                    f"this host? GPU metrics are absent, host metrics are unaffected")
                raise self._last_error from error
            self._initialized = True
            self._last_error = None
            self._discover()
            return self.devices

    def _discover(self) -> None:
        nvml = self.nvml
        self.driver_version = text(read_optional(nvml.nvmlSystemGetDriverVersion) or "")
        cuda = read_optional(nvml.nvmlSystemGetCudaDriverVersion)
        self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
        self.devices = [GpuDevice(index) for index in range(nvml.nvmlDeviceGetCount())]
        for device in self.devices:
            self.refresh_identity(device)

    def refresh_identity(self, device: GpuDevice) -> bool:
        """Fill in a device's handle and static labels; False if the GPU does not answer."""
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
            if self._initialized:
                try:
                    self.nvml.nvmlShutdown()
                except pynvml.NVMLError as error:
                    LOG.debug("nvmlShutdown: %s", describe_error(error))
                self._initialized = False


def gpu_memory_by_pid(nvml: Any, handle: Any) -> dict[int, int]:
    """GPU memory per process on one device, compute and graphics contexts summed.

    A process whose usage NVML hides (usedGpuMemory None, e.g. from inside another container) is
    left out rather than counted as 0. Raises NVMLError when the GPU itself fails.
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
    or driver), which must not be shown as idle.
    """
    try:
        samples = nvml.nvmlDeviceGetProcessUtilization(handle, since_microseconds)
    except AttributeError:
        return None, since_microseconds
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

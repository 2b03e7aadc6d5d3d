"""Collector registry: name -> collector class with its default, plus the per-scrape self-metrics.

Every scrape runs each enabled collector, times it and records whether it worked, the way
node_exporter does, so that a failing GPU driver shows up as `aiinfra_scrape_collector_success 0`
instead of taking the whole scrape down.

Collectors run concurrently, each on its own long-lived thread with its own deadline, and
scrapes that arrive together share one collection per collector (worker.SingleFlight): a second
Prometheus scraping while the first one's collection runs gets the same complete answer, and a
hung collector fails only itself, at its deadline.
"""

from __future__ import annotations

import importlib
import logging
import platform
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter import __version__
from exporter.worker import CallTimeout, SingleFlight

if TYPE_CHECKING:
    from exporter.collector_config import CollectorConfig
    from exporter.nvml import NvmlSession

LOG = logging.getLogger("exporter")

# node_exporter's defaults, so that pseudo and container file systems are not reported.
DEFAULT_FS_TYPES_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
    r"iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|"
    r"sysfs|tracefs|tmpfs|ramfs|efivarfs|fuse\..*)$"
)
DEFAULT_MOUNT_POINTS_EXCLUDE = (
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
# Partitions and virtual block devices, as node_exporter's diskstats collector excludes them.
DEFAULT_DISK_DEVICE_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"


class CollectorFailed(RuntimeError):
    """A collector could not produce its metrics this scrape; the message says why."""


@dataclass
class ExporterOptions:
    """Everything collectors are configured with; built from the command line."""

    nvml: NvmlSession | None = None
    gpu_timeout_seconds: float = 2.0
    gpu_sample_interval_seconds: float = 5.0
    collector_timeout_seconds: float = 2.0
    fs_types_exclude: re.Pattern = field(
        default_factory=lambda: re.compile(DEFAULT_FS_TYPES_EXCLUDE))
    mount_points_exclude: re.Pattern = field(
        default_factory=lambda: re.compile(DEFAULT_MOUNT_POINTS_EXCLUDE))
    disk_device_exclude: re.Pattern = field(
        default_factory=lambda: re.compile(DEFAULT_DISK_DEVICE_EXCLUDE))
    filesystem_timeout_seconds: float = 2.0
    proc_path: str = "/proc"
    sys_path: str = "/sys"  # --path.sysfs
    nvlink_per_link: bool = False  # --collector.gpu_profiling.nvlink-per-link
    collector_config: CollectorConfig | None = None  # --config.file (probe, process)


class Collector(ABC):
    """One source of metrics. collect() runs at scrape time; raise CollectorFailed on failure."""

    name: ClassVar[str]
    default_enabled: ClassVar[bool] = True
    help_text: ClassVar[str] = ""
    config_section: ClassVar[str | None] = None  # the --config.file section it needs, if any

    def __init__(self, options: ExporterOptions) -> None:
        self.options = options

    @property
    def timeout_seconds(self) -> float:
        """The longest a scrape waits for this collector."""
        return self.options.collector_timeout_seconds

    def start(self) -> None:  # noqa: B027 -- optional hook, most collectors need none
        """Begin background work (threads, library init). Raise CollectorFailed if it cannot."""

    def stop(self) -> None:  # noqa: B027 -- optional hook
        """End background work started by start()."""

    @abstractmethod
    def collect(self) -> Iterable[Metric]:
        """Read the source now and return its metric families."""


COLLECTORS: dict[str, type[Collector]] = {}


def register(cls: type[Collector]) -> type[Collector]:
    """Class decorator: make a collector selectable by its name on the command line."""
    if cls.name in COLLECTORS:
        raise ValueError(f"collector {cls.name!r} registered twice")
    COLLECTORS[cls.name] = cls
    return cls


def load_collectors() -> dict[str, type[Collector]]:
    """Import every collector module (each registers itself) and return the registry."""
    importlib.import_module("exporter.collectors")
    return COLLECTORS


class ScrapeCollector:
    """The prometheus-client collector that runs the enabled collectors on every scrape."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors
        self._last_failure: dict[str, str] = {}
        self._lock = threading.Lock()
        self._flights = [SingleFlight(collector.name, _collect_into_list(collector))
                         for collector in collectors]

    def start(self) -> None:
        """Start each collector's background work; a failure is logged, never fatal."""
        for collector in self.collectors:
            try:
                collector.start()
            except CollectorFailed as error:
                self._record_failure(collector.name, str(error))

    def stop(self) -> None:
        for collector in self.collectors:
            collector.stop()

    def describe(self) -> list[Metric]:
        """Nothing to describe up front: metrics are only known at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        duration = GaugeMetricFamily("aiinfra_scrape_collector_duration_seconds",
                                     "Time a collector took during this scrape.",
                                     labels=["collector"])
        success = GaugeMetricFamily("aiinfra_scrape_collector_success",
                                    "1 if the collector produced its metrics this scrape, else 0.",
                                    labels=["collector"])
        calls = [flight.begin() for flight in self._flights]  # all run at once
        for collector, call in zip(self.collectors, calls, strict=True):
            try:
                families = call.wait(collector.timeout_seconds)
                ok = True
            except CallTimeout as error:
                families, ok = [], False
                self._record_failure(collector.name, f"{collector.name}: {error}")
            except CollectorFailed as error:
                families, ok = [], False
                self._record_failure(collector.name, str(error))
            except Exception as error:  # a bug or an odd host must not take the scrape down
                families, ok = [], False
                self._record_failure(collector.name, f"{type(error).__name__}: {error}")
            if ok:
                self._record_success(collector.name)
            yield from families
            duration.add_metric([collector.name], call.seconds)
            success.add_metric([collector.name], 1.0 if ok else 0.0)
        yield duration
        yield success
        yield build_info()

    def _record_failure(self, name: str, message: str) -> None:
        """Log a failure once, not on every scrape, until its reason changes.

        Collectors sharing a cause (gpu and xid when NVML is missing) give one line, not one each.
        """
        with self._lock:
            if self._last_failure.get(name) == message:
                return
            first = message not in self._last_failure.values()
            self._last_failure[name] = message
        if first:
            LOG.warning("collector %s failed: %s", name, message)

    def _record_success(self, name: str) -> None:
        with self._lock:
            recovered = self._last_failure.pop(name, None) is not None
        if recovered:
            LOG.info("collector %s recovered", name)


def _collect_into_list(collector: Collector) -> Callable[[], list[Metric]]:
    """The collection a SingleFlight runs: the families, materialised on the worker thread."""
    return lambda: list(collector.collect())


def build_info() -> GaugeMetricFamily:
    info = GaugeMetricFamily("aiinfra_build_info",
                             "Always 1; labels carry the exporter and Python versions.",
                             labels=["version", "python_version"])
    info.add_metric([__version__, platform.python_version()], 1.0)
    return info

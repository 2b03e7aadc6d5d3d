"""Base for collectors that call NVML: their calls run on one worker thread with a deadline."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import TypeVar

from prometheus_client.core import Metric

from exporter.nvml import NvmlSession
from exporter.registry import Collector, CollectorFailed, ExporterOptions
from exporter.worker import TimedWorker, WorkerBusy, WorkerTimeout

T = TypeVar("T")


class NvmlCollector(Collector):
    """Runs NVML work via a TimedWorker so a hung driver costs at most one stuck thread."""

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        if options.nvml is None:
            raise ValueError(f"collector {self.name} needs an NVML session in its options")
        self.session: NvmlSession = options.nvml
        self.timeout_seconds = options.gpu_timeout_seconds
        self.worker = TimedWorker(self.name)

    def start(self) -> None:
        self.call_with_deadline(self.session.ensure_initialized)

    def collect(self) -> Iterable[Metric]:
        return self.call_with_deadline(self._collect_now)

    @abstractmethod
    def _collect_now(self) -> list[Metric]:
        """The NVML reads of one scrape; runs on the worker thread."""

    def call_with_deadline(self, function: Callable[[], T]) -> T:
        """function() on the worker; CollectorFailed if it hangs or the previous call still does."""
        try:
            return self.worker.run(function, self.timeout_seconds)
        except (WorkerBusy, WorkerTimeout) as error:
            raise CollectorFailed(
                f"NVML did not answer within {self.timeout_seconds:g}s (a driver call is hung; "
                f"no new call is started until it returns)") from error

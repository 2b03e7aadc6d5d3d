"""Process collector: named groups of processes (a model server and its workers) and what they use.

Matching every process on the host against the groups means reading the command line and cgroup
of each, which on a node with thousands of processes costs more than a whole scrape. So a
background thread re-matches every `scan_interval` and a scrape reads usage only for the matched
pids: a new process joins its group within one scan, one that ends leaves it at once. The only
label is `group` (plus the GPU's own labels on GPU series): pids come and go and would make every
restart a new series.

CPU seconds stay a counter across process restarts: the CPU time of a process that ended is kept
in its group's total instead of disappearing with it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import pynvml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collector_config import ProcessGroup
from exporter.device_watch import DeviceWatch
from exporter.families import GPU_LABELS
from exporter.nvml import (
    GpuDevice,
    NvmlUnavailable,
    describe_error,
    gpu_memory_by_pid,
    gpu_utilization_by_pid,
)
from exporter.procfs import ProcessIdentity, list_pids, read_identity, read_usage
from exporter.registry import Collector, CollectorFailed, ExporterOptions, register

LOG = logging.getLogger("exporter.process")


def matches(group: ProcessGroup, identity: ProcessIdentity) -> bool:
    """Every criterion the group gives must hold: name (comm or argv[0]'s file name), command
    line regex (searched in the arguments joined by spaces), cgroup (that path or below it)."""
    if group.names and identity.comm not in group.names \
            and os.path.basename(identity.argv[0]) not in group.names:
        return False
    if group.cmdline is not None and not group.cmdline.search(" ".join(identity.argv)):
        return False
    if group.cgroup is not None:
        below = group.cgroup.rstrip("/") + "/"
        return any(path == group.cgroup or path.startswith(below) for path in identity.cgroups)
    return True


@dataclass
class _GroupTotals:
    processes: int = 0
    threads: int = 0
    resident_bytes: int = 0
    open_fds: int | None = 0


@register
class ProcessCollector(Collector):
    name = "process"
    default_enabled = False
    help_text = "Process groups listed in --config.file: CPU, memory, threads, fds, GPU memory"
    config_section = "process"

    def __init__(self, options: ExporterOptions) -> None:
        super().__init__(options)
        config = options.collector_config.process if options.collector_config else None
        self.groups: list[ProcessGroup] = list(config.groups) if config else []
        self.scan_interval_seconds = config.scan_interval_seconds if config else 0.0
        self._with_cgroups = any(group.cgroup is not None for group in self.groups)
        self._members: dict[int, tuple[int, str]] = {}  # pid -> (start ticks, group)
        self._members_lock = threading.Lock()
        self._cpu_lock = threading.Lock()
        self._cpu_seen: dict[tuple[int, int], tuple[str, float, float]] = {}
        self._cpu_ended: dict[str, list[float]] = {group.name: [0.0, 0.0] for group in self.groups}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Each GPU's per-process usage is read on that GPU's sampler thread (as the gpu
        # collector's readings are); a scrape joins the latest reading with the groups.
        self._gpu_watch = None if options.nvml is None else DeviceWatch(
            options.nvml, "process-groups", self._read_gpu, options.gpu_sample_interval_seconds,
            options.gpu_timeout_seconds)
        self._gpu_since: dict[int, int] = {}  # GPU index -> newest sample; its thread only
        self._gpu_problem: str | None = None

    def start(self) -> None:
        """Match once before the first scrape (so it already counts), then keep matching."""
        if not self.groups:
            raise CollectorFailed("no process groups: give --config.file with process.groups")
        if self._gpu_watch is not None:
            try:
                self._gpu_watch.wait_first()
            except NvmlUnavailable as error:  # GPU series absent; the rest is served
                self._gpu_unavailable(str(error))
        if self._thread is None:
            self.scan()
            self._thread = threading.Thread(target=self._scan_loop, name="process-scan",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _scan_loop(self) -> None:
        while not self._stopping.wait(self.scan_interval_seconds):
            try:
                self.scan()
            except Exception:  # an odd /proc must not end the scans for good
                LOG.exception("process scan failed")

    def scan(self) -> None:
        """Assign every process to the first group it matches (config order)."""
        members: dict[int, tuple[int, str]] = {}
        for pid in list_pids(self.options.proc_path):
            identity = read_identity(self.options.proc_path, pid, self._with_cgroups)
            if identity is None:
                continue
            group = next((group for group in self.groups if matches(group, identity)), None)
            if group is not None:
                members[pid] = (identity.start_ticks, group.name)
        with self._members_lock:
            self._members = members

    def collect(self) -> Iterable[Metric]:
        with self._members_lock:
            members = dict(self._members)
        totals = {group.name: _GroupTotals() for group in self.groups}
        cpu: dict[str, list[float]] = {}
        group_of_pid: dict[int, str] = {}
        with self._cpu_lock:
            seen: dict[tuple[int, int], tuple[str, float, float]] = {}
            for pid, (start_ticks, group) in members.items():
                usage = read_usage(self.options.proc_path, pid)
                if usage is None or usage.start_ticks != start_ticks:
                    continue  # ended (or the pid was reused) since the scan
                seen[(pid, start_ticks)] = (group, usage.user_seconds, usage.system_seconds)
                group_of_pid[pid] = group
                total = totals[group]
                total.processes += 1
                total.threads += usage.threads
                total.resident_bytes += usage.resident_bytes
                total.open_fds = None if total.open_fds is None or usage.open_fds is None \
                    else total.open_fds + usage.open_fds
            for key, (group, user, system) in self._cpu_seen.items():
                if key not in seen:
                    self._cpu_ended[group][0] += user
                    self._cpu_ended[group][1] += system
            self._cpu_seen = seen
            for group, ended in self._cpu_ended.items():
                cpu[group] = list(ended)
            for group, user, system in seen.values():
                cpu[group][0] += user
                cpu[group][1] += system
        return [*self._usage_families(totals, cpu), *self._gpu_families(group_of_pid)]

    def _usage_families(self, totals: dict[str, _GroupTotals],
                        cpu: dict[str, list[float]]) -> list[Metric]:
        labels = ["group"]
        seconds = CounterMetricFamily("aiinfra_process_group_cpu_seconds",
                                      "CPU time of the group's processes, ended ones included.",
                                      labels=[*labels, "mode"])
        processes = GaugeMetricFamily("aiinfra_process_group_processes",
                                      "Processes in the group now (0: none is running).",
                                      labels=labels)
        resident = GaugeMetricFamily("aiinfra_process_group_resident_memory_bytes",
                                     "Resident memory of the group's processes, summed "
                                     "(shared pages count once per process).", labels=labels)
        threads = GaugeMetricFamily("aiinfra_process_group_threads",
                                    "Threads of the group's processes.", labels=labels)
        fds = GaugeMetricFamily("aiinfra_process_group_open_fds",
                                "Open file descriptors of the group's processes (absent when "
                                "the exporter may not read them).", labels=labels)
        for group in self.groups:
            total = totals[group.name]
            seconds.add_metric([group.name, "user"], cpu[group.name][0])
            seconds.add_metric([group.name, "system"], cpu[group.name][1])
            processes.add_metric([group.name], float(total.processes))
            resident.add_metric([group.name], float(total.resident_bytes))
            threads.add_metric([group.name], float(total.threads))
            if total.open_fds is not None:
                fds.add_metric([group.name], float(total.open_fds))
        return [seconds, processes, resident, threads, fds]

    def _gpu_families(self, group_of_pid: dict[int, str]) -> list[Metric]:
        """GPU memory and SM utilisation per group and GPU, from each GPU's latest reading.

        No NVML call happens here: a hung GPU is left out alone (its reading is stale) and
        without NVML (no driver, no --gpu.simulate) these families are absent while the rest of
        the scrape is served; the gpu collector reports why.
        """
        if self._gpu_watch is None:
            return []
        try:
            states = self._gpu_watch.states()
        except NvmlUnavailable as error:
            return self._gpu_unavailable(str(error))
        if self._gpu_problem is not None:
            LOG.info("per-group GPU usage readable again")
            self._gpu_problem = None
        rows: dict[tuple[str, tuple[str, ...]], tuple[int | None, float | None]] = {}
        for state in states:
            if state.value is None:
                continue  # down or hung: the gpu collector reports it
            used_by_pid, busy_by_pid = state.value
            for pid in used_by_pid.keys() | (busy_by_pid or {}).keys():
                group = group_of_pid.get(pid)
                if group is None:
                    continue
                key = (group, tuple(state.device.labels))
                used, busy = rows.get(key, (None, None))
                if pid in used_by_pid:
                    used = (used or 0) + used_by_pid[pid]
                if busy_by_pid is not None:
                    busy = (busy or 0.0) + busy_by_pid.get(pid, 0.0)
                rows[key] = (used, busy)
        labels = ["group", *GPU_LABELS]
        memory = GaugeMetricFamily("aiinfra_process_group_gpu_memory_bytes",
                                   "GPU memory the group's processes hold on this GPU.",
                                   labels=labels)
        utilization = GaugeMetricFamily(
            "aiinfra_process_group_gpu_utilization_ratio",
            "Share of time the group's kernels ran on this GPU over the last sample interval "
            "(0-1).", labels=labels)
        for (group, device_labels), (used, busy) in sorted(rows.items()):
            if used is not None:
                memory.add_metric([group, *device_labels], float(used))
            if busy is not None:
                utilization.add_metric([group, *device_labels], busy)
        return [memory, utilization]

    def _gpu_unavailable(self, problem: str) -> list[Metric]:
        if problem != self._gpu_problem:
            LOG.info("per-group GPU usage not available: %s", problem)
            self._gpu_problem = problem
        return []

    def _read_gpu(self, device: GpuDevice,
                  ) -> tuple[dict[int, int], dict[int, float] | None] | None:
        """(memory bytes by pid, SM utilisation by pid since the last reading) of one GPU, or
        None if it does not answer; runs on the GPU's sampler thread every sample interval."""
        session = self.options.nvml
        assert session is not None
        if not session.refresh_identity(device):
            return None
        try:
            used_by_pid = gpu_memory_by_pid(session.nvml, device.handle)
            busy_by_pid, self._gpu_since[device.index] = gpu_utilization_by_pid(
                session.nvml, device.handle, self._gpu_since.get(device.index, 0))
        except pynvml.NVMLError as error:
            LOG.debug("GPU %d: no per-process data: %s", device.index, describe_error(error))
            return None
        return used_by_pid, busy_by_pid

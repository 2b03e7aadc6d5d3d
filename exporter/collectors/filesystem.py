"""File system size, free and available bytes per mount point (pseudo file systems excluded).

statvfs on a dead network mount blocks forever; the scrape waits for this collector (which runs
on its own thread, as every collector does) at most --collector.filesystem.timeout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.registry import Collector, register


@register
class FilesystemCollector(Collector):
    name = "filesystem"
    help_text = "filesystem size/free/avail per mountpoint"

    @property
    def timeout_seconds(self) -> float:
        return self.options.filesystem_timeout_seconds

    def collect(self) -> Iterable[Metric]:
        labels = ["device", "fstype", "mountpoint"]
        size = GaugeMetricFamily("aiinfra_filesystem_size_bytes", "File system size.",
                                 labels=labels)
        free = GaugeMetricFamily("aiinfra_filesystem_free_bytes", "Free bytes, root's reserve "
                                 "included.", labels=labels)
        avail = GaugeMetricFamily("aiinfra_filesystem_avail_bytes",
                                  "Bytes available to unprivileged users.", labels=labels)
        seen = set()
        for partition in psutil.disk_partitions(all=True):
            if (self.options.fs_types_exclude.search(partition.fstype)
                    or self.options.mount_points_exclude.search(partition.mountpoint)
                    or partition.mountpoint in seen):
                continue
            seen.add(partition.mountpoint)
            try:
                stats = os.statvfs(partition.mountpoint)
            except OSError:
                continue  # unmounted meanwhile, or no permission: nothing to report
            row = [partition.device, partition.fstype, partition.mountpoint]
            size.add_metric(row, stats.f_blocks * stats.f_frsize)
            free.add_metric(row, stats.f_bfree * stats.f_frsize)
            avail.add_metric(row, stats.f_bavail * stats.f_frsize)
        return [size, free, avail]

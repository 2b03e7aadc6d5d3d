"""Block device I/O: bytes read and written, and time spent doing I/O, per device."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.core import CounterMetricFamily, Metric

from exporter.registry import Collector, register


@register
class DiskstatsCollector(Collector):
    name = "diskstats"
    help_text = "disk read/written bytes and io time per device"

    def collect(self) -> Iterable[Metric]:
        exclude = self.options.disk_device_exclude
        labels = ["device"]
        read = CounterMetricFamily("aiinfra_disk_read_bytes", "Bytes read.", labels=labels)
        written = CounterMetricFamily("aiinfra_disk_written_bytes", "Bytes written.", labels=labels)
        reads = CounterMetricFamily("aiinfra_disk_reads_completed", "Reads completed.",
                                    labels=labels)
        writes = CounterMetricFamily("aiinfra_disk_writes_completed", "Writes completed.",
                                     labels=labels)
        io_time = CounterMetricFamily("aiinfra_disk_io_time_seconds",
                                      "Seconds the device was busy with I/O.", labels=labels)
        for device, counters in sorted((psutil.disk_io_counters(perdisk=True) or {}).items()):
            if exclude.search(device):
                continue
            read.add_metric([device], counters.read_bytes)
            written.add_metric([device], counters.write_bytes)
            reads.add_metric([device], counters.read_count)
            writes.add_metric([device], counters.write_count)
            io_time.add_metric([device], getattr(counters, "busy_time", 0) / 1000.0)
        return [read, written, reads, writes, io_time]

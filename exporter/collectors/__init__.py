"""One module per collector; importing this package registers them all."""

from exporter.collectors import (  # noqa: F401 -- imported for their @register side effect
    boottime,
    cpu,
    diskstats,
    filesystem,
    gpu,
    gpu_processes,
    gpu_profiling,
    infiniband,
    loadavg,
    memory,
    netdev,
    pressure,
    probe,
    process,
    xid,
)

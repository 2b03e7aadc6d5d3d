"""Run the exporter's collectors against this machine's REAL NVML and report what they see.

    python3 scripts/gpu_check.py [--scrapes 20] [--gpu-only]

No simulation and no `pip install` needed (the repo root is put on sys.path; bcrypt, click and
pyyaml are not imported). Prints the driver, every GPU series, the fields each GPU does not
support, the time a background read of each GPU takes, the scrape-path time per GPU (what a
scrape spends on a GPU now that reads run on each GPU's sampler thread; target <= 1 ms), the
time per scrape, and exits non-zero when NVML is missing, a GPU is down, or any collector
fails. Then the profiling fields (GPM activity, NVLink, PCIe) each GPU offers, their values and
the time a background read of them takes. Last, the process collector's per-group GPU memory and
utilisation for one group of every process, beside NVML's per-process memory it should sum.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import pynvml  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.collector_config import parse_collector_config  # noqa: E402
from exporter.collectors.gpu import GpuCollector, declare_families  # noqa: E402
from exporter.collectors.gpu_profiling import GpuProfilingCollector  # noqa: E402
from exporter.collectors.gpu_profiling import declare_families as declare_profiling  # noqa: E402
from exporter.collectors.process import ProcessCollector  # noqa: E402
from exporter.exposition import render  # noqa: E402
from exporter.families import FamilyBook  # noqa: E402
from exporter.nvml import (  # noqa: E402
    GpuDevice,
    NvmlSession,
    NvmlUnavailable,
    describe_error,
    gpu_memory_by_pid,
)
from exporter.nvml_collector import NvmlCollector  # noqa: E402
from exporter.registry import (  # noqa: E402
    COLLECTORS,
    ExporterOptions,
    ScrapeCollector,
    load_collectors,
)
from exporter.worker import CallTimeout  # noqa: E402

GPU_COLLECTORS = ("gpu", "xid", "gpu_processes", "gpu_profiling")
XID_SETTLE_SECONDS = 1.5
GPM_REFRESH_SECONDS = 0.11  # NVML refreshes GPM counters every ~100 ms: time reads this far apart
GPU_THREAD_TIMEOUT_SECONDS = 10.0
TARGET_SCRAPE_PATH_MS_PER_GPU = 1.0
PROFILING_SHOWN = ("aiinfra_gpu_sm_active_ratio", "aiinfra_gpu_tensor_active_ratio",
                   "aiinfra_gpu_sm_occupancy_ratio", "aiinfra_gpu_dram_active_ratio",
                   "aiinfra_gpu_profiling_interval_seconds",
                   "aiinfra_gpu_pcie_current_link_generation",
                   "aiinfra_gpu_pcie_max_link_generation", "aiinfra_gpu_pcie_current_link_width",
                   "aiinfra_gpu_pcie_max_link_width")


def on_gpu_thread(session: NvmlSession, device: GpuDevice,
                  function: Callable[[], Any]) -> tuple[Any, float]:
    """function() run on the GPU's sampler thread, as every NVML call about a GPU is in the
    exporter (so the check never races the background reads); its result and seconds taken."""
    def timed() -> tuple[Any, float]:
        started = time.perf_counter()
        return function(), time.perf_counter() - started

    return session.sampler(device).submit(timed, GPU_THREAD_TIMEOUT_SECONDS).wait(
        GPU_THREAD_TIMEOUT_SECONDS)


def scrape_path_per_gpu(collector: NvmlCollector, rounds: int) -> float:
    """Milliseconds a scrape spends per GPU in an NVML collector (copying sampled readings)."""
    devices = collector.session.devices
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        collector.collect()
        seconds.append(time.perf_counter() - started)
    per_gpu = statistics.median(seconds) / max(1, len(devices)) * 1e3
    print(f"\nscrape-path time per GPU ({collector.name} collector, from the sampled readings): "
          f"{per_gpu:.3f} ms p50 over {rounds} scrapes; target <= "
          f"{TARGET_SCRAPE_PATH_MS_PER_GPU:g} ms: "
          f"{'met' if per_gpu <= TARGET_SCRAPE_PATH_MS_PER_GPU else 'MISSED'}")
    return per_gpu


def per_gpu_timings(collector: GpuCollector, rounds: int) -> int:
    """Time read_device for each GPU; print the fields it lacks. Returns the number of GPUs down."""
    book = FamilyBook()
    declare_families(book)
    declared = book.names() - {"aiinfra_gpu_up"}
    optional = {name for name in declared if "_mig_" in name}  # only present with MIG on
    down = 0
    print(f"\nper-GPU background read time (read_device, all fields; on each GPU's sampler "
          f"thread every {collector.interval_seconds:g}s, off the scrape path):")
    for device in collector.session.devices:
        seconds = []
        rows = None
        for _ in range(rounds):
            rows, taken = on_gpu_thread(collector.session, device,
                                        lambda device=device: collector.read_device(device))
            seconds.append(taken)
        if rows is None:
            down += 1
            print(f"  GPU {device.index} {device.uuid or '(no uuid)'}: DOWN (lost or erroring)")
            continue
        missing = sorted(declared - optional - {name for name, _, _ in rows})
        print(f"  GPU {device.index} {device.name} {device.uuid}: p50 "
              f"{statistics.median(seconds) * 1e3:.2f} ms, max {max(seconds) * 1e3:.2f} ms, "
              f"{len(rows)} series; unsupported here: {', '.join(missing) or 'none'}")
    return down


def per_gpu_profiling(collector: GpuProfilingCollector, rounds: int) -> None:
    """Time the profiling read of each GPU (GPM sample and metrics, NVLink/PCIe field values,
    PCIe link) on its own thread, reads 110 ms apart as GPM needs; print what it offers."""
    book = FamilyBook()
    declare_profiling(book)
    declared = book.names()
    print(f"\nper-GPU profiling read time (gpu_profiling read_device: GPM sample + metrics, one "
          f"field-values call, PCIe link; every {collector.interval_seconds:g}s on each GPU's "
          f"sampler thread):")
    for device in collector.session.devices:
        seconds, rows = [], None
        for _ in range(rounds + 1):  # the first read only takes GPM's first sample
            time.sleep(GPM_REFRESH_SECONDS)
            rows, taken = on_gpu_thread(collector.session, device,
                                        lambda device=device: collector.read_device(device))
            seconds.append(taken)
        if rows is None:
            print(f"  GPU {device.index}: profiling readings failed (see the log)")
            continue
        values = {name: value for name, _, value in rows if name in PROFILING_SHOWN}
        links = next((int(value) for name, _, value in rows
                      if name == "aiinfra_gpu_nvlink_links_up"), 0)
        absent = sorted(name for name in declared - {name for name, _, _ in rows}
                        if "_mig_" not in name and not (  # MIG only with MIG on, links opt-in
                            "_nvlink_link_" in name and not collector.options.nvlink_per_link))
        print(f"  GPU {device.index} {device.name}: p50 {statistics.median(seconds[1:]) * 1e3:.2f}"
              f" ms, max {max(seconds[1:]) * 1e3:.2f} ms, {len(rows)} series, NVLink links: "
              f"{links} up; absent here: {', '.join(absent) or 'none'}")
        for name, value in values.items():
            print(f"    {name} {value:g}")


def per_group_gpu_usage(session: NvmlSession) -> None:
    """Every process in one group: its GPU memory per GPU must equal NVML's per-process sum
    (unless the processes live in another pid namespace, e.g. this runs in a container)."""
    every_process = {"process": {"groups": [{"name": "all", "match": {"cmdline": "."}}]}}
    options = ExporterOptions(nvml=session, collector_config=parse_collector_config(
        Path("gpu_check"), every_process))
    collector = ProcessCollector(options)
    collector.start()  # matches the processes and waits for each GPU's first reading
    families = {family.name: family for family in collector.collect()}
    collector.stop()
    print("\nper-group GPU usage (one group of every process; process collector):")
    for name in ("aiinfra_process_group_gpu_memory_bytes",
                 "aiinfra_process_group_gpu_utilization_ratio"):
        for sample in families[name].samples if name in families else []:
            print(f"  {sample.name}{{gpu={sample.labels['gpu']!r}}} {sample.value}")
    for device in session.devices:
        try:
            used_by_pid, _ = on_gpu_thread(
                session, device, lambda device=device: gpu_memory_by_pid(session.nvml,
                                                                         device.handle))
            used = sum(used_by_pid.values())
        except (pynvml.NVMLError, CallTimeout) as error:
            print(f"  GPU {device.index}: no per-process data ({describe_error(error)})")
            continue
        print(f"  NVML per-process memory on GPU {device.index}, summed: {used}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=20, help="timed full scrapes")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the gpu, xid and gpu_processes collectors (skip host ones)")
    args = parser.parse_args()
    return check(NvmlSession(), args.scrapes, args.gpu_only)


def check(session: NvmlSession, scrapes: int, gpu_only: bool) -> int:
    """The whole check against one NVML session (the real one from main; tests pass others)."""
    try:
        devices = session.ensure_initialized()
    except NvmlUnavailable as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return 2
    print(f"NVML ok: driver {session.driver_version}, CUDA {session.cuda_version}, "
          f"{len(devices)} GPU(s)")

    load_collectors()
    options = ExporterOptions(nvml=session)
    names = GPU_COLLECTORS if gpu_only else sorted(
        name for name, cls in COLLECTORS.items() if cls.config_section is None)
    collectors = [COLLECTORS[name](options) for name in names]
    scrape = ScrapeCollector(collectors)
    scrape.start()
    time.sleep(XID_SETTLE_SECONDS)  # let the Xid thread register its event set
    for device in devices:  # identities are read by each GPU's sampler thread
        print(f"  GPU {device.index}: {device.name} {device.uuid} {device.pci_bus_id}")
    gpu_collector = next(c for c in collectors if isinstance(c, GpuCollector))
    down = per_gpu_timings(gpu_collector, rounds=5)
    scrape_path_per_gpu(gpu_collector, rounds=max(1, scrapes))
    profiling = next(c for c in collectors if isinstance(c, GpuProfilingCollector))
    per_gpu_profiling(profiling, rounds=5)
    scrape_path_per_gpu(profiling, rounds=max(1, scrapes))

    registry = CollectorRegistry()
    registry.register(scrape)
    scrape_seconds = []
    text = ""
    for _ in range(max(1, scrapes)):
        started = time.perf_counter()
        text = render(registry).decode()
        scrape_seconds.append(time.perf_counter() - started)
    print("\nevery GPU series (last scrape):")
    for line in text.splitlines():
        if line.startswith(("aiinfra_gpu", "aiinfra_scrape_collector")):
            print("  " + line)
    failed = [line for line in text.splitlines()
              if line.startswith("aiinfra_scrape_collector_success") and line.endswith(" 0.0")]
    print(f"\nfull scrape ({len(collectors)} collectors, {len(text)} bytes): p50 "
          f"{statistics.median(scrape_seconds) * 1e3:.2f} ms, max "
          f"{max(scrape_seconds) * 1e3:.2f} ms over {len(scrape_seconds)} scrapes")
    scrape.stop()
    per_group_gpu_usage(session)
    session.shutdown()
    if failed or down:
        print(f"FAIL: {len(failed)} collector(s) failed, {down} GPU(s) down: {failed}",
              file=sys.stderr)
        return 1
    print("OK: every collector succeeded and every GPU is up")
    return 0


if __name__ == "__main__":
    sys.exit(main())

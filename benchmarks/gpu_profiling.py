"""What the gpu_profiling collector costs, against the gpu collector in the same process.

    python3 benchmarks/gpu_profiling.py [--gpus 8] [--call-latency 0.0003] [--rounds 20]

On simulated H100s whose every NVML call takes --call-latency (0.3 ms: an H100 read takes 5-8 ms
for the gpu collector's ~20 calls), printed per collector: the background read of one GPU (its
read_device, run on the GPU's sampler thread as the exporter runs it; profiling reads 110 ms
apart, as GPM needs), the scrape-path time per GPU (collect(): copying the latest readings) and
the rendering of its families per GPU, with the profiling/gpu ratios. Target: scrape path
<= 1 ms per GPU (the robustness issue's), for both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.collectors.gpu import GpuCollector  # noqa: E402
from exporter.collectors.gpu_profiling import GpuProfilingCollector  # noqa: E402
from exporter.exposition import render  # noqa: E402
from exporter.nvml import NvmlSession  # noqa: E402
from exporter.nvml_collector import NvmlCollector  # noqa: E402
from exporter.nvml_sim import SimulatedNVML  # noqa: E402
from exporter.registry import ExporterOptions  # noqa: E402
from scripts.gpu_check import GPM_REFRESH_SECONDS, on_gpu_thread  # noqa: E402

TARGET_MS_PER_GPU = 1.0


def background_read_ms(collector: NvmlCollector, rounds: int, spacing: float) -> float:
    """p50 of one GPU's read_device on its own thread, reads `spacing` seconds apart."""
    seconds = []
    for round_number in range(rounds + 1):
        for device in collector.session.devices:
            time.sleep(spacing)
            _, taken = on_gpu_thread(collector.session, device,
                                     lambda device=device: collector.read_device(device))
            if round_number:  # the first GPM read only takes its first sample
                seconds.append(taken)
    return statistics.median(seconds) * 1e3


def per_gpu_ms(function: object, rounds: int, gpus: int) -> float:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) / gpus * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--call-latency", type=float, default=0.0003)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    session = NvmlSession(SimulatedNVML(args.gpus, call_latency_seconds=args.call_latency))
    options = ExporterOptions(nvml=session, gpu_sample_interval_seconds=0.5)
    collectors = {"gpu": GpuCollector(options), "gpu_profiling": GpuProfilingCollector(options)}
    for collector in collectors.values():
        collector.start()
    time.sleep(1.5)  # two profiling readings, so GPM ratios are in the scrape
    figures = {}
    for name, collector in collectors.items():
        registry = CollectorRegistry()
        registry.register(collector)  # type: ignore[arg-type]
        spacing = GPM_REFRESH_SECONDS if name == "gpu_profiling" else 0.0
        figures[name] = (background_read_ms(collector, max(3, args.rounds // 4), spacing),
                         per_gpu_ms(collector.collect, args.rounds * 10, args.gpus),
                         per_gpu_ms(lambda registry=registry: render(registry), args.rounds,
                                    args.gpus),
                         sum(len(family.samples) for family in collector.collect()))
    session.shutdown()
    print(f"{args.gpus} simulated H100s, {args.call_latency * 1e3:g} ms per NVML call; "
          f"ms per GPU (p50)")
    print(f"{'collector':15} {'background read':>15} {'scrape path':>11} {'render':>8} "
          f"{'series':>7}")
    for name, (read, scrape, rendered, series) in figures.items():
        print(f"{name:15} {read:15.2f} {scrape:11.3f} {rendered:8.3f} {series:7d}")
    (read_p, scrape_p, render_p, _), (read_g, scrape_g, render_g, _) = (
        figures["gpu_profiling"], figures["gpu"])
    print(f"gpu_profiling / gpu: background read {read_p / read_g:.2f}x, scrape path "
          f"{scrape_p / scrape_g:.2f}x, render {render_p / render_g:.2f}x")
    worst = max(scrape_p, scrape_g)
    print(f"target scrape path <= {TARGET_MS_PER_GPU:g} ms per GPU: "
          f"{'met' if worst <= TARGET_MS_PER_GPU else 'MISSED'} ({worst:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

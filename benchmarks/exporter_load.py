"""Many concurrent scrapers against the exporter on 8 simulated GPUs, healthy and with one hung GPU.

    python3 benchmarks/exporter_load.py [--scrapers 100] [--seconds 30] [--gpus 8]
                                        [--baseline-repo /tmp/old]

Each scenario starts a fresh exporter on loopback and runs `--scrapers` threads, each with its
own kept-alive connection and Prometheus' headers, scraping back to back for `--seconds`. Every
answer is checked: an answer is *complete* when every collector reports success 1 and every GPU
that should be up (all of them; all but GPU 1 with `1:hang`) has its utilisation series.
Printed per scenario: answers, incomplete answers, failed requests, p50/p99 latency, RSS before
and after the load and its peak, and the process's thread count after the load.

With --baseline-repo (another checkout, e.g. `git worktree add /tmp/old main`) the same scenarios
run first against that code, in this same command, and the ratios new/old are printed.

Then, in this process, the NVML share of a scrape: with a simulated per-call latency of
--call-latency (0.3 ms: an H100 read takes 5-8 ms for the gpu collector's ~20 calls), the time a
GPU costs on the scrape path when it is read there (read_device, as before) against the time a
scrape takes per GPU when it only copies the sampler's latest reading. Target: <= 1 ms per GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.exporter_scrape import PROMETHEUS_HEADERS, percentile  # noqa: E402
from tests.support.services import free_port, stop_process, wait_http_ok  # noqa: E402

SCENARIOS = {"healthy": "", "one hung GPU": "1:hang"}
TARGET_MS_PER_GPU = 1.0


@dataclass
class LoadResult:
    answers: int = 0
    incomplete: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    peak_rss_mib: float = 0.0
    threads: int = 0
    example_problem: str = ""

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)


def proc_status(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    return float("nan")


@contextlib.contextmanager
def exporter(repo: Path, gpus: int, faults: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The exporter of `repo` (its own code, imported from its folder) on a free port."""
    port = free_port()
    command = [sys.executable, "-m", "exporter.cli", f"--web.listen-address=127.0.0.1:{port}",
               f"--gpu.simulate={gpus}", "--log.level=error"]
    if faults:
        command.append(f"--gpu.simulate-faults={faults}")
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http_ok(url, 30, process)
        yield url, process
    finally:
        stop_process(process)


def problem(text: str, expected_up: list[int]) -> str:
    """Why an answer is incomplete ('' if it is complete)."""
    failed = [line.split('"')[1] for line in text.splitlines()
              if line.startswith("aiinfra_scrape_collector_success{") and line.endswith(" 0.0")]
    if failed:
        return f"collector(s) failed: {', '.join(failed)}"
    missing = [gpu for gpu in expected_up
               if f'aiinfra_gpu_utilization_ratio{{gpu="{gpu}"' not in text]
    return f"GPU(s) without series: {missing}" if missing else ""


def run_load(url: str, process: subprocess.Popen, scrapers: int, seconds: float,
             expected_up: list[int]) -> LoadResult:
    result = LoadResult()
    warm = requests.Session()
    for _ in range(5):
        warm.get(url, headers=PROMETHEUS_HEADERS, timeout=10)
    warm.close()
    time.sleep(0.5)
    result.rss_before_mib = proc_status(process.pid, "VmRSS") / 1024
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    start = threading.Barrier(scrapers)

    def scraper() -> None:
        session = requests.Session()
        start.wait()
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            try:
                response = session.get(url, headers=PROMETHEUS_HEADERS, timeout=30)
                response.raise_for_status()
                text = response.text
            except requests.RequestException as error:
                with lock:
                    result.failed += 1
                    result.example_problem = result.example_problem or f"request: {error}"
                continue
            elapsed = time.perf_counter() - began
            issue = problem(text, expected_up)
            with lock:
                result.answers += 1
                result.latencies.append(elapsed)
                if issue:
                    result.incomplete += 1
                    result.example_problem = result.example_problem or issue
        session.close()

    threads = [threading.Thread(target=scraper) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.rss_after_mib = proc_status(process.pid, "VmRSS") / 1024
    result.peak_rss_mib = proc_status(process.pid, "VmHWM") / 1024
    result.threads = int(proc_status(process.pid, "Threads"))
    return result


def print_row(label: str, result: LoadResult) -> None:
    share = 100 * result.incomplete / max(1, result.answers)
    print(f"{label:34} {result.answers:7d} {result.incomplete:6d} ({share:5.1f}%) "
          f"{result.failed:6d} {result.percentile(0.5) * 1e3:8.1f} "
          f"{result.percentile(0.99) * 1e3:8.1f} {result.rss_before_mib:7.1f} "
          f"{result.rss_after_mib:7.1f} {result.peak_rss_mib:7.1f} {result.threads:7d}")
    if result.example_problem:
        print(f"{'':34} e.g. {result.example_problem}")


def scrape_path_per_gpu(gpus: int, call_latency: float, rounds: int) -> tuple[float, float]:
    """(ms a GPU costs when read on the scrape path, ms a scrape costs per GPU now)."""
    from exporter.collectors.gpu import GpuCollector
    from exporter.nvml import NvmlSession
    from exporter.nvml_sim import SimulatedNVML
    from exporter.registry import ExporterOptions

    session = NvmlSession(SimulatedNVML(gpus, call_latency_seconds=call_latency))
    collector = GpuCollector(ExporterOptions(nvml=session))
    collector.start()
    devices = session.ensure_initialized()
    read_on_scrape = []
    for _ in range(rounds):
        began = time.perf_counter()
        for device in devices:
            collector.read_device(device)
        read_on_scrape.append((time.perf_counter() - began) / len(devices))
    from_sampler = []
    for _ in range(rounds * 10):
        began = time.perf_counter()
        collector.collect()
        from_sampler.append((time.perf_counter() - began) / len(devices))
    session.shutdown()
    return statistics.median(read_on_scrape) * 1e3, statistics.median(from_sampler) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--baseline-repo", type=Path, default=None,
                        help="another checkout to measure first (e.g. main's)")
    parser.add_argument("--call-latency", type=float, default=0.0003,
                        help="simulated seconds per NVML call for the scrape-path figure")
    args = parser.parse_args()
    variants = [("this checkout", REPO_ROOT)]
    if args.baseline_repo is not None:
        variants.insert(0, ("baseline", args.baseline_repo.resolve()))
    print(f"{args.scrapers} scrapers x {args.seconds:g} s, {args.gpus} simulated GPUs, loopback, "
          f"Prometheus headers (gzip), each answer checked")
    print(f"{'scenario':34} {'answers':>7} {'incomplete':>15} {'failed':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'RSS0':>7} {'RSS1':>7} {'peak':>7} {'threads':>7}")
    results: dict[tuple[str, str], LoadResult] = {}
    for scenario, faults in SCENARIOS.items():
        expected_up = [gpu for gpu in range(args.gpus) if not (faults and gpu == 1)]
        for variant, repo in variants:
            with exporter(repo, args.gpus, faults) as (url, process):
                result = run_load(url, process, args.scrapers, args.seconds, expected_up)
            results[(variant, scenario)] = result
            print_row(f"{variant}: {scenario}", result)
    if args.baseline_repo is not None:
        print("\nnew / baseline:")
        for scenario in SCENARIOS:
            new, old = results[("this checkout", scenario)], results[("baseline", scenario)]
            print(f"  {scenario}: p50 {new.percentile(0.5) / old.percentile(0.5):.2f}x, "
                  f"p99 {new.percentile(0.99) / old.percentile(0.99):.2f}x, answers "
                  f"{new.answers / max(1, old.answers):.2f}x, incomplete {new.incomplete} "
                  f"vs {old.incomplete}, peak RSS {new.peak_rss_mib / old.peak_rss_mib:.2f}x")
    on_scrape, from_sampler = scrape_path_per_gpu(args.gpus, args.call_latency, rounds=20)
    print(f"\nNVML on the scrape path, {args.call_latency * 1e3:g} ms per simulated call: "
          f"reading a GPU there {on_scrape:.2f} ms; copying its sampled reading "
          f"{from_sampler:.3f} ms per GPU ({on_scrape / from_sampler:.0f}x less); target <= "
          f"{TARGET_MS_PER_GPU:g} ms: {'met' if from_sampler <= TARGET_MS_PER_GPU else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

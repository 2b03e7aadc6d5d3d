"""Scrape latency and memory: our exporter (host only, host + 8 simulated GPUs) vs node_exporter.

    python3 benchmarks/exporter_scrape.py [--requests 300] [--gpus 8]
        [--inference [--probe-targets 20] [--process-groups 10] [--probe-interval 5s]]

All exporters run side by side in this one command and are scraped round-robin with
Prometheus's own Accept and Accept-Encoding headers over a kept-alive connection, so machine noise
hits them alike. Printed: p50/p99/mean latency of GET /metrics, response size, samples, RSS and
peak RSS, and the ratio of each p50 to node_exporter's. Targets: p50(host + GPUs) <= 1.0x
node_exporter's p50, RSS <= 60 MiB.

--inference adds target (d): host + GPUs + the probe and process collectors, probing a local demo
model endpoint (scripts/demo_model.py, its own process) from 20 targets and watching 10 process
groups of 2 processes each, one process of each of the first groups on a simulated GPU. Its probes
run in the background during the measurement; target: p50(d) <= 1.0x node_exporter's p50 too.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.services import free_port, wait_http_ok  # noqa: E402

PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
TARGET_P50_RATIO = 1.0
TARGET_RSS_MIB = 60.0


@dataclass
class Target:
    name: str
    url: str
    process: subprocess.Popen
    latencies: list[float] = field(default_factory=list)
    body_bytes: int = 0
    samples: int = 0

    def rss_mib(self, field_name: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextlib.contextmanager
def started(name: str, command: list[str], port: int, log_dir: Path,
            path: str = "/metrics") -> Iterator[Target]:
    log = (log_dir / f"{name.split()[0]}-{port}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        wait_http_ok(url, 30, process)
        yield Target(name, url, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def wait_for_series(target: Target, series: str, timeout_seconds: float = 30.0) -> None:
    """Wait until the target serves `series` (the GPU profiling ratios need two background
    readings, one --collector.gpu.sample-interval apart), so the steady state is measured."""
    deadline = time.monotonic() + timeout_seconds
    while series not in requests.get(target.url, timeout=10).text:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.name} did not serve {series} in {timeout_seconds:g}s")
        time.sleep(0.2)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def scrape_round_robin(targets: list[Target], requests_each: int, warmup: int) -> None:
    sessions = {target.name: requests.Session() for target in targets}
    for round_number in range(warmup + requests_each):
        for target in targets:
            started_at = time.perf_counter()
            response = sessions[target.name].get(target.url, headers=PROMETHEUS_HEADERS,
                                                 timeout=10)
            elapsed = time.perf_counter() - started_at
            response.raise_for_status()
            if round_number >= warmup:
                target.latencies.append(elapsed)
            if round_number == warmup:
                target.body_bytes = len(response.content)
                target.samples = sum(1 for line in response.text.splitlines()
                                     if line and not line.startswith("#"))


def inference_config(directory: Path, model_url: str, targets: int, groups: int,
                     interval: str) -> Path:
    """The exporter config of target (d): `targets` probes of the demo model, `groups` groups."""
    lines = ["probe:", "  targets:"]
    for index in range(targets):
        lines.append(f"    - {{name: model-{index}, url: '{model_url}/v1/predict', method: POST, "
                     f"body: '{{\"inputs\": [{index}]}}', json_field: {{path: outputs.0}}, "
                     f"interval: {interval}, latency_threshold: 1s}}")
    lines += ["process:", "  groups:"]
    lines += [f"    - {{name: group-{index}, match: {{names: [bench-group-{index}]}}}}"
              for index in range(groups)]
    path = directory / "exporter.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def group_processes(groups: int, per_group: int = 2) -> Iterator[list[int]]:
    """`sleep` processes named bench-group-N (argv[0]), per_group of each group; their pids."""
    sleeper = shutil.which("sleep") or "/bin/sleep"
    processes = [subprocess.Popen([f"bench-group-{index}", "3600"], executable=sleeper)
                 for index in range(groups) for _ in range(per_group)]
    try:
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per target")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--gpus", type=int, default=8, help="simulated GPUs for target (b)")
    parser.add_argument("--inference", action="store_true",
                        help="add target (d): GPUs + probe and process collectors")
    parser.add_argument("--probe-targets", type=int, default=20)
    parser.add_argument("--process-groups", type=int, default=10)
    parser.add_argument("--probe-interval", default="5s")
    args = parser.parse_args()
    node_exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if node_exporter is None:
        print("prometheus-node-exporter not on PATH (apt-get install prometheus-node-exporter)")
        return 1
    ours = [sys.executable, "-m", "exporter.cli", "--log.level=warning"]
    ports = [free_port() for _ in range(5)]
    with tempfile.TemporaryDirectory() as log_dir, contextlib.ExitStack() as stack:
        logs = Path(log_dir)
        host_only = stack.enter_context(started(
            "(a) aiinfra host only", [*ours, f"--web.listen-address=127.0.0.1:{ports[0]}",
                                      "--no-collector.gpu", "--no-collector.xid"], ports[0], logs))
        with_gpus = stack.enter_context(started(
            f"(b) aiinfra host + {args.gpus} sim GPUs",
            [*ours, f"--web.listen-address=127.0.0.1:{ports[1]}", f"--gpu.simulate={args.gpus}"],
            ports[1], logs))
        baseline = stack.enter_context(started(
            "(c) node_exporter", [node_exporter, "--no-collector.systemd",
                                  f"--web.listen-address=127.0.0.1:{ports[2]}"], ports[2], logs))
        targets = [host_only, with_gpus, baseline]
        if args.inference:
            model_url = f"http://127.0.0.1:{ports[4]}"
            stack.enter_context(started(  # 20 ms answers, in its own process like a real one
                "demo_model", [sys.executable, str(REPO_ROOT / "scripts" / "demo_model.py"),
                               f"--listen-address=127.0.0.1:{ports[4]}",
                               "--latency-seconds=0.02", "--wave-ratio=0"],
                ports[4], logs, path="/healthz"))
            pids = stack.enter_context(group_processes(args.process_groups))
            config = inference_config(logs, model_url, args.probe_targets, args.process_groups,
                                      args.probe_interval)
            attached = ",".join(f"{index}:pid={pids[2 * index]}"
                                for index in range(min(args.gpus, args.process_groups)))
            targets.insert(2, stack.enter_context(started(
                f"(d) (b) + {args.probe_targets} probes, {args.process_groups} groups",
                [*ours, f"--web.listen-address=127.0.0.1:{ports[3]}",
                 f"--gpu.simulate={args.gpus}", f"--gpu.simulate-faults={attached}",
                 "--collector.probe", "--collector.process", f"--config.file={config}"],
                ports[3], logs)))
        for target in targets:
            if "GPUs" in target.name or target.name.startswith("(d)"):
                wait_for_series(target, "aiinfra_gpu_sm_active_ratio{")
        scrape_round_robin(targets, args.requests, args.warmup)
        version_output = subprocess.run([node_exporter, "--version"], capture_output=True,
                                        text=True)
        version = (version_output.stdout + version_output.stderr).strip().split("\n")[0]
        print(f"{args.requests} requests each after {args.warmup} warm-up, round-robin, "
              f"Prometheus headers (gzip); baseline: {version}")
        header = (f"{'target':32} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'KB':>6} "
                  f"{'samples':>7} {'RSS MiB':>8} {'peak MiB':>8} {'p50/node':>8}")
        print(header)
        baseline_p50 = statistics.median(baseline.latencies)
        for target in targets:
            p50 = statistics.median(target.latencies)
            p99 = percentile(target.latencies, 0.99)
            mean = statistics.fmean(target.latencies)
            print(f"{target.name:32} {p50 * 1e3:7.2f} {p99 * 1e3:7.2f} {mean * 1e3:8.2f} "
                  f"{target.body_bytes / 1024:6.1f} {target.samples:7d} {target.rss_mib():8.1f} "
                  f"{target.rss_mib('VmHWM'):8.1f} {p50 / baseline_p50:7.2f}x")
        gpu_ratio = statistics.median(with_gpus.latencies) / baseline_p50
        worst_rss = max(host_only.rss_mib("VmHWM"), with_gpus.rss_mib("VmHWM"))
        print(f"target p50(b) <= {TARGET_P50_RATIO:.1f}x node_exporter: "
              f"{'met' if gpu_ratio <= TARGET_P50_RATIO else 'MISSED'} ({gpu_ratio:.2f}x); "
              f"target RSS <= {TARGET_RSS_MIB:.0f} MiB: "
              f"{'met' if worst_rss <= TARGET_RSS_MIB else 'MISSED'} (peak {worst_rss:.1f} MiB)")
        if args.inference:
            inference = targets[2]
            ratio = statistics.median(inference.latencies) / baseline_p50
            print(f"target p50(d) <= {TARGET_P50_RATIO:.1f}x node_exporter: "
                  f"{'met' if ratio <= TARGET_P50_RATIO else 'MISSED'} ({ratio:.2f}x); "
                  f"(d) peak RSS {inference.rss_mib('VmHWM'):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The process collector against real child processes: usage as /proc reports it, membership by
name, command line and cgroup, counters that survive a restart, and GPU memory per group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from exporter.collector_config import parse_collector_config
from exporter.nvml_sim import GIB, SimulatedNVML
from exporter.registry import ScrapeCollector
from tests.exporter.support import (
    build_scrape,
    by_label,
    collector_success,
    exporter_process,
    exposition,
    samples,
)
from tests.exporter.test_exposition import promtool_check
from tests.support.services import wait_for

# Holds 64 MiB, burns ~0.3 s of CPU, opens 5 files and starts 3 threads, then says so and waits.
CHILD = """
import sys, threading, time
ballast = bytearray(64 * 1024 * 1024)
for index in range(0, len(ballast), 4096):
    ballast[index] = 1
started = time.process_time()
while time.process_time() - started < 0.3:
    pass
files = [open("/dev/null", "rb") for _ in range(5)]
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(3)]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.read()
stop.set()
"""


@contextmanager
def child_process(*extra_args: str, argv0: str | None = None) -> Iterator[subprocess.Popen]:
    """A real python child running CHILD until the test ends (or closes its stdin)."""
    args = [argv0 or sys.executable, "-c", CHILD, *extra_args]
    child = subprocess.Popen(args, executable=sys.executable, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def process_scrape(groups: list[dict], nvml: SimulatedNVML | None = None,
                   **option_overrides) -> ScrapeCollector:
    config = parse_collector_config(Path("exporter.yml"),
                                    {"process": {"groups": groups, "scan_interval": "100ms"}})
    return build_scrape(["process"], nvml, collector_config=config, **option_overrides)


@pytest.fixture
def scrapes() -> Iterator[list[ScrapeCollector]]:
    started: list[ScrapeCollector] = []
    yield started
    for scrape in started:
        scrape.stop()


def group_value(text: str, name: str, group: str, **labels: str) -> float | None:
    wanted = {"group": group, **labels}
    return next((value for key, value in samples(text, name).items()
                 if all(dict(key).get(k) == v for k, v in wanted.items())), None)


def test_a_child_process_is_reported_as_proc_sees_it(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    with child_process(marker) as child:
        scrapes.append(scrape := process_scrape([{"name": "model",
                                                  "match": {"cmdline": marker}}]))
        text = exposition(scrape)
        rss_kib = proc_status(child.pid, "VmRSS")
        threads = proc_status(child.pid, "Threads")
        fds = len(os.listdir(f"/proc/{child.pid}/fd"))
    assert group_value(text, "aiinfra_process_group_processes", "model") == 1
    resident = group_value(text, "aiinfra_process_group_resident_memory_bytes", "model")
    assert resident > 64 * 2**20
    assert resident == pytest.approx(rss_kib * 1024, rel=0.1)
    assert group_value(text, "aiinfra_process_group_threads", "model") == threads == 4
    assert group_value(text, "aiinfra_process_group_open_fds", "model") == fds
    user = group_value(text, "aiinfra_process_group_cpu_seconds_total", "model", mode="user")
    system = group_value(text, "aiinfra_process_group_cpu_seconds_total", "model",
                         mode="system")
    assert user + system >= 0.3
    assert collector_success(text)["process"] == 1.0


def test_group_counts_drop_at_once_and_cpu_seconds_never_go_back(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    with child_process(marker), child_process(marker):
        scrapes.append(scrape := process_scrape([{"name": "workers",
                                                  "match": {"cmdline": marker}}]))
        both = exposition(scrape)
    after = exposition(scrape)  # the children have ended; no scan has run necessarily
    cpu = "aiinfra_process_group_cpu_seconds_total"
    assert group_value(both, "aiinfra_process_group_processes", "workers") == 2
    assert group_value(after, "aiinfra_process_group_processes", "workers") == 0
    assert group_value(after, "aiinfra_process_group_resident_memory_bytes", "workers") == 0
    for mode in ("user", "system"):
        assert group_value(after, cpu, "workers", mode=mode) >= \
            group_value(both, cpu, "workers", mode=mode)
    assert sum(group_value(after, cpu, "workers", mode=mode) for mode in ("user", "system")) \
        >= 2 * 0.3


def test_new_processes_join_within_one_scan(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    scrapes.append(scrape := process_scrape([{"name": "late", "match": {"cmdline": marker}}]))
    assert group_value(exposition(scrape), "aiinfra_process_group_processes", "late") == 0
    with child_process(marker):
        wait_for(lambda: group_value(exposition(scrape), "aiinfra_process_group_processes",
                                     "late") == 1, 10, 0.05, message="the child counted")


def own_cgroup() -> str:
    """The most specific of this process's cgroup paths (v2, or the v1 hierarchies)."""
    return max((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text()
                .splitlines()), key=len)


def test_match_by_name_cgroup_and_first_group_wins(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    named = f"aiinfra-named-{uuid.uuid4().hex[:8]}"
    with child_process(marker, argv0=named), child_process(marker):
        scrapes.append(scrape := process_scrape([
            {"name": "by-name", "match": {"names": [named]}},
            {"name": "by-cgroup", "match": {"cgroup": own_cgroup(), "cmdline": marker}},
            {"name": "elsewhere", "match": {"cgroup": "/no.slice/such.scope", "cmdline": marker}},
        ]))
        text = exposition(scrape)
    processes = by_label(text, "aiinfra_process_group_processes", "group")
    # The named child matches both of the first two groups; it counts in the first only.
    assert processes == {"by-name": 1, "by-cgroup": 1, "elsewhere": 0}


def test_gpu_memory_and_utilisation_per_group(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    nvml = SimulatedNVML(2)
    with child_process(marker) as child, child_process("not-in-a-group") as stranger:
        nvml.attach_process(1, child.pid, 3 * GIB, sm_percent=40)
        nvml.attach_process(1, stranger.pid, 5 * GIB, sm_percent=90)
        scrapes.append(scrape := process_scrape([{"name": "model",
                                                  "match": {"cmdline": marker}}], nvml))
        text = exposition(scrape)
    memory = samples(text, "aiinfra_process_group_gpu_memory_bytes")
    assert memory == {(("gpu", "1"), ("group", "model"), ("uuid", nvml.devices[1].uuid)):
                      3 * GIB}
    busy = samples(text, "aiinfra_process_group_gpu_utilization_ratio")
    assert list(busy.values()) == [pytest.approx(0.4)]


def test_without_nvml_gpu_series_are_absent_and_the_rest_served(scrapes) -> None:
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    with child_process(marker):
        scrapes.append(scrape := process_scrape(
            [{"name": "model", "match": {"cmdline": marker}}],
            SimulatedNVML(1, library_missing=True)))
        text = exposition(scrape)
    assert "aiinfra_process_group_gpu_memory_bytes" not in text
    assert group_value(text, "aiinfra_process_group_processes", "model") == 1
    assert collector_success(text)["process"] == 1.0


def test_a_hung_gpu_costs_its_own_gpu_series_only(scrapes) -> None:
    """GPU 1 hangs in the driver: the group keeps its GPU 0 series and every scrape answers at
    once (no NVML call on the scrape path), instead of waiting for the hung GPU."""
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    nvml = SimulatedNVML(2)
    with child_process(marker) as child:
        nvml.attach_process(0, child.pid, 2 * GIB)
        nvml.attach_process(1, child.pid, 3 * GIB)
        scrapes.append(scrape := process_scrape([{"name": "model",
                                                  "match": {"cmdline": marker}}], nvml,
                                                gpu_timeout_seconds=0.3,
                                                gpu_sample_interval_seconds=0.05))
        assert len(samples(exposition(scrape), "aiinfra_process_group_gpu_memory_bytes")) == 2
        nvml.devices[1].fault = "hang"
        try:
            wait_for(lambda: "1" not in by_label(exposition(scrape),
                                                 "aiinfra_process_group_gpu_memory_bytes",
                                                 "gpu"), 5, 0.05, "GPU 1 left out")
            for _ in range(3):
                started = time.monotonic()
                text = exposition(scrape)
                assert time.monotonic() - started < 0.25
                assert by_label(text, "aiinfra_process_group_gpu_memory_bytes",
                                "gpu") == {"0": 2 * GIB}
                assert group_value(text, "aiinfra_process_group_processes", "model") == 1
                assert collector_success(text) == {"process": 1.0}
        finally:
            nvml.release_hangs.set()


def test_every_per_process_nvml_call_runs_on_its_gpus_own_thread(scrapes) -> None:
    """The process and gpu_processes collectors ask a GPU only on its sampler thread (with the
    gpu collector's readings), never on a scrape's thread; a scrape takes no NVML time."""
    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    nvml = SimulatedNVML(2, call_latency_seconds=0.005)
    with child_process(marker) as child:
        nvml.attach_process(1, child.pid, 3 * GIB, sm_percent=40)
        config = parse_collector_config(Path("exporter.yml"), {"process": {"groups": [
            {"name": "model", "match": {"cmdline": marker}}]}})
        scrapes.append(scrape := build_scrape(["gpu", "gpu_processes", "process"], nvml,
                                              collector_config=config,
                                              gpu_sample_interval_seconds=0.05))
        time.sleep(0.2)  # several background readings of each GPU
        started = time.monotonic()
        text = exposition(scrape)
        assert time.monotonic() - started < 0.1  # ~40 calls x 5 ms a GPU if read here
    assert group_value(text, "aiinfra_process_group_gpu_memory_bytes", "model") == 3 * GIB
    assert str(child.pid) in by_label(text, "aiinfra_gpu_process_memory_bytes", "pid")
    assert nvml.calling_threads == {0: {"sampler-gpu0"}, 1: {"sampler-gpu1"}}


def test_the_exporter_serves_groups_and_probes_that_promtool_accepts(tmp_path) -> None:
    from scripts.demo_model import DemoModel, serving

    marker = f"aiinfra-test-{uuid.uuid4().hex}"
    with serving(DemoModel(latency_seconds=0.01)) as url, child_process(marker) as child:
        config = tmp_path / "exporter.yml"
        config.write_text(f"probe:\n  targets:\n    - {{name: model, url: '{url}/healthz', "
                          f"interval: 100ms, latency_threshold: 1s}}\n"
                          f"process:\n  groups:\n    - {{name: model, match: {{cmdline: "
                          f"'{marker}'}}}}\n")
        with exporter_process(tmp_path, "--collector.probe", "--collector.process",
                              f"--config.file={config}", "--gpu.simulate=1",
                              f"--gpu.simulate-faults=0:pid={child.pid}") as exporter:
            text = wait_for(lambda: (lambda t: t if 'aiinfra_probe_success{target="model"} 1.0'
                                     in t else None)(
                requests.get(f"{exporter.url}/metrics", timeout=5).text), 20, 0.1,
                message="the first probe")
    assert group_value(text, "aiinfra_process_group_gpu_memory_bytes", "model", gpu="0") == 4 * GIB
    for name in ("aiinfra_probe_duration_seconds_bucket", "aiinfra_process_group_threads"):
        assert f"{name}{{" in text
    result = promtool_check(text)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout

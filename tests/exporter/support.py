"""Helpers for the exporter tests: in-process scrapes, and the real exporter as a process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.exposition import render
from exporter.nvml import NvmlSession
from exporter.nvml_sim import SimulatedNVML
from exporter.registry import COLLECTORS, ExporterOptions, ScrapeCollector, load_collectors
from tests.support.services import free_port, stop_process, wait_http_ok

REPO_ROOT = Path(__file__).resolve().parents[2]
# A sysfs tree with two InfiniBand adapters (one port up, one down) and a RoCE one.
INFINIBAND_SYSFS = Path(__file__).parent / "fixtures" / "sysfs"


def build_scrape(names: list[str], nvml: SimulatedNVML | None = None,
                 **option_overrides) -> ScrapeCollector:
    """A started ScrapeCollector over the named collectors (NVML simulated when given)."""
    load_collectors()
    session = NvmlSession(nvml if nvml is not None else SimulatedNVML(0))
    options = ExporterOptions(nvml=session, **option_overrides)
    scrape = ScrapeCollector([COLLECTORS[name](options) for name in names])
    scrape.start()
    return scrape


def exposition(scrape: ScrapeCollector) -> str:
    """One scrape rendered exactly as the HTTP server renders it."""
    registry = CollectorRegistry()
    registry.register(scrape)
    return render(registry).decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric name: sorted label pairs -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """Samples of one metric keyed by one label's value (e.g. gpu index)."""
    return {dict(labels)[label]: value for labels, value in samples(text, name).items()}


def collector_success(text: str) -> dict[str, float]:
    return by_label(text, "aiinfra_scrape_collector_success", "collector")


@dataclass
class ExporterProcess:
    url: str
    address: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def exporter_process(workdir: Path, *args: str, scheme: str = "http",
                     ready_path: str = "/metrics", **ready_kwargs) -> Iterator[ExporterProcess]:
    """The real exporter (python -m exporter.cli) on a free loopback port; stopped afterwards."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "exporter.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", f"--web.listen-address={address}", *args],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    running = ExporterProcess(f"{scheme}://{address}", address, process, log_path)
    try:
        try:
            wait_http_ok(f"{running.url}{ready_path}", 20, process, **ready_kwargs)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"exporter did not start: {error}\n{running.log()}") from error
        yield running
    finally:
        stop_process(process)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the exporter CLI to completion (for flags that must make it exit)."""
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)

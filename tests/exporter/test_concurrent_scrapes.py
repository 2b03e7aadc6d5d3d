"""Concurrent scrapes share one collection per collector; collectors run at once, each with its
own deadline; NVML reads stay off the scrape path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.nvml_sim import SimulatedNVML
from exporter.registry import Collector, ExporterOptions, ScrapeCollector
from tests.exporter.support import build_scrape, by_label, collector_success, exposition


class SleepyCollector(Collector):
    """Takes `seconds` to collect and counts its collections."""

    def __init__(self, name: str, seconds: float, options: ExporterOptions) -> None:
        super().__init__(options)
        self.name = name  # type: ignore[misc] -- a per-instance name for the test
        self.seconds = seconds
        self.collections = 0

    def collect(self) -> Iterable[Metric]:
        self.collections += 1
        time.sleep(self.seconds)
        family = GaugeMetricFamily(f"test_{self.name}", "A test value.")
        family.add_metric([], 1.0)
        return [family]


def scrape_concurrently(scrape: ScrapeCollector, scrapers: int, rounds: int) -> list[str]:
    answers: list[str] = []
    lock = threading.Lock()

    def scraper() -> None:
        for _ in range(rounds):
            text = exposition(scrape)
            with lock:
                answers.append(text)

    threads = [threading.Thread(target=scraper) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_concurrent_scrapes_all_get_every_collector(monkeypatch) -> None:
    nvml = SimulatedNVML(4)
    original = nvml.nvmlDeviceGetUtilizationRates

    def slow_utilization(handle):
        time.sleep(0.02)  # a slow driver: reads overlap with the next scrape
        return original(handle)

    monkeypatch.setattr(nvml, "nvmlDeviceGetUtilizationRates", slow_utilization)
    scrape = build_scrape(["gpu", "filesystem", "loadavg"], nvml)
    answers = scrape_concurrently(scrape, scrapers=8, rounds=5)
    assert len(answers) == 40
    for text in answers:
        assert collector_success(text) == {"gpu": 1.0, "filesystem": 1.0, "loadavg": 1.0}
        assert by_label(text, "aiinfra_gpu_up", "gpu") == {str(i): 1.0 for i in range(4)}


def test_scrapes_arriving_together_share_one_collection() -> None:
    slow = SleepyCollector("slow", 0.3, ExporterOptions())
    scrape = ScrapeCollector([slow])
    answers = scrape_concurrently(scrape, scrapers=10, rounds=1)
    assert all(collector_success(text) == {"slow": 1.0} for text in answers)
    assert slow.collections <= 2  # ten scrapes, one (or two, if one came late) collections


def test_collectors_run_at_once_each_with_its_own_deadline() -> None:
    options = ExporterOptions(collector_timeout_seconds=0.5)
    collectors = [SleepyCollector("a", 0.3, options), SleepyCollector("b", 0.3, options),
                  SleepyCollector("hung", 30, options)]
    scrape = ScrapeCollector(collectors)
    started = time.monotonic()
    text = exposition(scrape)
    seconds = time.monotonic() - started
    assert collector_success(text) == {"a": 1.0, "b": 1.0, "hung": 0.0}
    assert seconds < 0.9  # one deadline, not 0.3 + 0.3 + 0.5 one after the other
    started = time.monotonic()
    again = exposition(scrape)
    assert time.monotonic() - started < 0.45  # the hung one is past its deadline: no wait
    assert collector_success(again) == {"a": 1.0, "b": 1.0, "hung": 0.0}
    assert collectors[2].collections == 1  # no second call piled up behind the hung one


def test_nvml_reads_stay_off_the_scrape_path() -> None:
    """With 5 ms per NVML call one GPU takes ~0.1 s to read; a scrape only copies readings."""
    nvml = SimulatedNVML(2, call_latency_seconds=0.005)
    scrape = build_scrape(["gpu"], nvml)
    exposition(scrape)
    started = time.monotonic()
    text = exposition(scrape)
    assert time.monotonic() - started < 0.05
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 1.0}

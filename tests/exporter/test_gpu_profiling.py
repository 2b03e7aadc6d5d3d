"""The gpu_profiling collector against the simulated NVML: GPM ratios, NVLink and PCIe present on
the GPUs that offer them, absent where they do not, and a failing GPU losing only its own."""

from __future__ import annotations

import logging
import time

import pytest

from exporter.gpm import GpmSampler
from exporter.nvml_sim import SimulatedNVML, parse_fault_spec
from exporter.nvml_sim_profiling import MODELS
from exporter.registry import ScrapeCollector
from tests.exporter.support import build_scrape, by_label, collector_success, exposition, samples
from tests.support.services import wait_for

INTERVAL = 0.05
GPM_FAMILIES = ("aiinfra_gpu_sm_active_ratio", "aiinfra_gpu_sm_occupancy_ratio",
                "aiinfra_gpu_tensor_active_ratio", "aiinfra_gpu_dram_active_ratio",
                "aiinfra_gpu_graphics_active_ratio", "aiinfra_gpu_profiling_interval_seconds")


@pytest.fixture
def scrapes():
    started: list[ScrapeCollector] = []
    yield started
    for scrape in started:
        scrape.stop()


def profiled(scrapes: list[ScrapeCollector], count: int, spec: str = "",
             names: tuple[str, ...] = ("gpu_profiling",), **overrides) -> tuple[SimulatedNVML, str]:
    """A started scrape of simulated GPUs, and its first exposition with the GPM ratios of
    every GPU that can give them (GPM needs two samples, at least 100 ms apart)."""
    nvml = SimulatedNVML(count)
    parse_fault_spec(spec, nvml)
    with_gpm = sum(1 for device in nvml.devices
                   if MODELS[device.model].gpm and not device.failing and device.fault is None)
    scrapes.append(scrape := build_scrape(list(names), nvml,
                                          gpu_sample_interval_seconds=INTERVAL, **overrides))
    text = wait_for(lambda: (lambda t: t if len(samples(t, "aiinfra_gpu_sm_active_ratio"))
                             == with_gpm else None)(exposition(scrape)), 5, 0.05, "GPM ratios")
    return nvml, text


def test_gpm_ratios_cover_the_last_interval(scrapes) -> None:
    _, text = profiled(scrapes, 2)
    for name in GPM_FAMILIES:
        assert set(by_label(text, name, "gpu")) == {"0", "1"}, name
    for name in GPM_FAMILIES[:-1]:
        assert all(0 <= value <= 1 for value in by_label(text, name, "gpu").values()), name
    # A sample is taken every reading, but never closer than NVML's 100 ms refresh.
    intervals = by_label(text, "aiinfra_gpu_profiling_interval_seconds", "gpu").values()
    assert all(0.1 <= seconds < 1.0 for seconds in intervals), intervals
    pipes = {dict(labels)["pipe"] for labels in samples(text, "aiinfra_gpu_pipe_active_ratio")}
    assert pipes == {"tensor_hmma", "tensor_imma", "tensor_dfma", "tensor_dmma", "fp64", "fp32",
                     "fp16", "integer"}
    assert collector_success(text) == {"gpu_profiling": 1.0}


def test_a_stalled_job_shows_busy_sms_and_idle_tensor_cores(scrapes) -> None:
    """The case GPU utilisation misses: kernels running, tensor cores idle."""
    _, text = profiled(scrapes, 3, "1:workload=stalled,2:workload=idle",
                       names=("gpu", "gpu_profiling"))
    sm_active = by_label(text, "aiinfra_gpu_sm_active_ratio", "gpu")
    tensor = by_label(text, "aiinfra_gpu_tensor_active_ratio", "gpu")
    utilization = by_label(text, "aiinfra_gpu_utilization_ratio", "gpu")
    assert tensor["0"] > 0.3 * utilization["0"] and tensor["1"] < 0.05 * utilization["1"]
    assert sm_active["1"] > 0.5 * utilization["1"]
    assert sm_active["2"] == tensor["2"] == 0.0  # memory held, nothing running
    assert by_label(text, "aiinfra_gpu_memory_used_bytes", "gpu")["2"] > 0


def test_nvlink_per_gpu_by_default(scrapes) -> None:
    """Six NVLink series a GPU, whatever its link count: NVML's total traffic, the links up,
    the errors summed over the links by type."""
    _, text = profiled(scrapes, 2, "1:model=a100")
    assert by_label(text, "aiinfra_gpu_nvlink_links_up", "gpu") == {"0": 18.0, "1": 12.0}
    assert set(by_label(text, "aiinfra_gpu_nvlink_receive_bytes_total", "gpu")) == {"0", "1"}
    errors = {(dict(labels)["gpu"], dict(labels)["type"]): value for labels, value in
              samples(text, "aiinfra_gpu_nvlink_errors_total").items()}
    # The simulator logs 3 CRC and 2 replay errors on every other link (odd links on GPU 0).
    assert errors[("0", "crc")] == 9 * 3 and errors[("0", "replay")] == 9 * 2
    assert errors[("1", "recovery")] == 0.0
    assert "aiinfra_gpu_nvlink_link_" not in text  # per-link series are opt-in


def test_nvlink_per_link_and_total_and_pcie_counters(scrapes) -> None:
    _, text = profiled(scrapes, 2, "1:pcie=3x8", nvlink_per_link=True)
    links = samples(text, "aiinfra_gpu_nvlink_link_receive_bytes_total")
    assert {dict(labels)["link"] for labels in links if dict(labels)["gpu"] == "0"} == {
        str(link) for link in range(18)}
    per_link = sum(value for labels, value in links.items() if dict(labels)["gpu"] == "0")
    total = by_label(text, "aiinfra_gpu_nvlink_receive_bytes_total", "gpu")["0"]
    assert per_link == pytest.approx(total, rel=1e-3)  # NVML's own sum over the links, in bytes
    assert by_label(text, "aiinfra_gpu_nvlink_link_up", "link") == {str(link): 1.0
                                                                    for link in range(18)}
    errors = samples(text, "aiinfra_gpu_nvlink_link_errors_total")
    assert {dict(labels)["type"] for labels in errors} == {"crc", "replay", "recovery"}
    assert by_label(text, "aiinfra_gpu_pcie_max_link_generation", "gpu") == {"0": 5.0, "1": 5.0}
    assert by_label(text, "aiinfra_gpu_pcie_current_link_width", "gpu") == {"0": 16.0, "1": 8.0}
    assert by_label(text, "aiinfra_gpu_pcie_current_link_generation", "gpu")["1"] == 3.0
    assert by_label(text, "aiinfra_gpu_pcie_max_link_width", "gpu") == {"0": 16.0, "1": 16.0}
    received = by_label(text, "aiinfra_gpu_pcie_receive_bytes_total", "gpu")["0"]
    later = wait_for(lambda: (lambda value: value if value > received else None)(
        by_label(exposition(scrapes[0]), "aiinfra_gpu_pcie_receive_bytes_total", "gpu")["0"]),
        5, 0.05, "PCIe bytes growing")
    assert later > received


def test_gpm_and_nvlink_are_absent_where_the_model_lacks_them(scrapes, caplog) -> None:
    """A100: no GPM, 12 NVLink links; L4: neither; both keep their PCIe series; nothing is
    logged for a field a GPU does not have."""
    caplog.set_level(logging.INFO)
    _, text = profiled(scrapes, 3, "1:model=a100,2:model=l4")
    time.sleep(3 * INTERVAL)
    text = exposition(scrapes[0])
    for name in GPM_FAMILIES:
        assert set(by_label(text, name, "gpu")) == {"0"}, name
    assert by_label(text, "aiinfra_gpu_nvlink_links_up", "gpu") == {"0": 18.0, "1": 12.0}
    assert set(by_label(text, "aiinfra_gpu_nvlink_transmit_bytes_total", "gpu")) == {"0", "1"}
    assert set(by_label(text, "aiinfra_gpu_pcie_receive_bytes_total", "gpu")) == {"0", "1", "2"}
    assert by_label(text, "aiinfra_gpu_pcie_max_link_generation", "gpu") == {"0": 5.0, "1": 4.0,
                                                                            "2": 4.0}
    assert collector_success(text) == {"gpu_profiling": 1.0}
    assert [record.message for record in caplog.records if record.levelno >= logging.WARNING
            and record.name.startswith("exporter")] == []


def test_a_failing_gpu_loses_only_its_profiling_series(scrapes, caplog) -> None:
    """GPM sampling fails with Unknown on GPU 1 (not 'unsupported'): its profiling series go,
    logged once; GPU 0 keeps them and the gpu collector still reads GPU 1."""
    caplog.set_level(logging.WARNING)
    _, text = profiled(scrapes, 2, "1:error=nvmlGpmSampleGet", names=("gpu", "gpu_profiling"))
    time.sleep(3 * INTERVAL)
    text = exposition(scrapes[0])
    for name in ("aiinfra_gpu_sm_active_ratio", "aiinfra_gpu_nvlink_links_up",
                 "aiinfra_gpu_pcie_current_link_width"):
        assert set(by_label(text, name, "gpu")) == {"0"}, name
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 1.0}
    assert collector_success(text) == {"gpu": 1.0, "gpu_profiling": 1.0}
    failures = [message for message in caplog.messages if "profiling readings failed" in message]
    assert len(failures) == 1 and "GPU 1" in failures[0] and "Unknown" in failures[0]


def test_a_hung_gpu_keeps_the_others_profiled_and_scrapes_quick(scrapes) -> None:
    nvml, _ = profiled(scrapes, 2, gpu_timeout_seconds=0.3)
    nvml.devices[1].fault = "hang"
    try:
        wait_for(lambda: set(by_label(exposition(scrapes[0]), "aiinfra_gpu_sm_active_ratio",
                                      "gpu")) == {"0"}, 5, 0.05, "GPU 1 left out")
        started = time.monotonic()
        text = exposition(scrapes[0])
        assert time.monotonic() - started < 0.2
        assert set(by_label(text, "aiinfra_gpu_nvlink_links_up", "gpu")) == {"0"}
        assert collector_success(text) == {"gpu_profiling": 1.0}
    finally:
        nvml.release_hangs.set()


def test_every_profiling_call_runs_on_the_gpus_own_thread(scrapes) -> None:
    """GPM's two round trips (sample, compute) and the rest happen on each GPU's sampler
    thread; with 5 ms per NVML call, a scrape still only copies readings."""
    nvml, _ = profiled(scrapes, 2, "0:mig=2", names=("gpu", "gpu_profiling"))
    nvml.call_latency_seconds = 0.005
    time.sleep(0.3)
    started = time.monotonic()
    exposition(scrapes[0])
    assert time.monotonic() - started < 0.1
    assert nvml.calling_threads == {0: {"sampler-gpu0"}, 1: {"sampler-gpu1"}}


def test_mig_instances_get_their_own_gpm_ratios(scrapes) -> None:
    nvml, _ = profiled(scrapes, 1, "0:mig=2")
    text = wait_for(lambda: (lambda t: t if len(samples(
        t, "aiinfra_gpu_mig_sm_active_ratio")) == 2 else None)(exposition(scrapes[0])), 5, 0.05,
        "both instances sampled")
    by_instance = by_label(text, "aiinfra_gpu_mig_tensor_active_ratio", "gpu_instance_id")
    assert set(by_instance) == {"1", "2"} and all(0 < value < 1 for value in by_instance.values())
    assert set(by_label(text, "aiinfra_gpu_mig_profiling_interval_seconds",
                        "gpu_instance_id")) == {"1", "2"}
    buffers = len(nvml._gpm_samples)  # two per GPU and per instance
    assert buffers == 6
    nvml.devices[0].mig_instances = 1  # an instance destroyed: its samples are freed
    wait_for(lambda: set(by_label(exposition(scrapes[0]), "aiinfra_gpu_mig_sm_active_ratio",
                                  "gpu_instance_id")) == {"1"}, 5, 0.05, "instance 2 gone")
    assert len(nvml._gpm_samples) == 4


def test_gpm_sampler_waits_for_nvml_refresh_and_sets_the_struct_version() -> None:
    """Two reads within 100 ms take one sample; the simulator, like NVML, refuses a
    nvmlGpmMetricsGet_t without NVML_GPM_METRICS_GET_VERSION (so a reading proves it was set)."""
    nvml = SimulatedNVML(1)
    taken = []
    original = nvml.nvmlGpmSampleGet
    nvml.nvmlGpmSampleGet = lambda handle, sample: taken.append(1) or original(handle, sample)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    sampler = GpmSampler(nvml, handle)
    assert sampler.read() is None  # one sample is not a reading
    assert sampler.read() is None and len(taken) == 1  # too soon for a second
    time.sleep(0.11)
    reading = sampler.read()
    assert reading is not None and len(taken) == 2
    assert reading.interval_seconds >= 0.1
    assert set(reading.ratios) >= {2, 3, 5, 10}  # SM, occupancy, any tensor, DRAM
    sampler.close()
    assert nvml._gpm_samples == {}

"""GPU, Xid and per-process collectors against the simulated NVML, including every fault."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from exporter.nvml_sim import FaultSpecError, SimulatedNVML, parse_fault_spec
from tests.exporter.support import build_scrape, by_label, collector_success, exposition, samples
from tests.support.services import wait_for

GPU_NAMES = ["gpu"]


def simulated(count: int, spec: str = "") -> SimulatedNVML:
    nvml = SimulatedNVML(count, clock=lambda: 0.0)
    parse_fault_spec(spec, nvml)
    return nvml


def test_four_gpus_report_every_field() -> None:
    text = exposition(build_scrape(GPU_NAMES, simulated(4)))
    assert samples(text, "aiinfra_gpus")[()] == 4
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {str(i): 1.0 for i in range(4)}
    utilization = by_label(text, "aiinfra_gpu_utilization_ratio", "gpu")
    assert set(utilization) == {"0", "1", "2", "3"}
    assert all(0 <= value <= 1 for value in utilization.values())
    info = samples(text, "aiinfra_gpu_info")
    first = dict(next(labels for labels in info if dict(labels)["gpu"] == "0"))
    assert first["uuid"].startswith("GPU-") and first["pci_bus_id"] == "00000000:18:00.0"
    assert first["driver_version"] == "550.54.15" and first["cuda_version"] == "12.4"
    assert by_label(text, "aiinfra_gpu_memory_total_bytes", "gpu")["0"] == 80 * 1024**3
    assert by_label(text, "aiinfra_gpu_power_limit_watts", "gpu")["0"] == 700.0
    assert by_label(text, "aiinfra_gpu_energy_joules_total", "gpu")["1"] == 2_000_000.0
    clocks = samples(text, "aiinfra_gpu_clock_hertz")
    assert clocks[(("clock", "memory"), ("gpu", "0"), ("uuid", first["uuid"]))] == 2.619e9
    temperatures = {dict(labels)["sensor"] for labels in samples(text,
                                                                  "aiinfra_gpu_temperature_celsius")}
    assert temperatures == {"gpu", "memory"}
    reasons = samples(text, "aiinfra_gpu_clock_event_active")
    power_capped = {dict(labels)["gpu"] for labels, value in reasons.items()
                    if dict(labels)["reason"] == "sw_power_cap" and value == 1}
    assert power_capped == {"1"}
    for name in ("aiinfra_gpu_violation_seconds_total", "aiinfra_gpu_ecc_errors_total",
                 "aiinfra_gpu_remapped_rows", "aiinfra_gpu_pcie_replays_total",
                 "aiinfra_gpu_fan_speed_ratio", "aiinfra_gpu_memory_copy_utilization_ratio",
                 "aiinfra_gpu_encoder_utilization_ratio", "aiinfra_gpu_decoder_utilization_ratio"):
        assert {dict(labels)["gpu"] for labels in samples(text, name)} == {"0", "1", "2", "3"}, name
    for name in ("aiinfra_gpu_utilization_ratio", "aiinfra_gpu_memory_used_bytes"):
        assert all({"gpu", "uuid"} <= set(dict(labels)) for labels in samples(text, name))
    assert collector_success(text) == {"gpu": 1.0}


def test_values_follow_the_device() -> None:
    nvml = SimulatedNVML(1, clock=lambda: 75.0)  # a quarter period: utilisation at its peak
    text = exposition(build_scrape(GPU_NAMES, nvml))
    assert by_label(text, "aiinfra_gpu_utilization_ratio", "gpu")["0"] == 0.9
    assert by_label(text, "aiinfra_gpu_power_watts", "gpu")["0"] == pytest.approx(70 + 90 * 6.3)


def test_unsupported_field_is_skipped_silently(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    nvml = simulated(2, "0:unsupported=nvmlDeviceGetFanSpeed,"
                        "0:unsupported=nvmlDeviceGetFieldValues")
    text = exposition(build_scrape(GPU_NAMES, nvml))
    assert by_label(text, "aiinfra_gpu_fan_speed_ratio", "gpu") == {"1": 0.36}
    memory_sensors = {dict(labels)["gpu"] for labels in samples(
        text, "aiinfra_gpu_temperature_celsius") if dict(labels)["sensor"] == "memory"}
    assert memory_sensors == {"1"}
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 1.0}
    assert collector_success(text) == {"gpu": 1.0}
    assert not [record for record in caplog.records if record.levelno >= logging.INFO]


def test_unsupported_batched_fields_are_skipped_one_by_one() -> None:
    nvml = simulated(2, "0:unsupported=NVML_FI_DEV_MEMORY_TEMP,"
                        "1:unsupported=nvmlDeviceGetFieldValues")
    text = exposition(build_scrape(GPU_NAMES, nvml))
    sensors = {(dict(labels)["gpu"], dict(labels)["sensor"])
               for labels in samples(text, "aiinfra_gpu_temperature_celsius")}
    assert sensors == {("0", "gpu"), ("1", "gpu")}
    for name in ("aiinfra_gpu_energy_joules_total", "aiinfra_gpu_pcie_replays_total"):
        assert set(by_label(text, name, "gpu")) == {"0"}, name
    policies = {dict(labels)["policy"] for labels in samples(
        text, "aiinfra_gpu_violation_seconds_total") if dict(labels)["gpu"] == "0"}
    assert len(policies) == 8
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 1.0}


def test_a_field_entry_reporting_a_lost_gpu_raises() -> None:
    from types import SimpleNamespace

    import pynvml

    from exporter.nvml import field_reading

    lost = SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_GPU_IS_LOST, valueType=0, value=None)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        field_reading(lost)
    unsupported = SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=0,
                                  value=None)
    assert field_reading(unsupported) is None


def test_a_never_supported_function_is_not_asked_again(monkeypatch) -> None:
    nvml = simulated(2, "0:unsupported=nvmlDeviceGetFanSpeed")
    asked = []
    original = nvml.nvmlDeviceGetFanSpeed

    def counting(handle):
        asked.append(handle.index)
        return original(handle)

    monkeypatch.setattr(nvml, "nvmlDeviceGetFanSpeed", counting)
    scrape = build_scrape(GPU_NAMES, nvml, gpu_sample_interval_seconds=0.02)
    wait_for(lambda: asked.count(1) >= 3, 5, 0.02, "three readings of GPU 1")
    assert asked.count(0) == 1
    assert by_label(exposition(scrape), "aiinfra_gpu_fan_speed_ratio", "gpu") == {"1": 0.36}


def test_missing_pynvml_function_counts_as_unsupported(monkeypatch) -> None:
    monkeypatch.delattr(SimulatedNVML, "nvmlDeviceGetRemappedRows")  # as in an older pynvml
    text = exposition(build_scrape(GPU_NAMES, simulated(1)))
    assert "aiinfra_gpu_remapped_rows{" not in text
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0}


@pytest.mark.parametrize("fault", ["lost", "unknown"])
def test_a_failing_gpu_is_down_and_the_others_unaffected(fault: str) -> None:
    text = exposition(build_scrape(GPU_NAMES, simulated(3, f"1:{fault}")))
    assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 0.0, "2": 1.0}
    for name in ("aiinfra_gpu_utilization_ratio", "aiinfra_gpu_memory_used_bytes",
                 "aiinfra_gpu_info", "aiinfra_gpu_power_watts"):
        assert set(by_label(text, name, "gpu")) == {"0", "2"}, name
    assert collector_success(text) == {"gpu": 1.0}


def test_gpu_lost_after_start_keeps_its_uuid_and_recovers(caplog) -> None:
    caplog.set_level(logging.INFO)
    nvml = simulated(2)
    scrape = build_scrape(GPU_NAMES, nvml, gpu_sample_interval_seconds=0.02)
    healthy = samples(exposition(scrape), "aiinfra_gpu_up")
    nvml.devices[0].fault = "lost"
    lost = wait_for(lambda: (lambda up: up if 0.0 in up.values() else None)(
        samples(exposition(scrape), "aiinfra_gpu_up")), 5, 0.02, "GPU 0 reported down")
    time.sleep(0.1)  # several more readings of the lost GPU
    down_lines = [message for message in caplog.messages if "is down" in message]
    assert len(down_lines) == 1 and "GpuIsLost" in down_lines[0]  # once, not per reading
    assert set(lost) == set(healthy)  # same gpu/uuid labels, so the series continues
    assert sorted(lost.values()) == [0.0, 1.0]
    nvml.devices[0].fault = None
    wait_for(lambda: set(samples(exposition(scrape), "aiinfra_gpu_up").values()) == {1.0}, 5,
             0.02, "GPU 0 answering again")


def test_a_hung_gpu_is_down_alone_and_no_thread_piles_up() -> None:
    nvml = simulated(3)
    scrape = build_scrape([*GPU_NAMES, "xid", "loadavg"], nvml, gpu_timeout_seconds=0.3,
                          gpu_sample_interval_seconds=0.02)
    reference = exposition(scrape)
    assert collector_success(reference)["gpu"] == 1.0
    nvml.devices[1].fault = "hang"
    try:
        wait_for(lambda: by_label(exposition(scrape), "aiinfra_gpu_up", "gpu")["1"] == 0.0, 3,
                 0.05, "GPU 1 reported down")
        threads_before = set(threading.enumerate())
        for _ in range(5):
            started = time.monotonic()
            text = exposition(scrape)
            assert time.monotonic() - started < 0.2  # nothing on the scrape path waits for it
            assert collector_success(text) == {"gpu": 1.0, "xid": 1.0, "loadavg": 1.0}
            assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 0.0, "2": 1.0}
            for name in ("aiinfra_gpu_utilization_ratio", "aiinfra_gpu_info",
                         "aiinfra_gpu_energy_joules_total"):
                assert set(by_label(text, name, "gpu")) == {"0", "2"}, name
        assert set(threading.enumerate()) - threads_before == set()  # no new thread per scrape
    finally:
        nvml.devices[1].fault = None
        nvml.release_hangs.set()
    wait_for(lambda: by_label(exposition(scrape), "aiinfra_gpu_up", "gpu")["1"] == 1.0, 5, 0.05,
             "GPU 1 answering again once the hung call returned")


def test_a_gpu_hung_from_the_start_leaves_the_others_and_xid_running() -> None:
    nvml = simulated(2, "1:hang")
    try:
        started = time.monotonic()
        scrape = build_scrape([*GPU_NAMES, "xid"], nvml, gpu_timeout_seconds=0.3)
        assert time.monotonic() - started < 3
        text = exposition(scrape)
        assert collector_success(text) == {"gpu": 1.0, "xid": 1.0}
        assert by_label(text, "aiinfra_gpu_up", "gpu") == {"0": 1.0, "1": 0.0}
        assert samples(text, "aiinfra_gpus")[()] == 2
        nvml.inject_xid(0, 31)
        wait_for(lambda: by_label(exposition(scrape), "aiinfra_gpu_xid_errors_total",
                                  "gpu") == {"0": 1.0}, 5, 0.05, "the Xid of GPU 0 counted")
    finally:
        nvml.release_hangs.set()


def test_no_nvml_library_serves_host_metrics_and_logs_once(caplog) -> None:
    caplog.set_level(logging.INFO)
    nvml = SimulatedNVML(0, library_missing=True)
    scrape = build_scrape(["gpu", "xid", "loadavg"], nvml)
    time.sleep(0.2)  # let the Xid thread meet the missing library too
    texts = [exposition(scrape) for _ in range(4)]
    for text in texts:
        assert collector_success(text) == {"gpu": 0.0, "xid": 0.0, "loadavg": 1.0}
        assert "aiinfra_load1 " in text and "aiinfra_gpu_up" not in text
    nvml_lines = [record.getMessage() for record in caplog.records if "NVML" in record.getMessage()]
    assert len(nvml_lines) == 1, nvml_lines
    assert "LibraryNotFound" in nvml_lines[0]


def test_real_pynvml_without_a_driver_is_reported_not_raised() -> None:
    import pynvml

    from exporter.nvml import NvmlSession, NvmlUnavailable

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        with pytest.raises(NvmlUnavailable, match="NVML unavailable"):
            NvmlSession().ensure_initialized()
    else:  # a machine with a GPU: the session must list its devices instead
        pynvml.nvmlShutdown()
        assert NvmlSession().ensure_initialized()


def test_mig_instances_are_labelled() -> None:
    text = exposition(build_scrape(GPU_NAMES, simulated(2, "0:mig=2")))
    assert by_label(text, "aiinfra_gpu_mig_mode_enabled", "gpu") == {"0": 1.0, "1": 0.0}
    instances = samples(text, "aiinfra_gpu_mig_memory_used_bytes")
    assert {(dict(labels)["gpu"], dict(labels)["gpu_instance_id"],
             dict(labels)["compute_instance_id"]) for labels in instances} == {
        ("0", "1", "0"), ("0", "2", "0")}
    assert all(dict(labels)["mig_uuid"].startswith("MIG-")
               for labels in samples(text, "aiinfra_gpu_mig_info"))


def test_xid_events_are_counted_per_gpu_and_code() -> None:
    nvml = simulated(2)
    scrape = build_scrape(["xid"], nvml)
    assert collector_success(exposition(scrape)) == {"xid": 1.0}  # watching from the start
    assert "aiinfra_gpu_xid_errors_total{" not in exposition(scrape)
    before = time.time()
    for gpu, xid in ((1, 79), (1, 79), (0, 48)):
        nvml.inject_xid(gpu, xid)

    def counts() -> dict:
        return {(dict(labels)["gpu"], dict(labels)["xid"]): value for labels, value in
                samples(exposition(scrape), "aiinfra_gpu_xid_errors_total").items()}

    deadline = time.monotonic() + 5
    while counts() != {("1", "79"): 2.0, ("0", "48"): 1.0} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts() == {("1", "79"): 2.0, ("0", "48"): 1.0}
    text = exposition(scrape)
    last = samples(text, "aiinfra_gpu_xid_last_timestamp_seconds")
    assert all(before <= value <= time.time() for value in last.values())
    assert all(dict(labels)["uuid"].startswith("GPU-") for labels in last)
    assert "# TYPE aiinfra_gpu_xid_errors_total counter" in text
    scrape.stop()


def test_process_memory_is_opt_in_and_labelled() -> None:
    from exporter.registry import COLLECTORS, load_collectors

    load_collectors()
    assert COLLECTORS["gpu_processes"].default_enabled is False
    text = exposition(build_scrape(["gpu_processes"], simulated(2, "1:processes=2")))
    processes = samples(text, "aiinfra_gpu_process_memory_bytes")
    assert {(dict(labels)["gpu"], dict(labels)["pid"]): value
            for labels, value in processes.items()} == {("1", "4010"): 1024**3,
                                                         ("1", "4011"): 2 * 1024**3}
    assert all(dict(labels)["process_name"] for labels in processes)


@pytest.mark.parametrize("spec", ["9:lost", "x:lost", "0:melted", "0:mig=two", "driver:late"])
def test_bad_fault_specs_are_rejected(spec: str) -> None:
    with pytest.raises(FaultSpecError, match=r"expected|not a simulated|driver"):
        parse_fault_spec(spec, SimulatedNVML(2))

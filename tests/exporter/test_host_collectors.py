"""Host collectors read the real machine: values are checked against what the OS reports."""

from __future__ import annotations

import os
import re

import psutil
import pytest

from tests.exporter.support import build_scrape, by_label, collector_success, exposition, samples


def test_cpu_seconds_by_cpu_and_mode() -> None:
    text = exposition(build_scrape(["cpu"]))
    series = samples(text, "aiinfra_cpu_seconds_total")
    cpus = {dict(labels)["cpu"] for labels in series}
    modes = {dict(labels)["mode"] for labels in series}
    assert cpus == {str(index) for index in range(psutil.cpu_count())}
    assert {"user", "system", "idle", "iowait", "steal"} <= modes
    idle = samples(text, "aiinfra_cpu_seconds_total")[(("cpu", "0"), ("mode", "idle"))]
    assert 0 < idle <= psutil.cpu_times(percpu=True)[0].idle


def test_load_averages_match_the_kernel() -> None:
    text = exposition(build_scrape(["loadavg"]))
    for minutes, kernel_value in zip((1, 5, 15), os.getloadavg(), strict=True):
        assert samples(text, f"aiinfra_load{minutes}")[()] == pytest.approx(kernel_value, abs=2)


def test_memory_and_swap() -> None:
    text = exposition(build_scrape(["memory"]))
    total = samples(text, "aiinfra_memory_total_bytes")[()]
    assert total == psutil.virtual_memory().total
    assert 0 < samples(text, "aiinfra_memory_available_bytes")[()] <= total
    assert 0 < samples(text, "aiinfra_memory_used_bytes")[()] < total
    assert samples(text, "aiinfra_memory_swap_total_bytes")[()] == psutil.swap_memory().total


def test_filesystem_reports_root_and_excludes_pseudo_file_systems() -> None:
    text = exposition(build_scrape(["filesystem"]))
    sizes = by_label(text, "aiinfra_filesystem_size_bytes", "mountpoint")
    assert sizes["/"] == pytest.approx(os.statvfs("/").f_blocks * os.statvfs("/").f_frsize)
    fstypes = {dict(labels)["fstype"] for labels in samples(text, "aiinfra_filesystem_size_bytes")}
    assert not fstypes & {"proc", "sysfs", "cgroup2", "devpts", "mqueue"}
    assert "/proc" not in sizes and "/sys" not in sizes


def test_filesystem_exclusions_are_overridable() -> None:
    everything = re.compile(r"^$")
    text = exposition(build_scrape(["filesystem"], fs_types_exclude=everything,
                                   mount_points_exclude=everything))
    assert "/proc" in by_label(text, "aiinfra_filesystem_size_bytes", "mountpoint")
    only_root_excluded = exposition(build_scrape(["filesystem"],
                                                 mount_points_exclude=re.compile(r"^/$")))
    assert "/" not in by_label(only_root_excluded, "aiinfra_filesystem_size_bytes", "mountpoint")


def test_network_counters_per_interface() -> None:
    text = exposition(build_scrape(["netdev"]))
    received = by_label(text, "aiinfra_network_receive_bytes_total", "device")
    assert set(received) == set(psutil.net_io_counters(pernic=True))
    for suffix in ("transmit_bytes", "receive_packets", "transmit_packets", "receive_errs",
                   "transmit_errs", "receive_drop", "transmit_drop"):
        assert set(by_label(text, f"aiinfra_network_{suffix}_total", "device")) == set(received)


def test_diskstats_per_device_and_exclusion_override() -> None:
    counted = set(psutil.disk_io_counters(perdisk=True))
    everything = exposition(build_scrape(["diskstats"], disk_device_exclude=re.compile(r"^$")))
    assert set(by_label(everything, "aiinfra_disk_read_bytes_total", "device")) == counted
    for name in ("written_bytes", "reads_completed", "writes_completed", "io_time_seconds"):
        assert set(by_label(everything, f"aiinfra_disk_{name}_total", "device")) == counted
    default = set(by_label(exposition(build_scrape(["diskstats"])),
                           "aiinfra_disk_read_bytes_total", "device"))
    assert default <= counted
    assert not {name for name in default if re.match(r"^(loop|ram|zram)\d+$", name)}


def test_pressure_reads_psi_totals_in_seconds(tmp_path) -> None:
    (tmp_path / "pressure").mkdir()
    for resource in ("cpu", "memory", "io"):
        (tmp_path / "pressure" / resource).write_text(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n")
    text = exposition(build_scrape(["pressure"], proc_path=str(tmp_path)))
    assert samples(text, "aiinfra_pressure_cpu_waiting_seconds_total")[()] == 2.5
    assert samples(text, "aiinfra_pressure_io_stalled_seconds_total")[()] == 1.0
    assert samples(text, "aiinfra_pressure_memory_stalled_seconds_total")[()] == 1.0
    assert "aiinfra_pressure_cpu_stalled_seconds_total" not in text


def test_pressure_without_psi_fails_only_its_collector(tmp_path) -> None:
    text = exposition(build_scrape(["pressure", "loadavg"], proc_path=str(tmp_path)))
    assert collector_success(text) == {"pressure": 0.0, "loadavg": 1.0}
    assert "aiinfra_load1 " in text


def test_boot_time() -> None:
    text = exposition(build_scrape(["boottime"]))
    assert samples(text, "aiinfra_boot_time_seconds")[()] == pytest.approx(psutil.boot_time())


def test_every_scrape_reports_duration_success_and_build_info() -> None:
    text = exposition(build_scrape(["cpu", "memory"]))
    assert collector_success(text) == {"cpu": 1.0, "memory": 1.0}
    durations = by_label(text, "aiinfra_scrape_collector_duration_seconds", "collector")
    assert set(durations) == {"cpu", "memory"}
    assert all(0 < value < 5 for value in durations.values())
    (labels, value), = samples(text, "aiinfra_build_info").items()
    assert value == 1.0 and dict(labels)["version"]


def test_a_collector_bug_does_not_break_the_scrape(monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise OSError("simulated /proc read failure")

    monkeypatch.setattr(psutil, "net_io_counters", broken)
    text = exposition(build_scrape(["netdev", "memory"]))
    assert collector_success(text) == {"netdev": 0.0, "memory": 1.0}


def test_hung_statvfs_fails_only_the_filesystem_collector(monkeypatch) -> None:
    import threading
    import time

    release = threading.Event()
    real_statvfs = os.statvfs

    def hanging_statvfs(path):
        release.wait(30)
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", hanging_statvfs)
    scrape = build_scrape(["filesystem", "loadavg"], filesystem_timeout_seconds=0.2)
    try:
        started = time.monotonic()
        text = exposition(scrape)
        assert time.monotonic() - started < 1.5
        assert collector_success(text) == {"filesystem": 0.0, "loadavg": 1.0}
    finally:
        release.set()

"""The infiniband collector on a fixture sysfs tree, as node_exporter tests its own: a golden
exposition, bytes from 4-byte words, states and rates parsed, odd files skipped, no adapters."""

from __future__ import annotations

import os
import shutil

from tests.exporter.support import (
    INFINIBAND_SYSFS,
    build_scrape,
    by_label,
    collector_success,
    exposition,
    samples,
)
from tests.exporter.test_exposition import GOLDEN, MASKS, promtool_check

IB_GOLDEN = GOLDEN.with_name("infiniband_exposition.txt")


def infiniband_text(sys_path: object = INFINIBAND_SYSFS) -> str:
    return exposition(build_scrape(["infiniband"], sys_path=str(sys_path)))


def test_exposition_matches_golden_file() -> None:
    text = infiniband_text()
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        IB_GOLDEN.write_text(text)
    assert text == IB_GOLDEN.read_text(), "exposition changed: rerun with UPDATE_GOLDEN=1"
    result = promtool_check(infiniband_text())
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout


def test_ports_read_as_the_kernel_shows_them() -> None:
    text = infiniband_text()
    received = samples(text, "aiinfra_infiniband_port_data_received_bytes_total")
    assert received[(("device", "mlx5_0"), ("port", "1"))] == 4 * 2221223609  # 4-byte words
    assert by_label(text, "aiinfra_infiniband_port_rate_bytes_per_second", "device") == {
        "mlx5_0": 25e9, "mlx5_1": 1.25e9, "mlx5_2": 12.5e9}
    assert by_label(text, "aiinfra_infiniband_port_state_id", "device") == {
        "mlx5_0": 4.0, "mlx5_1": 1.0, "mlx5_2": 4.0}
    assert by_label(text, "aiinfra_infiniband_port_physical_state_id", "device") == {
        "mlx5_0": 5.0, "mlx5_1": 3.0, "mlx5_2": 5.0}
    layers = {dict(labels)["device"]: dict(labels)["link_layer"]
              for labels in samples(text, "aiinfra_infiniband_port_info")}
    assert layers == {"mlx5_0": "InfiniBand", "mlx5_1": "InfiniBand", "mlx5_2": "Ethernet"}
    errors = {dict(labels)["type"]: value for labels, value in
              samples(text, "aiinfra_infiniband_port_errors_total").items()
              if dict(labels)["device"] == "mlx5_0"}
    assert errors["symbol"] == 7 and errors["receive"] == 3 and errors["link_downed"] == 1
    assert len(errors) == 12
    # mlx5_1 answers "N/A (no PMA)" for port_xmit_wait: left out, its other counters kept.
    assert set(by_label(text, "aiinfra_infiniband_port_transmit_wait_total", "device")) == {
        "mlx5_0", "mlx5_2"}
    info = {dict(labels)["device"]: dict(labels) for labels in
            samples(text, "aiinfra_infiniband_info")}
    assert info["mlx5_2"]["firmware_version"] == "22.36.1010"
    assert collector_success(text) == {"infiniband": 1.0}


def test_a_host_without_adapters_serves_empty_families(tmp_path) -> None:
    text = infiniband_text(tmp_path)
    assert "# TYPE aiinfra_infiniband_port_errors_total counter" in text
    assert "aiinfra_infiniband_port_errors_total{" not in text
    assert collector_success(text) == {"infiniband": 1.0}


def test_an_odd_file_loses_its_own_metric_only(tmp_path) -> None:
    tree = tmp_path / "sysfs"
    shutil.copytree(INFINIBAND_SYSFS, tree, symlinks=True)
    port = tree / "class" / "infiniband" / "mlx5_0" / "ports" / "1"
    (port / "state").write_text("garbage\n")
    (port / "rate").write_text("unknown\n")
    (port / "counters" / "symbol_error").write_bytes(b"\xff\xfe")
    (port / "counters" / "port_rcv_errors").unlink()
    text = infiniband_text(tree)
    assert set(by_label(text, "aiinfra_infiniband_port_state_id", "device")) == {"mlx5_1",
                                                                                "mlx5_2"}
    assert set(by_label(text, "aiinfra_infiniband_port_rate_bytes_per_second", "device")) == {
        "mlx5_1", "mlx5_2"}
    types = {dict(labels)["type"] for labels in
             samples(text, "aiinfra_infiniband_port_errors_total")
             if dict(labels)["device"] == "mlx5_0"}
    assert "symbol" not in types and "receive" not in types and "link_downed" in types
    assert by_label(text, "aiinfra_infiniband_port_physical_state_id", "device")["mlx5_0"] == 5
    assert collector_success(text) == {"infiniband": 1.0}

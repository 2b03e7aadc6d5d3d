"""InfiniBand and RoCE ports as the kernel shows them under /sys/class/infiniband.

The layout read (as node_exporter's infiniband collector reads it):

    <device>/{board_id,fw_ver,hca_type}
    <device>/ports/<port>/{state,phys_state,rate,link_layer}      "4: ACTIVE", "5: LinkUp",
                                                                  "200 Gb/sec (4X HDR)"
    <device>/ports/<port>/counters/<counter>                      one integer each

RoCE adapters (link_layer "Ethernet") have the same files. port_rcv_data and port_xmit_data count
4-byte words, as the InfiniBand spec has them; they are returned in bytes. A file that is missing,
unreadable or not a number (a counter the adapter answers with "N/A (no PMA)") is left out, never
an error: one odd port must not hide the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CLASS_DIR = ("class", "infiniband")
WORD_BYTES = 4
# counters/ file -> (metric key, multiplier): traffic in bytes, packets, and the error counters.
TRAFFIC_COUNTERS = {
    "port_rcv_data": ("data_received_bytes", WORD_BYTES),
    "port_xmit_data": ("data_transmitted_bytes", WORD_BYTES),
    "port_rcv_packets": ("packets_received", 1),
    "port_xmit_packets": ("packets_transmitted", 1),
    "port_xmit_wait": ("transmit_wait", 1),
}
ERROR_COUNTERS = {
    "symbol_error": "symbol",
    "port_rcv_errors": "receive",
    "port_rcv_remote_physical_errors": "receive_remote_physical",
    "port_rcv_switch_relay_errors": "receive_switch_relay",
    "port_rcv_constraint_errors": "receive_constraint",
    "port_xmit_constraint_errors": "transmit_constraint",
    "port_xmit_discards": "transmit_discards",
    "local_link_integrity_errors": "local_link_integrity",
    "excessive_buffer_overrun_errors": "excessive_buffer_overrun",
    "link_error_recovery": "link_error_recovery",
    "link_downed": "link_downed",
    "VL15_dropped": "vl15_dropped",
}
_STATE = re.compile(r"^(\d+):\s*(\S.*)$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?) Gb/sec")


@dataclass
class InfinibandPort:
    number: str
    state_id: int | None = None
    state: str = ""
    physical_state_id: int | None = None
    physical_state: str = ""
    rate_bytes_per_second: float | None = None
    link_layer: str = ""
    traffic: dict[str, int] = field(default_factory=dict)  # TRAFFIC_COUNTERS keys
    errors: dict[str, int] = field(default_factory=dict)  # ERROR_COUNTERS values


@dataclass
class InfinibandDevice:
    name: str
    board_id: str = ""
    firmware_version: str = ""
    hca_type: str = ""
    ports: list[InfinibandPort] = field(default_factory=list)


def read_infiniband(sys_path: str | Path) -> list[InfinibandDevice]:
    """Every adapter and port under <sys_path>/class/infiniband; [] when there is none."""
    root = Path(sys_path).joinpath(*CLASS_DIR)
    devices = []
    for device_dir in _children(root):
        device = InfinibandDevice(device_dir.name, _text(device_dir / "board_id"),
                                  _text(device_dir / "fw_ver"), _text(device_dir / "hca_type"))
        device.ports = [_read_port(port_dir) for port_dir in _children(device_dir / "ports")]
        devices.append(device)
    return devices


def _read_port(port_dir: Path) -> InfinibandPort:
    port = InfinibandPort(port_dir.name, link_layer=_text(port_dir / "link_layer"))
    port.state_id, port.state = _numbered(_text(port_dir / "state"))
    port.physical_state_id, port.physical_state = _numbered(_text(port_dir / "phys_state"))
    rate = _RATE.match(_text(port_dir / "rate"))
    port.rate_bytes_per_second = float(rate.group(1)) * 1e9 / 8 if rate else None
    counters = port_dir / "counters"
    for file_name, (key, multiplier) in TRAFFIC_COUNTERS.items():
        value = _integer(counters / file_name)
        if value is not None:
            port.traffic[key] = value * multiplier
    for file_name, error_type in ERROR_COUNTERS.items():
        value = _integer(counters / file_name)
        if value is not None:
            port.errors[error_type] = value
    return port


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(path for path in directory.iterdir() if path.is_dir())
    except OSError:
        return []


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _integer(path: Path) -> int | None:
    text = _text(path)
    return int(text) if text.isdigit() else None


def _numbered(text: str) -> tuple[int | None, str]:
    """'4: ACTIVE' -> (4, 'ACTIVE'); (None, '') if the file is odd or missing."""
    match = _STATE.match(text)
    return (int(match.group(1)), match.group(2)) if match else (None, "")

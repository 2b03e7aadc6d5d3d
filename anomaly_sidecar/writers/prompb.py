"""The Prometheus remote write 1.0 message, encoded by hand.

    WriteRequest { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Label        { string name = 1; string value = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }   // milliseconds

These four messages are all the sidecar sends; writing their protobuf wire format here (about
forty lines) spares a protobuf runtime and generated code as dependencies. Labels are sorted by
name, as the protocol requires. The samples of a series are encoded with numpy at once when
their timestamps all take six varint bytes (every millisecond timestamp from 1971 to 2109),
and one by one otherwise. The body is then snappy-compressed (block format) by the caller.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import numpy as np

_LENGTH_DELIMITED = 2
_FIXED64 = 1
_VARINT = 0
_SIX_BYTE_VARINT = (1 << 35, 1 << 42)
"""Timestamps in [2**35, 2**42) ms take exactly six varint bytes."""
_SAMPLE_RECORD = np.dtype([("header", "u1", 3), ("value", "<f8"), ("timestamp_tag", "u1"),
                           ("timestamp", "u1", 6)])
"""One encoded Sample in its TimeSeries: field 2 tag, length 16, value tag; the double;
timestamp tag; the six varint bytes."""


def _tag(field_number: int, wire_type: int) -> bytes:
    return bytes([field_number << 3 | wire_type])


def varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer (or int64 two's complement)."""
    number &= (1 << 64) - 1
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(field_number: int, payload: bytes) -> bytes:
    return _tag(field_number, _LENGTH_DELIMITED) + varint(len(payload)) + payload


def encode_labels(labels: Mapping[str, str]) -> bytes:
    """The labels part of a TimeSeries (repeated field 1), sorted by name."""
    return b"".join(_field(1, _field(1, name.encode()) + _field(2, value.encode()))
                    for name, value in sorted(labels.items()))


def encode_samples(values: np.ndarray, timestamps_ms: np.ndarray) -> bytes:
    """The samples part of a TimeSeries (repeated field 2)."""
    if len(timestamps_ms) and _SIX_BYTE_VARINT[0] <= timestamps_ms.min() and \
            timestamps_ms.max() < _SIX_BYTE_VARINT[1]:
        records = np.zeros(len(values), dtype=_SAMPLE_RECORD)
        records["header"] = (_tag(2, _LENGTH_DELIMITED)[0], 16, _tag(1, _FIXED64)[0])
        records["value"] = values
        records["timestamp_tag"] = _tag(2, _VARINT)[0]
        stamps = timestamps_ms.astype(np.uint64)
        for byte in range(6):
            records["timestamp"][:, byte] = ((stamps >> np.uint64(7 * byte)) & np.uint64(0x7F)
                                             | np.uint64(0x80 if byte < 5 else 0))
        return records.tobytes()
    return b"".join(
        _field(2, _tag(1, _FIXED64) + struct.pack("<d", value) + _tag(2, _VARINT)
               + varint(int(stamp)))
        for value, stamp in zip(values.tolist(), timestamps_ms.tolist(), strict=True))


def encode_write_request(series: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A WriteRequest of (encoded labels, encoded samples) pairs."""
    return b"".join(_field(1, labels + samples) for labels, samples in series)

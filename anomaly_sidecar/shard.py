"""Which series a replica scores, so that n sidecars share one backend's series.

Each series goes to one shard by a stable hash of its labels (the series key: every label but
__name__, sorted; blake2b, so the same series lands on the same shard on every machine, Python
version and restart) put through Lamping and Veach's jump consistent hash ("A Fast, Minimal
Memory, Consistent Hash Algorithm", 2014). Jump hash is what makes n easy to grow: going from
n to n + 1 shards moves only the 1/(n + 1) of the series that the new shard takes, and every
other series stays on the shard that already holds its state.

A replica reads its queries whole and filters each answer at once (ShardedReader), so it never
keeps state for, scores or publishes a series outside its shard. A query's series must carry
the labels that tell them apart: one shard takes all of a query that returns one series.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from anomaly_sidecar.models.base import SeriesBatch, SeriesKey
from anomaly_sidecar.reader import PromReader

_LABEL_SEPARATOR = b"\xff"
"""Cannot occur in UTF-8 text, so "a=bc" and "ab=c" hash apart (Prometheus uses the same)."""
_JUMP_MULTIPLIER = 2862933555777941757
_UINT64 = (1 << 64) - 1
MAX_CACHED_SERIES = 1_000_000
"""Membership answers remembered (a hash costs about a microsecond; a dict look-up far less)."""


def series_hash(key: SeriesKey) -> int:
    """A 64-bit hash of a series' labels that never changes between runs or machines."""
    data = _LABEL_SEPARATOR.join(part.encode() for pair in key for part in pair)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in [0, buckets) of a 64-bit key (Lamping and Veach's algorithm)."""
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * _JUMP_MULTIPLIER + 1) & _UINT64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_of(key: SeriesKey, count: int) -> int:
    return jump_hash(series_hash(key), count)


class Shard:
    """Shard `index` of `count`; owns(key) says whether this replica scores a series."""

    def __init__(self, index: int = 0, count: int = 1) -> None:
        self.index = index
        self.count = count
        self._owned: dict[SeriesKey, bool] = {}

    @property
    def everything(self) -> bool:
        return self.count == 1

    def owns(self, key: SeriesKey) -> bool:
        owned = self._owned.get(key)
        if owned is None:
            if len(self._owned) >= MAX_CACHED_SERIES:
                self._owned.clear()
            owned = self._owned[key] = shard_of(key, self.count) == self.index
        return owned

    def rows(self, keys: Sequence[SeriesKey]) -> list[int]:
        """The positions of the keys this shard owns."""
        return [row for row, key in enumerate(keys) if self.owns(key)]


class ShardedReader:
    """A PromReader whose range answers hold only the shard's series (filtered right after
    the read, before any state is made for them)."""

    def __init__(self, reader: PromReader, shard: Shard) -> None:
        self.reader = reader
        self.shard = shard

    def check_query(self, expr: str) -> None:
        self.reader.check_query(expr)

    def query_range(self, expr: str, start: float, end: float, step: float) -> SeriesBatch:
        batch = self.reader.query_range(expr, start, end, step)
        if self.shard.everything:
            return batch
        rows = self.shard.rows(batch.keys)
        return SeriesBatch([batch.keys[row] for row in rows], batch.timestamps,
                           batch.values[rows])

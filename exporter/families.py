"""Builds metric families from rows, so a GPU's rows can be dropped as a whole when it fails.

Shared by the GPU collectors: each reading is appended to a device's row list first and only
committed when the device answered all its essential calls, which gives 'series absent, up 0'
for a broken GPU without half-filled families.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

GPU_LABELS = ("gpu", "uuid")


class FamilyBook:
    """Metric families declared once per scrape, filled by name."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, documentation: str, extra_labels: Sequence[str] = ()) -> None:
        self._families[name] = GaugeMetricFamily(name, documentation,
                                                 labels=[*GPU_LABELS, *extra_labels])

    def counter(self, name: str, documentation: str, extra_labels: Sequence[str] = ()) -> None:
        """Declare a counter; `name` is given without the `_total` suffix it is exposed with."""
        self._families[name] = CounterMetricFamily(name, documentation,
                                                   labels=[*GPU_LABELS, *extra_labels])

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self._families[name].add_metric(labels, value)

    def commit(self, rows: list[tuple[str, list[str], float]]) -> None:
        for name, labels, value in rows:
            self._families[name].add_metric(labels, value)

    def names(self) -> set[str]:
        return set(self._families)

    def families(self) -> list[Metric]:
        """Families with at least one sample (empty ones would only add HELP noise)."""
        return [family for family in self._families.values() if family.samples]

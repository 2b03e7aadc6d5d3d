"""Pressure stall information (PSI) from /proc/pressure: time tasks waited for cpu, memory, io."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric

from exporter.registry import Collector, CollectorFailed, register

# resource -> {PSI line kind: our metric suffix}; node_exporter's naming.
RESOURCES = {
    "cpu": {"some": "waiting"},
    "memory": {"some": "waiting", "full": "stalled"},
    "io": {"some": "waiting", "full": "stalled"},
}
_HELP = {
    "waiting": "Seconds in which at least some tasks waited for {}.",
    "stalled": "Seconds in which all non-idle tasks were stalled on {}.",
}


def parse_totals(text: str) -> dict[str, float]:
    """'some avg10=0.00 ... total=123' lines -> {'some': 0.000123} (total is microseconds)."""
    totals = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for field in rest.split():
            key, _, value = field.partition("=")
            if key == "total":
                totals[kind] = int(value) / 1e6
    return totals


@register
class PressureCollector(Collector):
    name = "pressure"
    help_text = "PSI waiting/stalled seconds for cpu, memory, io"

    def collect(self) -> Iterable[Metric]:
        directory = Path(self.options.proc_path) / "pressure"
        families = []
        for resource, kinds in RESOURCES.items():
            try:
                totals = parse_totals((directory / resource).read_text())
            except OSError as error:
                raise CollectorFailed(f"cannot read {directory / resource} (kernel without PSI, "
                                      f"or psi=0?): {error.strerror}") from error
            for kind, suffix in kinds.items():
                if kind in totals:
                    families.append(CounterMetricFamily(
                        f"aiinfra_pressure_{resource}_{suffix}_seconds",
                        _HELP[suffix].format(resource), value=totals[kind]))
        return families

"""A fast renderer of the Prometheus text format (0.0.4) for gauge and counter families.

prometheus-client's renderers escape label names character by character (for UTF-8 names), which
made rendering ~5x more expensive than collecting 8 GPUs. Our collectors only yield gauges,
counters and histograms with legacy names, so this renders those directly; output is
byte-identical to prometheus_client.exposition.generate_latest (a test checks that), and anything
else falls back to it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TYPES = {"gauge": "gauge", "counter": "counter", "histogram": "histogram", "unknown": "untyped"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _float(value: float) -> str:
    text = repr(float(value))
    # Go writes large numbers with an exponent, as does floatToGoString; so do inf and nan.
    if text.find(".") > 6 or text[-1] in "fn":
        return floatToGoString(value)
    return text


def _label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join([f'{key}="{_label_value(labels[key])}"'
                           for key in sorted(labels)]) + "}"


def _render_samples(samples: list[Sample]) -> Iterable[str]:
    for sample in samples:
        if sample.timestamp is not None or sample.exemplar is not None:
            raise _Unsupported
        yield f"{sample.name}{_labels(sample.labels)} {_float(sample.value)}\n"


class _Unsupported(Exception):
    """A family this fast path does not render (histograms, created samples, timestamps...)."""


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in text format 0.0.4."""
    metrics = list(registry.collect())
    parts: list[str] = []
    try:
        for metric in metrics:
            type_name = _TYPES.get(metric.type)
            if type_name is None:
                raise _Unsupported
            name = metric.name + "_total" if metric.type == "counter" else metric.name
            if metric.type == "counter" and any(s.name != name for s in metric.samples):
                raise _Unsupported
            if metric.type == "histogram" and any(  # _created etc. are rendered apart
                    s.name.removeprefix(name) not in _HISTOGRAM_SUFFIXES for s in metric.samples):
                raise _Unsupported
            documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            parts.append(f"# HELP {name} {documentation}\n# TYPE {name} {type_name}\n")
            parts.extend(_render_samples(metric.samples))
    except _Unsupported:
        return generate_latest(_Replay(metrics))  # type: ignore[arg-type]
    return "".join(parts).encode()


class _Replay:
    """Hands already-collected metrics to prometheus-client's renderer without collecting again."""

    def __init__(self, metrics: list) -> None:
        self._metrics = metrics

    def collect(self) -> list:
        return self._metrics

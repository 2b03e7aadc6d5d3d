"""The incident `make demo` replays through its demo target: a labelled anomaly shape.

Generated rather than taken from a labelled corpus (NAB, AIOps 2018): those may not be copied
into this repository. The shape is a familiar one in model serving: a model endpoint's p99
latency sits around 80 ms with a slow wave and some noise, then a bad deploy makes it climb to
about three times that within seconds, where it stays, twice as noisy, until it is rolled back.
The labelled anomaly is that whole episode, from the first slower point to the last one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Incident:
    """A series played one point per step: normal points, except for the labelled anomaly
    (its points are factors on the normal value) once the incident is started."""

    name: str
    description: str
    step_seconds: float
    normal_level: float
    wave_ratio: float
    wave_points: int
    noise_ratio: float
    lead_points: int
    """Normal points played between the start of the incident and its labelled anomaly."""
    anomaly_factors: tuple[float, ...]
    seed: int = 7

    @property
    def anomaly_points(self) -> int:
        return len(self.anomaly_factors)

    def normal(self, index: int) -> float:
        """The value of point `index` without the anomaly (reproducible: seeded per point)."""
        wave = 1.0 + self.wave_ratio * math.sin(2 * math.pi * index / self.wave_points)
        noise = random.Random(self.seed * 1_000_003 + index).gauss(0.0, self.noise_ratio)
        return self.normal_level * wave * math.exp(noise)

    def value(self, index: int, started_at_index: int | None) -> float:
        """Point `index` of the series when the incident started at point started_at_index
        (None: not yet)."""
        if started_at_index is not None:
            offset = index - started_at_index - self.lead_points
            if 0 <= offset < self.anomaly_points:
                return self.normal(index) * self.anomaly_factors[offset]
        return self.normal(index)


def _serving_regression_factors(seed: int = 11) -> tuple[float, ...]:
    """Six points climbing to 3x, eighteen at 3x with twice the noise, six on the way back."""
    noise = random.Random(seed)
    climb = [1.0 + 2.0 * step / 6 for step in range(1, 7)]
    hold = [3.0 * math.exp(noise.gauss(0.0, 0.08)) for _ in range(18)]
    recover = [3.0 - 2.0 * step / 7 for step in range(1, 7)]
    return tuple(climb + hold + recover)


SERVING_REGRESSION = Incident(
    name="serving latency regression",
    description="p99 latency of a model endpoint: ~80 ms, then a bad deploy triples it for "
                "30 s until it is rolled back",
    step_seconds=1.0, normal_level=0.08, wave_ratio=0.1, wave_points=20, noise_ratio=0.04,
    lead_points=10, anomaly_factors=_serving_regression_factors())

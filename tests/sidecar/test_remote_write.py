"""Prometheus remote write of the scores into real receivers: a Prometheus started with
--web.enable-remote-write-receiver and VictoriaMetrics' /api/v1/write.

The outage test drives the writer in process against a real VictoriaMetrics behind a proxy
that refuses every request while the backend is "down". The issue asks for a minute; the
writer's behaviour does not depend on how long the outage lasts (its backoff is capped by
max_backoff, its queue is bounded in samples, not time), so the test takes
$REMOTE_WRITE_OUTAGE_SECONDS (5 s unless set; REMOTE_WRITE_OUTAGE_SECONDS=60 runs the minute)
and sizes the queue from the samples published during it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from anomaly_sidecar.config import RemoteWriteConfig
from anomaly_sidecar.detector import Scored
from anomaly_sidecar.models.base import SeriesBatch
from anomaly_sidecar.writers.base import OUTPUT_NAMES, JobLabels, Publication
from anomaly_sidecar.writers.remote_write import RemoteWriter
from tests.sidecar.helpers import FaultProxy, remote_write, sidecar_process, total
from tests.support.services import (
    RunningService,
    free_port,
    prometheus,
    scrape_config,
    victoria_metrics,
    wait_for,
)

OUTAGE_SECONDS = float(os.environ.get("REMOTE_WRITE_OUTAGE_SECONDS", "5"))
CYCLE_SECONDS = 0.25
SERIES = 10
JOB = JobLabels("s", "z", "q", "zscore", "band")



def zscore_body(window: str = "20s", warm_up: str = "10s") -> str:
    """Queries, models and schedulers: a band z-score on `imported` at a 1s step."""
    return (f"queries:\n  q:\n    expr: imported\n    step: 1s\n"
            f"models:\n  z:\n    type: zscore\n    window: {window}\n    warm_up: {warm_up}\n"
            f"    quiet: 0\n    rearm: 0\n"
            f"schedulers:\n  s:\n    fit_every: 1m\n    fit_window: 10m\n    infer_every: 1s\n")


def source_data(names: list[str], start: float, end: float, seed: int = 0
                ) -> dict[str, list[tuple[float, float]]]:
    """Noise around 50 on the 1-second grid [start, end), rounded so every backend stores
    it exactly. The source is a Prometheus holding the points to come as well: it answers a
    range ending now with the sample at each grid point (VictoriaMetrics may answer the newest
    grid point with the sample before it, and a sample pushed as the clock passes its time may
    arrive after the read)."""
    rng = np.random.default_rng(seed)
    stamps = np.arange(start, end, 1.0)
    return {name: list(zip(stamps.tolist(), (50 + rng.normal(0, 1, len(stamps))).round(3)
                           .tolist(), strict=True)) for name in names}


def sidecar_config(path: Path, source_url: str, port: int, writer: str,
                   template: str = "{name}", body: str | None = None) -> Path:
    body = zscore_body() if body is None else body
    path.write_text(f"reader:\n  url: {source_url}\n  timeout: 5s\n{body}"
                    f"server:\n  listen_address: 127.0.0.1:{port}\n"
                    f"  metric_name_template: '{template}'\n{writer}")
    return path


def remote_write_section(url: str, extra: str = "") -> str:
    return (f"writer:\n  pull: {{}}\n  remote_write:\n    url: {url}/api/v1/write\n"
            f"    max_backoff: 1s\n{extra}")


def raw_samples(base_url: str, selector: str, window: str = "10m",
                at: float | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """series label -> (timestamps, values) of the raw samples of selector[window]."""
    params = {"query": f"{selector}[{window}]"}
    if at is not None:
        params["time"] = f"{at:.3f}"
    response = requests.get(f"{base_url}/api/v1/query", params=params, timeout=10)
    response.raise_for_status()
    found = {}
    for result in response.json()["data"]["result"]:
        pairs = np.array(result["values"], dtype=float)
        found[result["metric"]["series"]] = (pairs[:, 0], pairs[:, 1])
    return found


@contextlib.contextmanager
def receiver(kind: str, workdir: Path, source: RunningService) -> Iterator[RunningService]:
    """The backend the scores are written to: the source Prometheus, or a VictoriaMetrics."""
    if kind == "prometheus":
        yield source
        return
    with victoria_metrics(workdir, ["-search.latencyOffset=0s"]) as service:
        yield service


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_scores_land_in_the_backend_with_the_timestamps_of_their_points(tmp_path, kind):
    now = math.floor(time.time())
    names = ["a", "b", "c"]
    data = source_data(names, now - 120, now + 120)
    with prometheus(tmp_path / "prometheus", scrape_config({})) as source, \
            receiver(kind, tmp_path / "vm", source) as target:
        remote_write(source.url, data)
        port = free_port()
        config = sidecar_config(tmp_path / "sidecar.yml", source.url, port,
                                remote_write_section(target.url))
        with sidecar_process(config, port) as sidecar:
            started = time.time()

            def written() -> dict | None:
                found = raw_samples(target.url, "anomaly_score")
                complete = len(found) == len(names) and all(
                    stamps[-1] >= started + 3 for stamps, _ in found.values())
                return found if complete else None

            scores = wait_for(written, 60, message="scores of every series written")
            outputs = {name: raw_samples(target.url, name, at=scores["a"][0][-1])
                       for name in OUTPUT_NAMES}
            metrics_url = sidecar.metrics_url
            assert total(metrics_url, "anomaly_sidecar_remote_write_samples_sent_total") > 0
            for counter in ("failed", "dropped"):
                assert total(metrics_url,
                             f"anomaly_sidecar_remote_write_samples_{counter}_total") == 0
            labels = requests.get(f"{target.url}/api/v1/series",
                                  params={"match[]": 'anomaly_score{series="a"}'},
                                  timeout=10).json()["data"]
    assert labels == [{"__name__": "anomaly_score", "series": "a", "for": "q",
                       "model_alias": "z", "scheduler_alias": "s"}]
    for name in names:
        source_values = dict(data[name])
        stamps, y = outputs["y"][name]
        assert (np.diff(stamps) == 1).all(), "one sample a second, no gap"
        assert stamps[0] < started - 10, "points scored from history keep their own time"
        np.testing.assert_array_equal(y, [source_values[stamp] for stamp in stamps])
        for output in ("anomaly_score", "yhat", "yhat_lower", "yhat_upper"):
            np.testing.assert_array_equal(outputs[output][name][0], stamps)
        lower, yhat, upper = (outputs[output][name][1]
                              for output in ("yhat_lower", "yhat", "yhat_upper"))
        assert (lower <= yhat).all() and (yhat <= upper).all()


def publication(stamp: float) -> Publication:
    """One inference's block: SERIES series with one point at `stamp`, all scored."""
    keys = [(("series", f"s{index}"),) for index in range(SERIES)]
    values = np.arange(SERIES, dtype=float)[:, None] + stamp % 1000
    scored = Scored(yhat=values - 0.5, yhat_lower=values - 1, yhat_upper=values + 1,
                    anomaly_score=np.full_like(values, 0.5), scored=np.ones_like(values, bool))
    return Publication(JOB, stamp, 600.0, SeriesBatch(keys, np.array([stamp]), values), scored,
                       keys, {})


def stored_samples(url: str, at: float) -> dict[tuple[str, str], set[float]]:
    """(output, series) -> the timestamps VictoriaMetrics holds."""
    requests.get(f"{url}/internal/force_flush", timeout=30)
    found = {}
    for name in OUTPUT_NAMES:
        for series, (stamps, _) in raw_samples(url, f"rw_{name}", "15m", at).items():
            found[(name, series)] = set(stamps.tolist())
    return found


@pytest.mark.parametrize("fits", [True, False], ids=["queue-holds-the-outage", "queue-overflows"])
def test_a_backend_outage_loses_nothing_that_fits_in_the_queue(tmp_path, fits):
    cycles_down = round(OUTAGE_SECONDS / CYCLE_SECONDS)
    per_cycle = SERIES * len(OUTPUT_NAMES)
    produced_down = cycles_down * per_cycle
    queue_size = 2 * produced_down if fits else produced_down // 3
    first = math.floor(time.time()) - 300.0
    stamps = iter(first + np.arange(10_000))
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service, \
            FaultProxy(service.url) as proxy:
        registry = CollectorRegistry()
        writer = RemoteWriter(RemoteWriteConfig(
            url=f"{proxy.url}/api/v1/write", timeout_seconds=5, batch_size=100,
            queue_size=queue_size, min_backoff_seconds=0.05, max_backoff_seconds=0.5),
            "rw_{name}", registry)

        def value(name: str) -> float:
            return registry.get_sample_value(f"anomaly_sidecar_remote_write_{name}") or 0.0

        published = []
        for _ in range(5):
            published.append(next(stamps))
            writer.publish(publication(published[-1]))
        wait_for(writer.flushed, 30, 0.05, "the first cycles sent")
        proxy.mode = "error"
        down = []
        for _ in range(cycles_down):
            down.append(next(stamps))
            writer.publish(publication(down[-1]))
            time.sleep(CYCLE_SECONDS)
        assert value("retries_total") > 0
        assert value("samples_sent_total") == 5 * per_cycle, "nothing got through the outage"
        proxy.mode = "ok"
        wait_for(writer.flushed, 60, 0.1, "the queue drained after the outage")
        after = []
        for _ in range(5):
            after.append(next(stamps))
            writer.publish(publication(after[-1]))
        wait_for(writer.flushed, 30, 0.05, "the last cycles sent")
        writer.close()
        stored = stored_samples(service.url, after[-1] + 1)
    sent, dropped = value("samples_sent_total"), value("samples_dropped_total")
    assert value("samples_failed_total") == 0
    assert sent + dropped == (10 + cycles_down) * per_cycle
    assert dropped == (0 if fits else produced_down - queue_size)
    assert sum(len(times) for times in stored.values()) == sent
    assert len(stored) == per_cycle
    for times in stored.values():
        assert set(published) | set(after) <= times, "before and after the outage: all there"
        kept = sorted(times & set(down))
        # what fitted is the outage's first samples, in order: a prefix of its cycles
        assert kept == down[:len(kept)]
        if fits:
            assert kept == down

"""The reader against real backends: the same test runs against Prometheus and
VictoriaMetrics, which scrape a target whose values the test sets."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import requests

from anomaly_sidecar.config import BasicAuth, ReaderConfig
from anomaly_sidecar.reader import PromReader, QueryRejected, ReaderError, step_grid
from scripts.demo_target import controllable_target
from tests.sidecar.helpers import FaultProxy, scraping_backend
from tests.support.services import victoria_metrics, wait_for

SET_VALUES = {"a": 1.5, "b": 42.0}


@pytest.mark.parametrize("backend", ["prometheus", "victoriametrics"])
def test_reader_reads_back_scraped_values(tmp_path, backend):
    with controllable_target() as target:
        for series, value in SET_VALUES.items():
            target.set(series, value)
        with scraping_backend(backend, tmp_path / backend, {"target": target.address}) as service:
            reader = PromReader(ReaderConfig(url=service.url, timeout_seconds=5))

            def read():
                now = time.time()
                batch = reader.query_range("test_value", now - 20, now, 1.0)
                latest = {dict(key)["series"]: row[np.isfinite(row)][-1:]
                          for key, row in zip(batch.keys, batch.values, strict=True)
                          if np.isfinite(row).sum() >= 3}
                return batch if len(latest) == 2 else None

            batch = wait_for(read, 45, message=f"{backend} to hold 3 scraped points per series")
            assert [dict(key)["series"] for key in batch.keys] == ["a", "b"]
            assert all(("job", "target") in key and ("instance", target.address) in key
                       and all(name != "__name__" for name, _ in key) for key in batch.keys)
            np.testing.assert_array_equal(batch.timestamps % 1.0, 0.0)
            for key, row in zip(batch.keys, batch.values, strict=True):
                finite = row[np.isfinite(row)]
                assert set(finite) == {SET_VALUES[dict(key)["series"]]}

            chunked = PromReader(ReaderConfig(url=service.url, max_points_per_request=4))
            start, end = batch.timestamps[0], batch.timestamps[-1]
            whole = reader.query_range("test_value", start, end, 1.0)
            pieces = chunked.query_range("test_value", start, end, 1.0)
            assert pieces.keys == whole.keys
            np.testing.assert_array_equal(pieces.timestamps, whole.timestamps)
            np.testing.assert_array_equal(pieces.values, whole.values)

            rejected = r"answered 4\d\d: .*(parse error|unexpected token)"
            with pytest.raises(QueryRejected, match=rejected):
                reader.check_query("rate(test_value[1m]")
            empty = reader.query_range('test_value{series="none"}', start, end, 1.0)
            assert empty.values.shape == (0, len(empty.timestamps))


def import_lines(url: str, series: dict[str, list[tuple[float, float]]],
                 metric: str = "imported") -> None:
    """Bulk-load samples into VictoriaMetrics via its JSON-lines import endpoint."""
    lines = [json.dumps({"metric": {"__name__": metric, "series": name},
                         "values": [value for _, value in points],
                         "timestamps": [int(stamp * 1000) for stamp, _ in points]})
             for name, points in series.items()]
    requests.post(f"{url}/api/v1/import", data="\n".join(lines), timeout=30).raise_for_status()
    requests.get(f"{url}/internal/force_flush", timeout=30)


def test_gaps_stay_gaps_and_nothing_is_invented(tmp_path):
    """A one-hour hole in the data reads back as NaN on the 1m grid, not as held values."""
    step = 60.0
    start = math.floor(time.time() / step) * step - 6 * 3600
    stamps = start + step * np.arange(6 * 60)
    hole = (stamps >= start + 2 * 3600) & (stamps < start + 3 * 3600)
    points = [(stamp, float(index)) for index, stamp in enumerate(stamps) if not hole[index]]
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        import_lines(service.url, {"x": points})
        reader = PromReader(ReaderConfig(url=service.url, max_points_per_request=100))
        batch = wait_for(lambda: (lambda b: b if b.keys else None)(
            reader.query_range("imported", stamps[0], stamps[-1], step)), 20,
            message="imported data to be queryable")
    np.testing.assert_array_equal(batch.timestamps, stamps)
    row = batch.values[0]
    gap = (stamps >= start + 2 * 3600 + 10 * step) & (stamps < start + 3 * 3600)
    assert np.isnan(row[gap]).all()
    kept = ~hole
    np.testing.assert_array_equal(row[kept], np.arange(len(stamps))[kept])


def test_a_long_range_of_many_series_is_read_in_requests_of_bounded_size(tmp_path):
    """The first request reads FIRST_CHUNK_POINTS a series and tells how many series there are;
    each later one asks for at most samples_per_request samples in all, and the pieces add up
    to what one request reads."""
    step = 60.0
    start = math.floor(time.time() / step) * step - 300 * step
    stamps = start + step * np.arange(300)
    series = {f"s{index}": [(stamp, index + 0.001 * point) for point, stamp in enumerate(stamps)]
              for index in range(20)}
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        import_lines(service.url, series, metric="many")
        config = ReaderConfig(url=service.url)
        whole = wait_for(lambda: (lambda b: b if len(b.keys) == 20 else None)(
            PromReader(config).query_range("many", stamps[0], stamps[-1], step)), 20,
            message="imported data to be queryable")
        requests_made = []
        bounded = PromReader(config, on_request=lambda seconds, ok: requests_made.append(ok),
                             samples_per_request=400)
        pieces = bounded.query_range("many", stamps[0], stamps[-1], step)
    assert pieces.keys == whole.keys
    np.testing.assert_array_equal(pieces.values, whole.values)
    # 60 points, then 400 // 20 = 20 points a request for the other 240
    assert len(requests_made) == 1 + 240 // 20 and all(requests_made)


def test_retries_5xx_then_succeeds_and_reports_unreachable(tmp_path):
    with victoria_metrics(tmp_path / "vm", ["-search.latencyOffset=0s"]) as service:
        now = time.time()
        import_lines(service.url, {"r": [(now - 120 + i, 1.0) for i in range(100)]})
        outcomes = []
        with FaultProxy(service.url) as proxy:
            proxy.failures_left = 2
            reader = PromReader(ReaderConfig(url=proxy.url, max_retries=3),
                                on_request=lambda seconds, ok: outcomes.append(ok))
            batch = wait_for(lambda: (lambda b: b if b.keys else None)(
                reader.query_range("imported", now - 100, now, 1.0)), 20)
            assert batch.keys == [(("series", "r"),)]
            assert outcomes[:3] == [False, False, True]
    unreachable = PromReader(ReaderConfig(url=proxy.url, max_retries=1, timeout_seconds=1))
    with pytest.raises(ReaderError, match=r"cannot reach .* \(after 2 attempts\)"):
        unreachable.query_range("up", now - 10, now, 1.0)


def test_auth_and_tenant_headers_reach_the_backend(tmp_path):
    """Basic auth is checked by a real VictoriaMetrics (-httpAuth.*); the bearer token file
    and custom headers (X-Scope-OrgID) are seen on the wire by the proxy in front of it."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with victoria_metrics(tmp_path / "vm", ["-httpAuth.username=reader",
                                            "-httpAuth.password=pw"]) as service:
        with pytest.raises(QueryRejected, match="answered 401"):
            PromReader(ReaderConfig(url=service.url)).check_query("up")
        authorised = PromReader(ReaderConfig(url=service.url,
                                             basic_auth=BasicAuth("reader", "pw")))
        authorised.check_query("up")
        with FaultProxy(service.url) as proxy:
            reader = PromReader(ReaderConfig(url=proxy.url, bearer_token_file=str(token_file),
                                             headers={"X-Scope-OrgID": "team-a"}))
            with pytest.raises(QueryRejected, match="answered 401"):
                reader.check_query("up")
            assert proxy.last_headers["Authorization"] == "Bearer s3cret"
            assert proxy.last_headers["X-Scope-OrgID"] == "team-a"


def test_step_grid_is_aligned():
    np.testing.assert_array_equal(step_grid(101.0, 160.0, 15.0), [105.0, 120.0, 135.0, 150.0])
    assert len(step_grid(101.0, 102.0, 15.0)) == 0


def test_the_timeout_covers_the_whole_request_not_each_read(tmp_path):
    """A backend trickling its answer one byte a second never lets a single socket read wait
    for 3 s, yet the reader gives up 3 s after it asked, and counts the failure."""
    with victoria_metrics(tmp_path / "vm") as service, FaultProxy(service.url) as proxy:
        proxy.mode = "trickle"
        failures = []
        reader = PromReader(ReaderConfig(url=proxy.url, timeout_seconds=3.0, max_retries=0),
                            on_request=lambda seconds, ok: failures.append(not ok))
        started = time.monotonic()
        with pytest.raises(ReaderError, match="no whole answer within 3s"):
            reader.query_range("up", time.time() - 600, time.time(), 60)
        assert time.monotonic() - started < 6
        assert failures == [True]

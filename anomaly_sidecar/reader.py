"""Read series from any Prometheus-compatible query API (Prometheus, VictoriaMetrics, ...).

Uses only /api/v1/query_range and /api/v1/query, which both backends implement the same way.
Long ranges are split so that no request asks for more points per series than the backend
allows; 5xx answers and connection errors are retried with exponential backoff, a 4xx answer
(a bad query, a wrong tenant) is reported at once with the backend's own message.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from anomaly_sidecar.config import ReaderConfig
from anomaly_sidecar.models.base import SeriesBatch, SeriesKey

log = logging.getLogger(__name__)

BACKOFF_START_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0


class ReaderError(RuntimeError):
    """A query failed for good (after the retries, or at once for a client error)."""


class QueryRejected(ReaderError):
    """The backend answered 4xx: retrying cannot help (bad PromQL, auth, tenant)."""


def series_key(labels: dict[str, str]) -> SeriesKey:
    """The identity of a result series: its labels without __name__, sorted."""
    return tuple(sorted((name, value) for name, value in labels.items() if name != "__name__"))


def step_grid(start: float, end: float, step: float) -> np.ndarray:
    """Timestamps start, start+step, ... <= end, aligned to multiples of step so that every
    cycle and every backend sees the same grid."""
    first = math.ceil(start / step) * step
    last = math.floor(end / step) * step
    if last < first:
        return np.zeros(0)
    return first + step * np.arange(round((last - first) / step) + 1)


class PromReader:
    """A client for one backend; `on_request(seconds, ok)` lets the caller count requests."""

    def __init__(self, config: ReaderConfig,
                 on_request: Callable[[float, bool], None] | None = None) -> None:
        self.config = config
        self.on_request = on_request
        self.session = requests.Session()
        self.session.headers.update(config.headers)
        if config.basic_auth is not None:
            self.session.auth = (config.basic_auth.username, config.basic_auth.password)
        if config.tls_insecure_skip_verify:
            self.session.verify = False
        elif config.tls_ca_file:
            self.session.verify = config.tls_ca_file

    def _auth_headers(self) -> dict[str, str]:
        """Read the token file per request, so a rotated token is picked up without restart."""
        if not self.config.bearer_token_file:
            return {}
        token = Path(self.config.bearer_token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def _get(self, path: str, params: dict[str, str]) -> dict:
        """GET with retries; returns the `data` member of a success answer."""
        delay = BACKOFF_START_SECONDS
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                response = self.session.get(self.config.url + path, params=params,
                                            headers=self._auth_headers(),
                                            timeout=self.config.timeout_seconds)
            except requests.RequestException as error:
                failure = f"cannot reach {self.config.url}: {error}"
            else:
                if response.status_code == 200:
                    self._count(started, ok=True)
                    return _payload(response)["data"]
                message = _error_message(response)
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    self._count(started, ok=False)
                    raise QueryRejected(f"{self.config.url}{path} answered "
                                        f"{response.status_code}: {message}")
                failure = f"{self.config.url}{path} answered {response.status_code}: {message}"
            self._count(started, ok=False)
            if attempt == attempts:
                raise ReaderError(f"{failure} (after {attempt} attempts)")
            log.warning("query failed (attempt %d of %d), retrying in %.1fs: %s",
                        attempt, attempts, delay, failure)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        raise AssertionError("unreachable")

    def _count(self, started: float, ok: bool) -> None:
        if self.on_request is not None:
            self.on_request(time.monotonic() - started, ok)

    def check_query(self, expr: str) -> None:
        """Let the backend parse expr (an instant query); QueryRejected with its message if bad."""
        self._get("/api/v1/query", {"query": expr})

    def query(self, expr: str, at: float) -> dict[SeriesKey, float]:
        """The instant vector of expr at time `at`: series key -> value (NaN if not finite)."""
        data = self._get("/api/v1/query", {"query": expr, "time": _timestamp(at)})
        if data.get("resultType") != "vector":
            raise ReaderError(f"expected an instant vector, got {data.get('resultType')}")
        values = {}
        for result in data["result"]:
            value = float(result["value"][1])
            key = series_key(result.get("metric", {}))
            values[key] = value if math.isfinite(value) else math.nan
        return values

    def query_range(self, expr: str, start: float, end: float, step: float) -> SeriesBatch:
        """All series of expr on the step grid over [start, end]; NaN where a series has no
        sample at a grid point (gaps stay gaps; NaN/Inf samples become NaN)."""
        grid = step_grid(start, end, step)
        columns: dict[SeriesKey, np.ndarray] = {}
        chunk_points = self.config.max_points_per_request
        for chunk_start in range(0, len(grid), chunk_points):
            chunk = grid[chunk_start:chunk_start + chunk_points]
            data = self._get("/api/v1/query_range", {
                "query": expr, "start": _timestamp(chunk[0]), "end": _timestamp(chunk[-1]),
                "step": _timestamp(step)})
            if data.get("resultType") != "matrix":
                raise ReaderError(f"expected a range vector (matrix), got {data.get('resultType')}")
            for result in data["result"]:
                key = series_key(result.get("metric", {}))
                row = columns.get(key)
                if row is None:
                    row = columns[key] = np.full(len(grid), np.nan)
                _place_samples(row, result.get("values", []), grid, step)
        keys = sorted(columns)
        values = np.array([columns[key] for key in keys]) if keys else np.zeros((0, len(grid)))
        return SeriesBatch(keys, grid, values)


def _place_samples(row: np.ndarray, samples: list, grid: np.ndarray, step: float) -> None:
    """Put [timestamp, "value"] pairs onto the grid; samples off the grid snap to the nearest
    grid point, non-finite values ("NaN", "+Inf") become NaN."""
    if not samples or not len(grid):
        return
    pairs = np.array(samples, dtype=float)
    stamps, numbers = pairs[:, 0], pairs[:, 1]
    index = np.rint((stamps - grid[0]) / step).astype(int)
    inside = (index >= 0) & (index < len(grid))
    row[index[inside]] = np.where(np.isfinite(numbers[inside]), numbers[inside], np.nan)


def _timestamp(seconds: float) -> str:
    return f"{seconds:.3f}"


def _payload(response: requests.Response) -> dict:
    try:
        payload = response.json()
    except ValueError as error:
        raise ReaderError(f"answer is not JSON: {response.text[:200]!r}") from error
    if payload.get("status") != "success":
        raise ReaderError(f"query failed: {payload.get('error', payload)}")
    return payload


def _error_message(response: requests.Response) -> str:
    try:
        payload = response.json()
        return f"{payload.get('errorType', 'error')}: {payload.get('error', response.text)}"
    except ValueError:
        return response.text.strip()[:500] or response.reason

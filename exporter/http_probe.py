"""One HTTP(S) request to a model endpoint, timed end to end and judged against its target.

A fresh connection per probe (as Prometheus's blackbox exporter does), so the time includes
connecting and the TLS handshake: what a new client of the model sees. `timeout` bounds the whole
probe: connecting, sending, and every read of the answer, which is read to its end.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exporter import __version__
from exporter.collector_config import JsonFieldCheck, ProbeTarget

READ_CHUNK_BYTES = 64 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
# The values of aiinfra_probe_failures_total's `reason` label ("error": an unexpected exception,
# a bug; the log has its traceback).
FAILURE_REASONS = ("timeout", "connection", "tls", "http", "status", "json", "header_file",
                   "error")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found; failure is one of FAILURE_REASONS, detail says it for the log."""

    success: bool
    duration_seconds: float
    status_code: int = 0  # 0: no HTTP answer
    failure: str | None = None
    detail: str = ""


class _Failed(Exception):
    def __init__(self, reason: str, detail: str, status_code: int = 0) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status_code = status_code


def probe(target: ProbeTarget) -> ProbeResult:
    """Call the target once; never raises (every problem is a failed result)."""
    started = time.perf_counter()
    deadline = started + target.timeout_seconds
    try:
        status, body = _exchange(target, deadline)
        duration = time.perf_counter() - started
        if status not in target.expected_status:
            raise _Failed("status", f"HTTP {status}, expected "
                                    f"{_describe_statuses(target.expected_status)}", status)
        if target.json_field is not None:
            _check_json(target.json_field, body, status)
    except _Failed as failure:
        return ProbeResult(False, time.perf_counter() - started, failure.status_code,
                           failure.reason, str(failure))
    return ProbeResult(True, duration, status)


def _exchange(target: ProbeTarget, deadline: float) -> tuple[int, bytes]:
    """Send the request and read the whole answer; the body is kept only for a JSON check."""
    headers = {"User-Agent": f"aiinfra-exporter/{__version__}", "Connection": "close",
               **target.headers}
    for header, path in target.header_files.items():
        try:
            headers[header] = path.read_text(encoding="latin-1").strip()
        except OSError as error:
            raise _Failed("header_file", f"cannot read {header} from {path}: {error}") from error
        if "\n" in headers[header] or "\r" in headers[header]:
            raise _Failed("header_file", f"{path} holds more than one line for {header}")
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=target.timeout_seconds,
            context=target.tls_context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                timeout=target.timeout_seconds)
    try:
        connection.request(target.method, path, body=target.body, headers=headers)
        _shorten_timeout(connection, deadline)
        response = connection.getresponse()
        keep = target.json_field is not None
        chunks: list[bytes] = []
        kept = 0
        while True:
            _shorten_timeout(connection, deadline)
            chunk = response.read(READ_CHUNK_BYTES)
            if not chunk:
                break
            if keep and kept < MAX_JSON_BYTES:
                chunks.append(chunk)
                kept += len(chunk)
        return response.status, b"".join(chunks)
    except TimeoutError as error:
        raise _Failed("timeout", f"no complete answer within {target.timeout_seconds:g}s") \
            from error
    except ssl.SSLError as error:
        raise _Failed("tls", f"TLS: {error}") from error
    except http.client.HTTPException as error:
        raise _Failed("http", f"not a valid HTTP answer: {type(error).__name__}: {error}") \
            from error
    except OSError as error:
        raise _Failed("connection", f"cannot connect: {error.strerror or error}") from error
    finally:
        connection.close()


def _shorten_timeout(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Give the next socket operation only what is left of the probe's time."""
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise TimeoutError
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


def _check_json(check: JsonFieldCheck, body: bytes, status: int) -> None:
    if len(body) >= MAX_JSON_BYTES:
        raise _Failed("json", f"answer over {MAX_JSON_BYTES // 2**20} MiB, not checked", status)
    try:
        value: Any = json.loads(body)
    except ValueError as error:
        raise _Failed("json", f"answer is not JSON: {error}", status) from error
    walked: list[str] = []
    for part in check.path:
        walked.append(str(part))
        if isinstance(value, dict) and str(part) in value:
            value = value[str(part)]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            raise _Failed("json", f"no field {'.'.join(walked)} in the answer", status)
    if check.compare_value and not _same_json_value(value, check.equals):
        raise _Failed("json", f"{'.'.join(walked)} is {value!r}, expected {check.equals!r}",
                      status)


def _same_json_value(found: Any, expected: Any) -> bool:
    """Equality that keeps true apart from 1 (Python's True == 1 would not)."""
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    return found == expected


def _describe_statuses(codes: frozenset[int]) -> str:
    if codes == frozenset(range(200, 300)):
        return "2xx"
    return ", ".join(str(code) for code in sorted(codes))

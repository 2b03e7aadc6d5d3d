"""The probe collector against a real local model endpoint whose latency and failures the test
steers: the histogram counts what happened, failures are counted by reason, and a hung endpoint
never slows a scrape down."""

from __future__ import annotations

import ssl
import statistics
import time
from pathlib import Path

import pytest
import requests

from exporter.collector_config import parse_collector_config
from exporter.registry import ScrapeCollector
from scripts.demo_model import DemoModel, serving
from tests.exporter.support import (
    build_scrape,
    collector_success,
    exporter_process,
    exposition,
    samples,
)
from tests.support.services import wait_for

PREDICT_BODY = '{"inputs": [1, 2, 3]}'


@pytest.fixture
def probe_scrapes(tmp_path: Path):
    """A factory of started probe collectors over the given targets; stopped after the test."""
    started: list[ScrapeCollector] = []

    def start(*targets: dict) -> ScrapeCollector:
        config = parse_collector_config(tmp_path / "exporter.yml",
                                        {"probe": {"targets": list(targets)}})
        started.append(build_scrape(["probe"], collector_config=config))
        return started[-1]

    yield start
    for scrape in started:
        scrape.stop()


def predict_target(url: str, name: str = "model", **overrides) -> dict:
    return {"name": name, "url": f"{url}/v1/predict", "method": "POST", "body": PREDICT_BODY,
            "headers": {"Content-Type": "application/json"}, "interval": "300ms",
            "timeout": "300ms", **overrides}


def buckets(text: str, target: str = "model") -> dict[str, float]:
    """le -> cumulative count of aiinfra_probe_duration_seconds for one target."""
    return {dict(labels)["le"]: value
            for labels, value in samples(text, "aiinfra_probe_duration_seconds_bucket").items()
            if dict(labels)["target"] == target}


def value(text: str, name: str, target: str = "model", **labels: str) -> float | None:
    wanted = {"target": target, **labels}
    return next((found for key, found in samples(text, name).items()
                 if all(dict(key).get(k) == v for k, v in wanted.items())), None)


def wait_for_served(model: DemoModel, at_least: int) -> None:
    wait_for(lambda: model.requests_served >= at_least, 20, 0.05,
             message=f"{at_least} requests served")


def test_histogram_counts_each_latency_in_its_bucket_and_failures_by_reason(probe_scrapes) -> None:
    """Instant answers, then 0.6 s ones: each lands in its bucket. The buckets around them leave
    a quarter of a second or more for a loaded machine's scheduling delays."""
    model = DemoModel(latency_seconds=0.0)
    with serving(model) as url:
        scrape = probe_scrapes(predict_target(url, timeout="1500ms", interval="1500ms"))
        wait_for_served(model, 3)
        model.latency_seconds = 0.6  # from the first buckets to the 0.5-1 s one
        wait_for_served(model, model.requests_served + 2)
        model.error_ratio = 1.0
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_success") == 0.0, 20, 0.05,
                 message="a failed probe recorded")
        scrape.stop()
        time.sleep(1.5)  # the probe in flight, if any, records its answer
        text = exposition(scrape)
    fast = sum(1 for latency, status in model.answers if status == 200 and latency < 0.1)
    slow = sum(1 for latency, status in model.answers if status == 200 and latency >= 0.1)
    assert fast >= 3 and slow >= 1
    counts = buckets(text)
    assert counts["0.25"] == fast  # every fast answer, nothing else
    assert counts["0.5"] == fast
    assert counts["1.0"] - counts["0.5"] == slow
    assert counts["+Inf"] == fast + slow == value(text, "aiinfra_probe_duration_seconds_count")
    total = value(text, "aiinfra_probe_duration_seconds_sum")
    assert 0.6 * slow <= total <= 0.25 * fast + 1.0 * slow
    assert value(text, "aiinfra_probe_status_code") == 503
    failed = sum(1 for _latency, status in model.answers if status == 503)
    assert value(text, "aiinfra_probe_failures_total", reason="status") == failed >= 1
    assert time.time() - value(text, "aiinfra_probe_last_timestamp_seconds") < 5
    assert collector_success(text)["probe"] == 1.0


def test_success_flag_follows_the_endpoint_down_and_back(probe_scrapes) -> None:
    model = DemoModel(latency_seconds=0.01)
    with serving(model) as url:
        scrape = probe_scrapes(predict_target(url, latency_threshold="250ms"))
        success = lambda: value(exposition(scrape), "aiinfra_probe_success")  # noqa: E731
        wait_for(lambda: success() == 1.0, 20, 0.05, message="first success")
        model.error_ratio = 1.0
        wait_for(lambda: success() == 0.0, 20, 0.05, message="failure seen")
        model.error_ratio = 0.0
        wait_for(lambda: success() == 1.0, 20, 0.05, message="recovery seen")
        text = exposition(scrape)
    assert value(text, "aiinfra_probe_status_code") == 200
    assert value(text, "aiinfra_probe_latency_threshold_seconds") == 0.25


@pytest.mark.parametrize(("behaviour", "target_overrides", "reason", "status"), [
    ({"latency_seconds": 0.5}, {"timeout": "150ms", "interval": "1s"}, "timeout", 0),
    ({"outputs": {"unexpected": True}}, {"json_field": {"path": "outputs.1"}}, "json", 200),
    ({}, {"json_field": {"path": "outputs.1", "equals": 5}}, "json", 200),
    ({}, {"expected_status": [201]}, "status", 200),
    ({}, {"method": "GET"}, "status", 404),
])
def test_each_failure_is_counted_under_its_reason(probe_scrapes, behaviour, target_overrides,
                                                  reason, status) -> None:
    model = DemoModel(**behaviour)
    with serving(model) as url:
        scrape = probe_scrapes(predict_target(url, **target_overrides))
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_failures_total",
                               reason=reason), 20, 0.05, message=f"a {reason} failure")
        text = exposition(scrape)
    assert value(text, "aiinfra_probe_success") == 0.0
    assert value(text, "aiinfra_probe_status_code") == status
    assert value(text, "aiinfra_probe_duration_seconds_count") == 0  # failures are not latency


def test_json_field_check_passes_on_the_expected_value(probe_scrapes) -> None:
    model = DemoModel()
    with serving(model) as url:
        scrape = probe_scrapes(predict_target(
            url, json_field={"path": "outputs.2", "equals": 6}))
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_success") == 1.0, 20, 0.05,
                 message="a successful JSON check")


def test_refused_connection_and_header_files(tmp_path, probe_scrapes) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer s3cret\n")
    model = DemoModel()
    with serving(model) as url:
        scrape = probe_scrapes(
            predict_target(url, header_files={"Authorization": str(token)}),
            predict_target("http://127.0.0.1:1", name="refused"))
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_failures_total",
                               target="refused", reason="connection"), 20, 0.05,
                 message="a refused connection counted")
        wait_for_served(model, 1)
        token.write_text("Bearer rotated\n")  # read at every probe: rotation needs no restart
        wait_for(lambda: model.last_headers.get("Authorization") == "Bearer rotated", 20, 0.05,
                 message="the rotated token sent")
    assert model.last_headers["Content-Type"] == "application/json"
    assert model.last_headers["User-Agent"].startswith("aiinfra-exporter/")


def test_a_header_file_that_goes_missing_or_bad_fails_the_probe(tmp_path, probe_scrapes) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer s3cret\n")
    with serving(DemoModel()) as url:
        scrape = probe_scrapes(predict_target(url, header_files={"Authorization": str(token)}))
        failures = lambda: value(exposition(scrape), "aiinfra_probe_failures_total",  # noqa: E731
                                 reason="header_file") or 0
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_success") == 1.0, 20, 0.05,
                 message="a first success")
        token.write_text("Bearer one\nX-Injected: two\n")
        wait_for(lambda: failures() >= 1, 20, 0.05, message="two lines refused")
        token.unlink()
        seen = failures()
        wait_for(lambda: failures() > seen, 20, 0.05, message="a missing file refused")
        assert value(exposition(scrape), "aiinfra_probe_success") == 0.0


def test_https_target_verified_with_its_ca_file(tmp_path, probe_scrapes) -> None:
    from tests.exporter.tls import make_certificates

    certificates = make_certificates(tmp_path / "certs")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    with serving(DemoModel(), tls_context=context) as url:
        assert url.startswith("https://")
        scrape = probe_scrapes(
            predict_target(url, name="trusted", tls_ca_file=str(certificates.ca_file)),
            predict_target(url, name="untrusted"))
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_success", target="trusted")
                 == 1.0, 20, 0.05, message="the CA-verified probe succeeding")
        wait_for(lambda: value(exposition(scrape), "aiinfra_probe_failures_total",
                               target="untrusted", reason="tls"), 20, 0.05,
                 message="the unverifiable certificate failing as tls")


def scrape_seconds(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    session.get(url, timeout=10).raise_for_status()
    return time.perf_counter() - started


def test_a_hung_endpoint_never_delays_a_scrape(tmp_path) -> None:
    """One endpoint accepts and never answers (its probe hangs for its 30 s timeout); the other
    keeps answering. The exporter's /metrics answers as fast as the same exporter without the
    probe collector, scraped in turn with it, and the healthy target keeps being probed."""
    healthy, hung = DemoModel(latency_seconds=0.01), DemoModel(hang=True)
    with serving(healthy) as healthy_url, serving(hung) as hung_url:
        config = tmp_path / "exporter.yml"
        config.write_text(
            "probe:\n  targets:\n"
            f"    - {{name: healthy, url: '{healthy_url}/healthz', interval: 200ms}}\n"
            f"    - {{name: hung, url: '{hung_url}/v1/predict', method: POST, "
            f"timeout: 30s, interval: 30s}}\n")
        common = ("--no-collector.gpu", "--no-collector.xid", "--log.level=warning")
        with exporter_process(tmp_path / "plain", *common) as plain, \
                exporter_process(tmp_path / "probing", *common, "--collector.probe",
                                 f"--config.file={config}") as probing:
            wait_for(lambda: hung.last_headers, 20, 0.05, message="the hung probe in flight")
            sessions = {plain.url: requests.Session(), probing.url: requests.Session()}
            timings: dict[str, list[float]] = {plain.url: [], probing.url: []}
            until = time.monotonic() + 2.0  # ten probes of the healthy target at least
            while time.monotonic() < until or len(timings[plain.url]) < 40:
                for url, session in sessions.items():
                    timings[url].append(scrape_seconds(session, f"{url}/metrics"))
            text = requests.get(f"{probing.url}/metrics", timeout=10).text
    assert value(text, "aiinfra_probe_success", target="hung") is None  # never finished
    assert value(text, "aiinfra_probe_duration_seconds_count", target="healthy") >= 5
    assert value(text, "aiinfra_probe_success", target="healthy") == 1.0
    probe_seconds = value(text, "aiinfra_scrape_collector_duration_seconds", target=None,
                          collector="probe")
    assert probe_seconds < 0.05
    assert max(timings[probing.url]) < 1.0
    plain_p50 = statistics.median(timings[plain.url])
    probing_p50 = statistics.median(timings[probing.url])
    assert probing_p50 <= 2 * plain_p50 + 0.01, (probing_p50, plain_p50)

"""The webhook endpoint of a real remediator process: every refusal before an action (token,
content type, length, size, payload), the per-alert skips, dedupe across a restart, TLS with
basic auth from the exporter's web-config format, and a decision that cannot be audited."""

from __future__ import annotations

import base64
import http.client
import json
import shutil

import pytest
import requests

from remediator.audit import AuditLog
from remediator.config import parse_config
from remediator.dispatcher import AuditUnavailable, Dispatcher
from remediator.limits import Reservation, SafetyLimits
from remediator.metrics import RemediatorMetrics
from remediator.payload import parse_notification
from tests.exporter.tls import write_web_config
from tests.support.remediator import (
    RECORD_SCRIPT,
    alert,
    notification,
    read_lines,
    remediator,
    write_script,
    write_token,
)
from tests.support.services import assert_idle_clients_get_no_threads, wait_for

MAX_BODY_BYTES = 4096


def record_config(script, record_file):
    return {
        "server": {"max_body_bytes": MAX_BODY_BYTES},
        "actions": {"record": {"type": "exec", "command": [str(script), "{instance}"],
                               "placeholders": {"instance": "instance"}, "cooldown": "0s",
                               "env": {"RECORD_FILE": str(record_file)}}},
        "rules": [{"name": "record", "matchers": ['alertname="Act"'], "action": "record"}],
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    root = tmp_path_factory.mktemp("webhook")
    script = write_script(root, "record", RECORD_SCRIPT)
    with remediator(root / "r", record_config(script, root / "record.out")) as service:
        service.record_file = root / "record.out"
        yield service


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> int:
    host_port = url.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=10)
    try:
        connection.request("POST", "/alerts", body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


BAD_PAYLOADS = {
    "not JSON": (b"{", "body is not JSON"),
    "version 3": ({**notification([]), "version": "3"}, "version: expected '4', got '3'"),
    "alerts not a list": ({**notification([]), "alerts": {}}, "alerts: must be a list"),
    "label value not a string": (notification([alert({"alertname": "Act", "instance": 3})]),
                                 "alerts[0].labels.instance: must be a string, got int"),
    "bad label name": (notification([alert({"alertname": "Act", "in-stance": "x"})]),
                       "alerts[0].labels: invalid label name 'in-stance'"),
    "pending status": (notification([alert({"alertname": "Act"}, status="pending")]),
                       "alerts[0].status: must be firing or resolved, got 'pending'"),
    "startsAt not RFC 3339": (notification([alert({"alertname": "Act"}, starts_at="yesterday")]),
                              "alerts[0].startsAt: not an RFC 3339 timestamp: 'yesterday'"),
    "fingerprint not hex": (notification([alert({"alertname": "Act"}, fingerprint="../x")]),
                            "alerts[0].fingerprint: not a hex fingerprint"),
    "no alertname": (notification([alert({"instance": "n1"})]),
                     "alerts[0].labels.alertname: required"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_an_invalid_payload_gets_400_naming_the_field_and_runs_nothing(running, case):
    body, message = BAD_PAYLOADS[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(f"{running.url}/alerts", data=raw, timeout=10, headers={
        "Authorization": f"Bearer {running.token}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert message in response.text
    assert running.records("rejected")[-1]["detail"].startswith(message)
    assert read_lines(running.record_file) == []


@pytest.mark.parametrize(("headers", "body", "status", "reason"), [
    ({"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
    ({"Content-Type": "application/json"}, b"x" * (MAX_BODY_BYTES + 1), 413,
     "payload_too_large"),
    ({"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n",
     411, "length_required"),
])
def test_wrong_type_length_or_size_is_refused_before_the_body_is_read(running, headers, body,
                                                                       status, reason):
    headers = {"Authorization": f"Bearer {running.token}", **headers}
    if "Transfer-Encoding" not in headers:
        headers["Content-Length"] = str(len(body))
    assert post_raw(running.url, body, headers) == status
    assert running.records("rejected")[-1]["reason"] == reason


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer wrong", "Basic dXNlcjpwdw==",
                                           "bearer {token}x"])
def test_anything_but_the_exact_bearer_token_gets_401(running, authorization):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=running.token)
    body = json.dumps(notification([alert({"alertname": "Act", "instance": "n1"})])).encode()
    headers["Content-Length"] = str(len(body))
    assert post_raw(running.url, body, headers) == 401
    assert read_lines(running.record_file) == []


def test_alerts_without_a_rule_a_label_or_a_safe_value_are_skipped_with_the_reason(running):
    alerts = [alert({"alertname": "Unknown"}, fingerprint="1111111111111111"),
              alert({"alertname": "Act"}, fingerprint="2222222222222222"),
              alert({"alertname": "Act", "instance": "--delete-everything"},
                    fingerprint="3333333333333333"),
              alert({"alertname": "Act", "instance": "n1"}, status="resolved",
                    fingerprint="4444444444444444")]
    response = running.post(notification(alerts))
    assert response.status_code == 200
    assert response.json()["decisions"] == {"no_matching_rule": 1, "missing_label": 1,
                                            "unsafe_label_value": 1, "resolved": 1}
    reasons = {r["fingerprint"]: r["reason"] for r in running.records("skipped")}
    assert reasons == {"1111111111111111": "no_matching_rule",
                       "2222222222222222": "missing_label",
                       "3333333333333333": "unsafe_label_value",
                       "4444444444444444": "resolved"}
    assert read_lines(running.record_file) == []


def test_landing_page_metrics_and_unknown_paths(running):
    assert "aiinfra remediator" in requests.get(f"{running.url}/", timeout=5).text
    text = running.metrics_text()
    for name in ("aiinfra_remediation_actions_total", "aiinfra_remediation_rejected_total",
                 "aiinfra_remediation_action_duration_seconds_bucket",
                 "aiinfra_remediation_build_info"):
        assert name in text
    assert 'aiinfra_remediation_actions_total{action="record",result="success"} 0.0' in text
    assert running.post({}).status_code == 400  # the route exists: an empty object is refused
    assert requests.post(f"{running.url}/other", timeout=5).status_code == 404


def test_a_firing_that_acted_does_not_act_again_after_a_restart(tmp_path):
    script = write_script(tmp_path, "record", RECORD_SCRIPT)
    config = record_config(script, tmp_path / "record.out")
    body = notification([alert({"alertname": "Act", "instance": "n1"})])
    with remediator(tmp_path / "r", json.loads(json.dumps(config))) as first:
        assert first.post(body).json()["decisions"] == {"started": 1}
    with remediator(tmp_path / "r", json.loads(json.dumps(config))) as second:
        assert second.post(body).json()["decisions"] == {"duplicate": 1}
        assert "1 earlier actions restored" in second.log()
    assert read_lines(tmp_path / "record.out") == [["n1"]]


def test_tls_and_basic_auth_come_from_the_exporters_web_config(tmp_path):
    web_config, certificates = write_web_config(tmp_path, "prometheus", "scrape-secret")
    script = write_script(tmp_path, "record", RECORD_SCRIPT)
    config = record_config(script, tmp_path / "record.out")
    config["server"]["web_config_file"] = str(web_config)
    verify = str(certificates.ca_file)
    basic = ("prometheus", "scrape-secret")
    with remediator(tmp_path / "r", config, scheme="https", verify=verify,
                    ready_auth=basic) as service:
        assert requests.get(f"{service.url}/metrics", verify=verify, timeout=5).status_code \
            == 401
        assert "aiinfra_remediation" in service.metrics_text(auth=basic)
        body = notification([alert({"alertname": "Act", "instance": "n1"})])
        basic_header = "Basic " + base64.b64encode(b"prometheus:scrape-secret").decode()
        assert service.post(body, token=None,
                            headers={"Authorization": basic_header}).status_code == 401
        assert service.post(body).json()["decisions"] == {"started": 1}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{service.url}/", timeout=5)


def test_a_decision_that_cannot_be_audited_starts_nothing_and_frees_its_limits(tmp_path):
    """In process: an audit log whose writes fail (a full disk) makes the webhook answer 500,
    so Alertmanager retries, and leaves no reservation behind."""
    script = write_script(tmp_path, "record", RECORD_SCRIPT)
    write_token(tmp_path / "token")
    raw = record_config(script, tmp_path / "record.out")
    raw["server"]["bearer_token_file"] = "token"
    raw["audit_log"] = "audit.jsonl"
    config = parse_config(raw, "test.yml", tmp_path)

    class FullDisk(AuditLog):
        def write(self, record):
            raise OSError(28, "No space left on device")

    limits = SafetyLimits(config.limits)
    dispatcher = Dispatcher(config, FullDisk(tmp_path / "audit.jsonl"),
                            RemediatorMetrics(config.actions), limits)
    body = json.dumps(notification([alert({"alertname": "Act", "instance": "n1"})])).encode()
    with pytest.raises(AuditUnavailable):
        dispatcher.handle(parse_notification(body))
    dispatcher.close()
    assert read_lines(tmp_path / "record.out") == []
    assert limits.running == 0
    dedupe_key = json.dumps(["record", "0123456789abcdef", "2026-11-27T10:00:00.123000Z"])
    assert isinstance(limits.reserve(dedupe_key, "any", 0.0, runs=True), Reservation)


def test_bounded_concurrency_skips_rather_than_queues(tmp_path):
    config = {
        "limits": {"max_concurrent_actions": 1},
        "actions": {"slow": {"type": "exec", "command": [shutil.which("sleep"), "2"],
                             "cooldown": "0s"}},
        "rules": [{"name": "slow", "matchers": ['alertname="Slow"'], "action": "slow"}],
    }
    alerts = [alert({"alertname": "Slow", "n": str(number)}, fingerprint=f"{number:016x}")
              for number in (1, 2)]
    with remediator(tmp_path / "r", config) as service:
        assert service.post(notification(alerts)).json()["decisions"] == {
            "started": 1, "concurrency_limit": 1}
        (skipped,) = service.records("skipped")
        assert skipped["labels"]["n"] == "2" and skipped["detail"] == "1 actions are running"
        assert 'aiinfra_remediation_actions_running 1.0' in service.metrics_text()


def test_head_is_served_and_a_post_after_it_on_the_same_connection_gets_its_body(running):
    """The exporter's server answers HEAD without a body; the next request on that kept-alive
    connection (a webhook POST) must still get its body."""
    connection = http.client.HTTPConnection(running.url.removeprefix("http://"), timeout=10)
    try:
        connection.request("HEAD", "/metrics")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.getheader("Content-Length")) > 0
        connection.request("POST", "/alerts", body=b"{}", headers={
            "Authorization": f"Bearer {running.token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 400
        assert b"version" in response.read()
    finally:
        connection.close()


def test_open_connections_are_capped_as_the_exporters_are(tmp_path):
    """server.max_connections is the exporter's connection cap: idle clients beyond it get no
    thread, and the webhook answers again once they leave."""
    script = write_script(tmp_path, "record", RECORD_SCRIPT)
    config = record_config(script, tmp_path / "record.out")
    config["server"]["max_connections"] = 4
    with remediator(tmp_path / "r", config) as service:
        assert_idle_clients_get_no_threads(service.process.pid,
                                           service.url.removeprefix("http://"), 40, 4)
        body = notification([alert({"alertname": "Act", "instance": "n1"})])
        response = wait_for(lambda: _post_or_none(service, body), 10, 0.2,
                            "an answer once the idle clients left")
        assert response.json()["decisions"] == {"started": 1}
        assert "connections open (server.max_connections)" in service.log()


def _post_or_none(service, body) -> requests.Response | None:
    try:
        return service.post(body)
    except requests.RequestException:
        return None

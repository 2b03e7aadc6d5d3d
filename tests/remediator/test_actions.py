"""The four action types through a real remediator process: systemd_restart (a stand-in
systemctl that records its argv), http (to a local HTTP server playing a load balancer) and
notify (to the local Slack catcher). exec is covered with Alertmanager in
test_alertmanager_delivery.py."""

from __future__ import annotations

import pytest

from scripts.slack_catcher import slack_catcher
from tests.support.remediator import (
    RECORD_SCRIPT,
    alert,
    notification,
    read_lines,
    remediator,
    write_script,
)
from tests.support.services import wait_for

WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    root = tmp_path_factory.mktemp("actions")
    # systemd_restart passes no environment of its own: the stand-in has its file built in.
    systemctl_record = root / "systemctl.out"
    systemctl = write_script(root, "systemctl", RECORD_SCRIPT.replace(
        'os.environ["RECORD_FILE"]', repr(str(systemctl_record))))
    lb_token = root / "lb_token"
    lb_token.write_text("Bearer lb-secret\n")
    with slack_catcher() as catcher:
        slack_url = root / "slack_url"
        slack_url.write_text(catcher.url("/slack") + "\n")
        config = {
            "actions": {
                "restart": {"type": "systemd_restart", "unit": "inference@{instance}.service",
                            "allowed_units": ["inference@node-a.service",
                                              "inference@node-b.service"],
                            "systemctl": str(systemctl), "placeholders": {"instance": "instance"},
                            "cooldown": "0s"},
                "failover": {"type": "http", "method": "POST",
                             "url": catcher.url("/pools/{pool}/standby") + "?from={instance}",
                             "header_files": {"Authorization": str(lb_token)},
                             "headers": {"X-Source": "aiinfra-remediator"},
                             "body": {"instance": "{instance}", "reason": "{alertname}"},
                             "placeholders": {"pool": "pool", "instance": "instance",
                                              "alertname": "alertname"},
                             "cooldown": "0s"},
                "tell": {"type": "notify", "slack_api_url_file": str(slack_url),
                         "channel": "#aiinfra-oncall", "text": "{alertname} on {instance}",
                         "placeholders": {"alertname": "alertname", "instance": "instance"},
                         "cooldown": "0s"},
            },
            "rules": [{"name": "restart", "matchers": ['alertname="InferenceStuck"'],
                       "action": "restart"},
                      {"name": "failover", "matchers": ['alertname=~"Inference(Down|Slow)"'],
                       "action": "failover"},
                      {"name": "tell", "matchers": ['severity="critical"'], "action": "tell"}],
        }
        with remediator(root / "r", config, extra_args=["--log.level=debug"]) as service:
            service.catcher = catcher
            service.systemctl_record = systemctl_record
            yield service


def test_systemd_restart_runs_systemctl_for_an_allowed_unit_only(running):
    body = notification([
        alert({"alertname": "InferenceStuck", "instance": "node-a"}, fingerprint="a" * 16),
        alert({"alertname": "InferenceStuck", "instance": "node-c"}, fingerprint="c" * 16)])
    assert running.post(body).json()["decisions"] == {"started": 1, "unit_not_allowed": 1}
    (started,) = running.records("started", alertname="InferenceStuck")
    assert started["invocation"]["argv"][1:] == ["--no-ask-password", "restart", "--",
                                                  "inference@node-a.service"]
    (refused,) = running.records("skipped", alertname="InferenceStuck")
    assert refused["reason"] == "unit_not_allowed"
    assert "inference@node-c.service" in refused["detail"]
    (finished,) = wait_for(lambda: running.records("finished", alertname="InferenceStuck"),
                           WAIT_SECONDS)
    assert finished["result"] == "success" and finished["exit_code"] == 0
    assert read_lines(running.systemctl_record) == [
        ["--no-ask-password", "restart", "--", "inference@node-a.service"]]


def test_http_action_sends_the_configured_request_with_labels_made_inert(running):
    hostile = '../admin?x=1&"quoted"'
    body = notification([alert({"alertname": "InferenceDown", "instance": hostile,
                                "pool": "gpu/a"}, fingerprint="d" * 16)])
    assert running.post(body).json()["decisions"] == {"started": 1}
    request = running.catcher.wait_for(lambda r: r.path.startswith("/pools/"), WAIT_SECONDS)
    assert request.path == "/pools/gpu%2Fa/standby?from=..%2Fadmin%3Fx%3D1%26%22quoted%22"
    assert request.body == {"instance": hostile, "reason": "InferenceDown"}
    assert request.headers["Authorization"] == "Bearer lb-secret"
    assert request.headers["X-Source"] == "aiinfra-remediator"
    (finished,) = wait_for(lambda: running.records("finished", alertname="InferenceDown"),
                           WAIT_SECONDS)
    assert finished["result"] == "success" and finished["http_status"] == 200
    (started,) = running.records("started", alertname="InferenceDown")
    assert "lb-secret" not in str(started) and "lb-secret" not in str(finished)


def test_notify_posts_to_slack_through_the_url_file_with_labels_escaped(running):
    body = notification([alert({"alertname": "GpuLost", "severity": "critical",
                                "instance": "<!channel> & <http://x|node-a>"},
                               fingerprint="e" * 16)])
    assert running.post(body).json()["decisions"] == {"started": 1}
    message = running.catcher.wait_for(lambda r: r.path == "/slack", WAIT_SECONDS)
    assert message.body == {"text": "GpuLost on &lt;!channel&gt; &amp; &lt;http://x|node-a&gt;",
                            "channel": "#aiinfra-oncall"}
    (finished,) = wait_for(lambda: running.records("finished", alertname="GpuLost"),
                           WAIT_SECONDS)
    assert finished["result"] == "success"
    assert "/slack" not in str(running.records(alertname="GpuLost"))

"""`make run`'s script: starts the whole stack, every target is up, what it prints works, every
model of the stack config scores within 5 minutes of start, `make demo`'s incident reaches the
local Slack catcher within the time it states with links that answer, Ctrl-C leaves nothing
behind; `make run ARGS=...` passes options, and a busy port is one line naming it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest
import requests
import yaml

from anomaly_sidecar.config import load_config
from anomaly_sidecar.first_score import first_scores
from remediator.report.summary import format_duration
from scripts.demo import ALERT_WITHIN_SECONDS, DEMO_PORTS, INCIDENT_FILE
from scripts.slack_catcher import CaughtRequest, slack_links, slack_titles
from scripts.stack import DEFAULT_PORTS, DEFAULT_SIDECAR_CONFIG
from tests.alerting.shipped import REPO_ROOT
from tests.support.links import broken_links
from tests.support.run_stack import RUN_STACK, start_run_stack, stop_run_stack
from tests.support.services import free_port, wait_for

FIRST_SCORES_WITHIN_SECONDS = 300.0
PIPELINE_SECONDS = 60.0
"""What a first score may take beyond the printed figure, which counts from a series' first
sample: the first scrapes (a rate needs two), the next inference, the scrape of the sidecar,
and a busy machine."""


def printed_urls_broken(output: str) -> dict[str, str]:
    """Every URL the script printed must answer a GET with 200, except the one of a printed
    `curl -X PUT` command, which must take a PUT (of no change: the stack runs on)."""
    broken = {}
    commands = {url.rstrip(",)") for url in re.findall(r"curl -X PUT -d '[^']*' (\S+)", output)}
    for url in commands:
        status = requests.put(url, data="{}", timeout=5).status_code
        if status >= 300:
            broken[url] = f"PUT: HTTP {status}"
    urls = [url.rstrip(",)") for url in re.findall(r"https?://\S+", output)]
    return {**broken, **broken_links(url for url in urls if url not in commands)}


def test_run_stack_starts_everything_and_sigint_stops_every_child(tmp_path):
    slack_file = tmp_path / "slack_webhook_url"
    slack_file.write_text("http://127.0.0.1:9/never-called\n")
    running = start_run_stack(tmp_path, "--slack-webhook-url-file", str(slack_file),
                              "--gpu-simulate", "2", "--gpu-simulate-faults", "1:xid=79")
    try:
        for name, port in running.ports.items():
            assert f"http://127.0.0.1:{port}" in running.output, name
        prometheus = running.url("prometheus")

        def all_up():
            targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()
            health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
            return health if set(health.values()) == {"up"} else None

        health = wait_for(all_up, 60, message="every target up")
        assert set(health) == {"aiinfra_exporter", "anomaly_sidecar", "aiinfra_remediator",
                               "prometheus", "alertmanager", "demo_model"}
        exporter = requests.get(f"{running.url('exporter')}/metrics", timeout=5).text
        assert 'aiinfra_process_group_processes{group="demo-model"} 1.0' in exporter
        wait_for(lambda: 'aiinfra_probe_success{target="demo-model"} 1.0' in requests.get(
            f"{running.url('exporter')}/metrics", timeout=5).text, 30,
            message="the demo model probed successfully")
        wait_for(lambda: re.search(r'aiinfra_gpu_xid_errors_total\{[^}]*gpu="1"[^}]*xid="79"',
                                   requests.get(f"{running.url('exporter')}/metrics",
                                                timeout=5).text), 30,
                 message="the Xid 79 of --gpu-simulate-faults on GPU 1")
        rendered_path = running.run_dir / "alertmanager.yml"
        rendered = yaml.safe_load(rendered_path.read_text())
        assert rendered["global"]["slack_api_url_file"] == str(slack_file)
        assert "never-called" not in rendered_path.read_text()
        token_file = running.run_dir / "secrets" / "remediator_token"
        (oncall,) = [r for r in rendered["receivers"] if r["name"] == "slack-oncall"]
        assert oncall["webhook_configs"][0]["url"] == f"{running.url('remediator')}/alerts"
        assert oncall["webhook_configs"][0]["http_config"]["authorization"][
            "credentials_file"] == str(token_file)
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert printed_urls_broken(running.output) == {}
    finally:
        stop_run_stack(running)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`make demo` as a user runs it (Slack: the demo's local catcher), once for the tests
    below; the last of them stops it."""
    running = start_run_stack(tmp_path_factory.mktemp("demo"), "--demo",
                              names=(*DEFAULT_PORTS, *DEMO_PORTS))
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_demo_incident_reaches_the_local_slack_catcher_within_the_stated_time(demo):
    incident_path = demo.run_dir / INCIDENT_FILE
    wait_for(incident_path.exists, 180, message="the demo starting its incident")
    incident = json.loads(incident_path.read_text())
    assert incident["alert_within_seconds"] == ALERT_WITHIN_SECONDS
    title = f"[FIRING:1] WARNING AnomalyAlarm on 127.0.0.1:{demo.ports['demo-target']}"

    def alarm() -> tuple[float, CaughtRequest] | None:
        return next(((at, request) for at, request in demo.caught()
                     if title in slack_titles(request)), None)

    wait_for(alarm, incident["anomaly_started_at"] + ALERT_WITHIN_SECONDS - time.time(),
             message=f"{title} in the catcher within {ALERT_WITHIN_SECONDS:.0f} s")
    received_at, request = alarm()
    delay = received_at - incident["anomaly_started_at"]
    assert 0 < delay <= ALERT_WITHIN_SECONDS
    assert request.path == "/slack"
    assert request.body["channel"] == "#aiinfra-alerts"
    assert f"{title}  ({delay:.1f} s after the labelled anomaly began)" in demo.output


def test_every_model_of_the_stack_config_scores_within_5_minutes_of_start(demo):
    """Every (model, query) of anomaly_sidecar/examples/stack.yml publishes an anomaly_score
    (simulated GPUs serve the GPU queries), within 5 minutes of starting the script and within
    what it printed for that model."""
    expected = {(first.model_alias, first.query_alias): first.seconds
                for first in first_scores(load_config(DEFAULT_SIDECAR_CONFIG))}
    for model_alias in {model for model, _ in expected}:
        slowest = max(seconds for (model, _), seconds in expected.items() if model == model_alias)
        assert re.search(rf"^  {model_alias} +{re.escape(format_duration(slowest))}  on ",
                         demo.output, re.MULTILINE), model_alias
    wait_for(lambda: set(expected) <= set(demo.poll_first_scores()),
             FIRST_SCORES_WITHIN_SECONDS - (time.monotonic() - demo.started_at),
             interval_seconds=2, message=f"scores of {sorted(expected)}")
    first_seen = demo.first_scores
    late = {key: round(first_seen[key]) for key, seconds in expected.items()
            if first_seen[key] > seconds + PIPELINE_SECONDS}
    assert late == {}
    assert max(first_seen[key] for key in expected) <= FIRST_SCORES_WITHIN_SECONDS


def test_printed_urls_and_every_link_in_the_demos_slack_messages_answer(demo):
    assert printed_urls_broken(demo.output) == {}
    messages = [request for _, request in demo.caught()]
    assert messages
    links = [link for request in messages for link in slack_links(request)]
    # a runbook, the alert's query and the title's link, per message
    assert len(links) >= 3 * len(messages)
    assert broken_links(links) == {}
    # no Grafana runs in this stack: no message may link to one
    assert not [link for link in links if "/d/aiinfra" in link]


def test_ctrl_c_stops_the_demo_and_everything_it_started(demo):
    stop_run_stack(demo)


def test_make_run_passes_args_to_the_script():
    result = subprocess.run(["make", "--no-print-directory", "run", "ARGS=--help"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--demo" in result.stdout and "--gpu-simulate" in result.stdout


def test_a_busy_port_is_one_line_naming_its_component(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {name: free_port() for name in DEFAULT_PORTS} | {"alertmanager": busy}
        result = subprocess.run(
            [sys.executable, str(RUN_STACK), "--run-dir", str(tmp_path / "run"),
             *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"run_stack: port {busy} of the alertmanager is in use on 127.0.0.1 (Address already "
        f"in use): stop what holds it or choose another with --alertmanager-port"]
    assert not (tmp_path / "run").exists()


def test_run_stack_refuses_faults_without_simulated_gpus():
    result = subprocess.run([sys.executable, str(RUN_STACK), "--gpu-simulate-faults", "0:lost"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--gpu-simulate-faults: needs --gpu-simulate N (or --demo)" in result.stderr


def test_run_stack_refuses_a_missing_slack_file(tmp_path):
    result = subprocess.run([sys.executable, str(RUN_STACK), "--slack-webhook-url-file",
                             str(tmp_path / "absent")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"--slack-webhook-url-file: {tmp_path / 'absent'} is not a file" in result.stderr

"""`make run`'s script: starts the whole stack, every target is up, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import psutil
import requests
import yaml

from tests.alerting.shipped import REPO_ROOT
from tests.support.services import free_port, wait_for

RUN_STACK = REPO_ROOT / "scripts" / "run_stack.py"
COMPONENTS = ("exporter", "sidecar", "remediator", "prometheus", "alertmanager", "model")


def test_run_stack_starts_everything_and_sigint_stops_every_child(tmp_path):
    ports = {name: free_port() for name in COMPONENTS}
    slack_file = tmp_path / "slack_webhook_url"
    slack_file.write_text("http://127.0.0.1:9/never-called\n")
    command = [sys.executable, str(RUN_STACK), "--run-dir", str(tmp_path / "run"),
               "--slack-webhook-url-file", str(slack_file), "--gpu-simulate", "2",
               *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]]
    output_path = tmp_path / "run_stack.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in output_path.read_text()
                 or process.poll() is not None, 90, message="run_stack printing its URLs")
        printed = output_path.read_text()
        assert process.poll() is None, printed
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}" in printed, name

        prometheus = f"http://127.0.0.1:{ports['prometheus']}"

        def all_up():
            targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()
            health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
            return health if set(health.values()) == {"up"} else None

        health = wait_for(all_up, 60, message="every target up")
        assert set(health) == {"aiinfra_exporter", "anomaly_sidecar", "aiinfra_remediator",
                               "prometheus", "alertmanager", "demo_model"}
        exporter = requests.get(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=5).text
        assert 'aiinfra_process_group_processes{group="demo-model"} 1.0' in exporter
        wait_for(lambda: 'aiinfra_probe_success{target="demo-model"} 1.0' in requests.get(
            f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=5).text, 30,
            message="the demo model probed successfully")
        rendered = yaml.safe_load((tmp_path / "run" / "alertmanager.yml").read_text())
        assert rendered["global"]["slack_api_url_file"] == str(slack_file)
        assert "never-called" not in (tmp_path / "run" / "alertmanager.yml").read_text()
        token_file = tmp_path / "run" / "secrets" / "remediator_token"
        (oncall,) = [r for r in rendered["receivers"] if r["name"] == "slack-oncall"]
        assert oncall["webhook_configs"][0]["url"] == \
            f"http://127.0.0.1:{ports['remediator']}/alerts"
        assert oncall["webhook_configs"][0]["http_config"]["authorization"][
            "credentials_file"] == str(token_file)
        assert token_file.stat().st_mode & 0o777 == 0o600

        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= len(COMPONENTS)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert output_path.read_text().rstrip().endswith("stopped")
    for port in ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"


def test_run_stack_refuses_a_missing_slack_file(tmp_path):
    result = subprocess.run([sys.executable, str(RUN_STACK), "--slack-webhook-url-file",
                             str(tmp_path / "absent")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"--slack-webhook-url-file: {tmp_path / 'absent'} is not a file" in result.stderr

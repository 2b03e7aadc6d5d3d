"""Start the real `aiinfra-remediator` process on a free port, with a token, an audit log and
small executable scripts as actions, and read back what it did.

The scripts stand for a real remediation: `record` appends its argv (as JSON) to a file, so a
test sees exactly the arguments an action received; `hang` starts a child and sleeps, so a test
sees the whole process group killed at the timeout (the script ignores SIGTERM, so it takes the
SIGKILL that follows).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import yaml

from scripts.stack import console_script
from tests.support.services import free_port, stop_process, wait_http_ok

RECORD_SCRIPT = """\
import json, os, sys
with open(os.environ["RECORD_FILE"], "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
print("recorded", len(sys.argv) - 1, "arguments")
"""
HANG_SCRIPT = """\
import os, signal, subprocess, time
child = subprocess.Popen(["sleep", "300"])
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
with open(os.environ["PIDS_FILE"], "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}\\n")
print("hanging", flush=True)
time.sleep(300)
"""


def write_script(directory: Path, name: str, source: str) -> Path:
    """An executable Python script (shebang: this interpreter)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return path


def write_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


@dataclass
class RunningRemediator:
    url: str
    token: str
    token_file: Path
    audit_log: Path
    config_path: Path
    process: subprocess.Popen
    log_path: Path
    verify: str | bool = True

    def post(self, payload: Any, token: str | None = "", **kwargs: Any) -> requests.Response:
        """POST payload (JSON) to /alerts; token "" means the right one, None means none."""
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token or self.token}")
        return requests.post(f"{self.url}/alerts", json=payload, headers=headers, timeout=10,
                             verify=self.verify, **kwargs)

    def records(self, event: str | None = None, **labels: str) -> list[dict]:
        """Audit records (of one event), optionally only those whose alert has these labels."""
        if not self.audit_log.exists():
            return []
        found = []
        for line in self.audit_log.read_text().splitlines():
            record = json.loads(line)
            if event is not None and record["event"] != event:
                continue
            alert_labels = record.get("labels", {})
            if all(alert_labels.get(name) == value for name, value in labels.items()):
                found.append(record)
        return found

    def metrics_text(self, **kwargs: Any) -> str:
        response = requests.get(f"{self.url}/metrics", timeout=5, verify=self.verify, **kwargs)
        response.raise_for_status()
        return response.text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def remediator(workdir: Path, config: dict, extra_args: Sequence[str] = (),
               scheme: str = "http", verify: str | bool = True, port: int | None = None,
               ready_auth: tuple[str, str] | None = None) -> Iterator[RunningRemediator]:
    """Run aiinfra-remediator with config (server.listen_address, bearer_token_file and
    audit_log are filled in unless given) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    server = config.setdefault("server", {})
    server.setdefault("listen_address", f"127.0.0.1:{port}")
    token_file = Path(server.setdefault("bearer_token_file", str(workdir / "token")))
    token = (token_file.read_text().strip() if token_file.exists()
             else write_token(token_file))
    audit_log = Path(config.setdefault("audit_log", str(workdir / "audit.jsonl")))
    config_path = workdir / "remediator.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = workdir / "remediator.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [console_script("aiinfra-remediator"), "run", "--config", str(config_path),
             *extra_args], stdout=log_file, stderr=subprocess.STDOUT)
    host_port = server["listen_address"]
    running = RunningRemediator(f"{scheme}://{host_port}", token, token_file, audit_log,
                                config_path, process, log_path, verify)
    try:
        try:
            wait_http_ok(f"{running.url}/", 30, process, verify=verify, auth=ready_auth)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"remediator did not start: {error}\n{running.log()}") from error
        yield running
    finally:
        stop_process(process)


def read_lines(path: Path) -> list[list[str]]:
    """The argv lists a `record` script wrote (empty if it never ran)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def notification(alerts: Sequence[dict], status: str = "firing") -> dict:
    """A version-4 webhook body, as Alertmanager 0.25 sends it, for alerts built by alert()."""
    return {"receiver": "test", "status": status, "alerts": list(alerts),
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager.invalid", "version": "4",
            "groupKey": "{}:{}", "truncatedAlerts": 0}


def alert(labels: dict[str, str], status: str = "firing", fingerprint: str = "0123456789abcdef",
          starts_at: str = "2026-11-27T10:00:00.123Z") -> dict:
    return {"status": status, "labels": labels, "annotations": {"summary": "test"},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
            "fingerprint": fingerprint}


def post_to_alertmanager(base_url: str, labels: dict[str, str], starts_at: datetime,
                         resolved: bool = False) -> None:
    """Hand Alertmanager one alert, as Prometheus does (the same startsAt on every re-post)."""
    ends_at = datetime.now(UTC) if resolved else datetime.now(UTC) + timedelta(minutes=10)
    payload = [{"labels": labels, "startsAt": starts_at.isoformat(),
                "endsAt": ends_at.isoformat(), "annotations": {"summary": "test alert"}}]
    requests.post(f"{base_url}/api/v2/alerts", json=payload, timeout=5).raise_for_status()


def pid_gone(pid: int) -> bool:
    """True once pid is gone or a zombie (killed, waiting only to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


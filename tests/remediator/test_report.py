"""aiinfra-report from a real Prometheus (rules with `for: 0s`, evaluated every second), the
shipped Alertmanager routing (critical -> the remediator's webhook, with the bearer token) and
a real remediator, all started here: what fired, when, and what was done, in one HTML page,
rendered by headless Chromium.

A scrape target set by the test plays both the misbehaving service (test_value, which the rules
alert on) and the anomaly sidecar's outputs (y, the band and anomaly_score with the sidecar's
labels), so the anomaly section has a known spike to plot.
"""

from __future__ import annotations

import html
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import start_http_server

from remediator.report.cli import write_report
from remediator.report.sources import Sources
from scripts.slack_catcher import slack_catcher
from scripts.stack import console_script
from scripts.stack_config import alertmanager_config
from tests.support.browser import ink_share, screenshot
from tests.support.remediator import RECORD_SCRIPT, read_lines, remediator, write_script
from tests.support.services import (
    alertmanager,
    free_port,
    prometheus,
    query,
    scrape_config,
    wait_for,
)

WAIT_SECONDS = 30
SIDECAR_LABELS = {"for": "latency", "model_alias": "mad", "scheduler_alias": "main",
                  "series": "latency"}
RULES = """
groups:
  - name: report-test
    rules:
      - alert: InferenceStuck
        expr: test_value{series="inference"} > 5
        for: 0s
        labels: {severity: critical}
        annotations: {summary: "inference stuck"}
      - alert: QueueBacklog
        expr: test_value{series="queue"} > 5
        for: 0s
        labels: {severity: warning}
        annotations: {summary: "queue backlog"}
"""


class IncidentTarget:
    """test_value{series} for the rules, and the sidecar's five outputs for one series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.value = Gauge("test_value", "set by the test", ["series"], registry=self.registry)
        self.outputs = {name: Gauge(name, "sidecar-shaped output", list(SIDECAR_LABELS),
                                    registry=self.registry).labels(**SIDECAR_LABELS)
                        for name in ("y", "yhat", "yhat_lower", "yhat_upper", "anomaly_score")}
        self.value.labels(series="inference").set(0)
        self.value.labels(series="queue").set(0)
        self.forecast(10.0)

    def forecast(self, y: float) -> None:
        """y against a band of 9..11 around 10; the score as the sidecar defines it."""
        for name, value in (("y", y), ("yhat", 10.0), ("yhat_lower", 9.0), ("yhat_upper", 11.0),
                            ("anomaly_score", abs(y - 10.0))):
            self.outputs[name].set(value)


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """Run the incident once: InferenceStuck fires, the remediator acts (Alertmanager re-sends
    it), it resolves; QueueBacklog flaps twice; the anomaly score spikes to 5."""
    root = tmp_path_factory.mktemp("report")
    target = IncidentTarget()
    target_port = free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=target.registry)
    record = write_script(root / "bin", "restart-inference", RECORD_SCRIPT)
    remediator_config = {
        "actions": {"restart-inference": {"type": "exec", "command": [str(record), "{instance}"],
                                          "placeholders": {"instance": "instance"},
                                          "env": {"RECORD_FILE": str(root / "restarts.out")}}},
        "rules": [{"name": "restart-stuck-inference",
                   "matchers": ['alertname="InferenceStuck"', 'severity="critical"'],
                   "action": "restart-inference"}],
    }
    try:
        with remediator(root / "remediator", remediator_config) as actor:
            am_config = alertmanager_config(
                None, f"{actor.url}/alerts", {"group_wait": "1s", "group_interval": "1s",
                                              "repeat_interval": "1s"}, actor.token_file)
            with alertmanager(root / "am", yaml.safe_dump(am_config)) as am:
                alerting = (f"alerting:\n  alertmanagers:\n    - static_configs:\n"
                            f"        - targets: ['127.0.0.1:{am.port}']\n"
                            f"rule_files: ['rules.yml']\n")
                config = scrape_config({"test_target": f"127.0.0.1:{target_port}"},
                                       extra=alerting)
                with prometheus(root / "prometheus", config, {"rules.yml": RULES}) as prom:
                    started = time.time()
                    wait_for(lambda: query(prom.url, "test_value"), WAIT_SECONDS,
                             message="the first scrape")
                    play_incident(target, actor, prom)
                    yield {"root": root, "prometheus": prom, "alertmanager": am,
                           "remediator": actor, "started": started, "target": target,
                           "restarts": root / "restarts.out"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def play_incident(target: IncidentTarget, actor, prom) -> None:
    inference = target.value.labels(series="inference")
    queue = target.value.labels(series="queue")
    inference.set(10)
    queue.set(10)
    target.forecast(15.0)  # score 5: outside the band
    wait_for(lambda: actor.records("finished", alertname="InferenceStuck"), WAIT_SECONDS,
             message="the remediator's action")
    wait_for(lambda: actor.records("skipped", alertname="InferenceStuck"), WAIT_SECONDS,
             message="a re-send of the same firing")
    target.forecast(10.2)
    queue.set(0)
    wait_for(lambda: not query(prom.url, 'ALERTS{alertname="QueueBacklog"}'), WAIT_SECONDS,
             message="QueueBacklog resolved")
    queue.set(10)
    wait_for(lambda: query(prom.url, 'ALERTS{alertname="QueueBacklog"}'), WAIT_SECONDS,
             message="QueueBacklog firing again")
    time.sleep(2)
    queue.set(0)
    inference.set(0)
    wait_for(lambda: [r for r in actor.records("skipped", alertname="InferenceStuck")
                      if r["reason"] == "resolved"], WAIT_SECONDS,
             message="the resolved notification")
    # A report sees an alert to one step (1s): resolved means no sample in the last steps.
    wait_for(lambda: not query(prom.url, "max_over_time(ALERTS[3s])"), WAIT_SECONDS,
             message="everything resolved")


class Tables(HTMLParser):
    """Every <table id=...> of a page as a list of rows of cell texts."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table_id: str) -> list[dict[str, str]]:
        header, *rows = self.tables[table_id]
        return [dict(zip(header, row, strict=True)) for row in rows]


def run_report(incident, out: Path, *extra: str) -> subprocess.CompletedProcess:
    since = f"{int(time.time() - incident['started']) + 5}s"
    return subprocess.run(
        [console_script("aiinfra-report"), "--prometheus-url", incident["prometheus"].url,
         "--alertmanager-url", incident["alertmanager"].url,
         "--audit-log", str(incident["remediator"].audit_log), "--since", since,
         "--out", str(out), *extra], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(incident):
    silence = {"matchers": [{"name": "alertname", "value": "QueueBacklog", "isRegex": False,
                             "isEqual": True}],
               "startsAt": datetime.now(UTC).isoformat(),
               "endsAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
               "createdBy": "report-test", "comment": "queue migration tonight"}
    requests.post(f"{incident['alertmanager'].url}/api/v2/silences", json=silence,
                  timeout=5).raise_for_status()
    out = incident["root"] / "report.html"
    result = run_report(incident, out)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    return {"path": out, "page": page, "tables": Tables(page)}


def test_alert_to_action_to_audit_line_to_report_row(incident, report):
    """End to end: Prometheus fires InferenceStuck, Alertmanager delivers it with the token, the
    remediator runs the action once, writes the audit lines, and the report shows the row."""
    restarts = read_lines(incident["restarts"])
    assert len(restarts) == 1
    instance = restarts[0][0]
    actor = incident["remediator"]
    (started,) = actor.records("started", alertname="InferenceStuck")
    (finished,) = actor.records("finished", alertname="InferenceStuck")
    assert started["invocation"]["argv"][1:] == [instance]
    assert finished["result"] == "success" and finished["run_id"] == started["run_id"]

    rows = report["tables"].rows("remediation")
    acted = [row for row in rows if row["decision"] == "acted"]
    assert len(acted) == 1
    assert acted[0]["alert"] == "InferenceStuck" and acted[0]["instance"] == instance
    assert acted[0]["rule"] == "restart-stuck-inference"
    assert acted[0]["action"] == "restart-inference" and acted[0]["result"] == "success"
    assert "exit 0" in acted[0]["detail"] and "recorded 1 arguments" in acted[0]["detail"]
    skipped = [row["result"] for row in rows if row["decision"] == "skipped"]
    assert "resolved" in skipped
    # Alertmanager's re-sends of the firing that acted: one row with their count.
    (duplicates,) = [result for result in skipped if result.startswith("duplicate")]
    assert re.fullmatch(r"duplicate( x\d+ \(to \d\d:\d\d:\d\d\))?", duplicates)

    (firing,) = [row for row in report["tables"].rows("firings")
                 if row["alert"] == "InferenceStuck"]
    assert firing["resolved"] != "still firing"
    first, *others = firing["remediation"].split("; ")
    assert first == "restart-inference: success"
    assert "skipped (resolved)" in others
    assert [part for part in others if part.startswith("restart-inference: skipped (duplicate)")]


def test_counts_noisiest_and_time_to_resolve(incident, report):
    tables = report["tables"]
    assert {row["severity"]: row["firings"] for row in tables.rows("by-severity")} == \
        {"warning": "2", "critical": "1"}
    assert {row["alertname"]: row["firings"] for row in tables.rows("by-alertname")} == \
        {"QueueBacklog": "2", "InferenceStuck": "1"}
    (instance,) = tables.rows("by-instance")
    assert instance["firings"] == "3"
    noisiest = tables.rows("noisiest")
    assert noisiest[0]["alert"] == "QueueBacklog" and noisiest[0]["firings"] == "2"
    resolve = {row["alert"]: row for row in tables.rows("resolve-times")}
    assert resolve["QueueBacklog"]["resolved"] == "2"
    assert resolve["InferenceStuck"]["resolved"] == "1"
    assert re.fullmatch(r"\d+s|\d+m \d\ds", resolve["InferenceStuck"]["median"])
    assert len(re.findall(r"class='tl-row'", report["page"])) == 2  # one per alert series


def test_alertmanager_silences_and_the_anomaly_plot(report):
    (silence,) = report["tables"].rows("silences")
    assert silence["comment"] == "queue migration tonight"
    assert silence["matchers"] == 'alertname="QueueBacklog"'
    (anomaly,) = report["tables"].rows("anomalies")
    assert "series=latency" in anomaly["series"] and "model_alias=mad" in anomaly["series"]
    assert float(anomaly["highest anomaly_score"]) == pytest.approx(5.0)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", report["page"])
    assert len(images) == 1 and len(images[0]) > 10_000
    assert "<script" not in report["page"] and " href=" not in report["page"]  # self-contained


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    png = screenshot(report["path"].as_uri(), tmp_path / "report.png", 1200, 1600)
    share, colours = ink_share(png)
    assert share > 0.05, f"only {share:.1%} of the page has ink"
    assert colours > 100


def test_an_empty_period_gives_a_short_valid_report(incident, tmp_path):
    out = tmp_path / "empty.html"
    sources = Sources(incident["prometheus"].url, incident["alertmanager"].url,
                      incident["remediator"].audit_log)
    before = incident["started"] - 3600
    assert write_report(sources, before, before + 600, None, out, (None, None, None))
    page = out.read_text()
    assert "No alert fired in this period." in page
    assert "The remediator made no decision in this period." in page
    assert "No series scored above 1." in page
    assert page.rstrip().endswith("</html>") and len(page) < 20_000
    tables = Tables(page)
    assert "firings" not in tables.tables and "remediation" not in tables.tables


def test_unreadable_sources_are_named_in_the_page_and_the_exit_status(tmp_path):
    out = tmp_path / "report.html"
    result = subprocess.run(
        [console_script("aiinfra-report"), "--prometheus-url", f"http://127.0.0.1:{free_port()}",
         "--alertmanager-url", f"http://127.0.0.1:{free_port()}",
         "--audit-log", str(tmp_path / "absent.jsonl"), "--since", "1h", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    page = out.read_text()
    errors = page.split("id='source-errors'")[1].split("</div>")[0]
    for source in ("Prometheus", "Alertmanager", "Audit log"):
        assert f"<b>{source}</b>" in errors


def test_every_period_writes_a_report_keeps_the_last_n_and_posts_to_slack(incident, tmp_path):
    with slack_catcher() as catcher:
        url_file = tmp_path / "slack_url"
        url_file.write_text(catcher.url("/slack") + "\n")
        out_dir = tmp_path / "reports"
        process = subprocess.Popen(
            [console_script("aiinfra-report"), "--prometheus-url", incident["prometheus"].url,
             "--alertmanager-url", "", "--audit-log", str(incident["remediator"].audit_log),
             "--every", "2s", "--out-dir", str(out_dir), "--keep", "2",
             "--slack-api-url-file", str(url_file), "--slack-channel", "#aiinfra-reports",
             "--link-base-url", "https://reports.example/aiinfra/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(catcher.requests) >= 3, 30, message="three periodic reports")
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        reports = sorted(out_dir.glob("aiinfra-report-*.html"))
        assert len(reports) == 2
        stamps = [datetime.strptime(path.stem.split("-")[-1], "%Y%m%dT%H%M%SZ")
                  for path in reports]
        assert (stamps[1] - stamps[0]).total_seconds() % 2 == 0
        message = catcher.requests[-1].body
        assert message["channel"] == "#aiinfra-reports"
        assert message["text"].startswith("*aiinfra alert report* ")
        assert "<https://reports.example/aiinfra/aiinfra-report-" in message["text"]
        assert "|Full report>" in message["text"]


def test_labels_and_output_are_escaped_in_the_page(tmp_path):
    audit = tmp_path / "audit.jsonl"
    hostile = "<script>alert(1)</script>"
    audit.write_text(
        '{"time":"2026-11-27T10:00:00.000Z","event":"skipped","alertname":"X",'
        f'"labels":{{"alertname":"X","instance":"{hostile}"}},"reason":"cooldown",'
        f'"detail":"{hostile}"}}\n')
    out = tmp_path / "report.html"
    sources = Sources(f"http://127.0.0.1:{free_port()}", None, audit)
    start = datetime(2026, 11, 27, 9, tzinfo=UTC).timestamp()
    write_report(sources, start, start + 7200, None, out, (None, None, None))
    page = out.read_text()
    assert hostile not in page
    assert html.escape(hostile) in page

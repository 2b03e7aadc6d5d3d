"""The report as one self-contained HTML page: inline CSS, plots as embedded PNGs, no script and
no external resource, so it can be mailed, archived or opened offline. Every value from a source
(labels, annotations, action output) is HTML-escaped."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from html import escape

from anomaly_sidecar.band_plot import draw_band_plot
from remediator.report.episodes import Episode
from remediator.report.sources import AnomalySeries, ReportData
from remediator.report.summary import (
    RemediationRow,
    collapse_repeats,
    count_by,
    firing_seconds,
    format_duration,
    format_period,
    format_time,
    noisiest,
    outcome_summary,
    remediation_rows,
    resolve_times,
    rows_for,
    totals,
)

TIMELINE_ROWS = 25
SEVERITY_COLOURS = {"critical": "#c62828", "warning": "#ef8f00", "info": "#1e88e5"}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2329;
  max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
  padding-bottom:4px}
.period{color:#555;margin:0 0 16px}.muted{color:#777}.empty{color:#555;font-style:italic}
.errors{background:#fdecea;border:1px solid #e57373;padding:8px 12px;border-radius:4px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;
  padding:10px 16px;min-width:120px}.card b{display:block;font-size:24px}
.columns{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.out{font-family:ui-monospace,monospace;font-size:12px;max-width:520px;white-space:pre-wrap;
  word-break:break-word}
.sev-critical{color:#c62828;font-weight:600}.sev-warning{color:#b26a00;font-weight:600}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
.timeline{font-size:12px}.tl-row{display:flex;align-items:center;height:18px}
.tl-label{width:340px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding-right:8px}
.tl-track{position:relative;flex:1;height:12px;background:#f3f3f3}
.tl-bar{position:absolute;top:0;height:12px;min-width:2px;border-radius:2px}
.tl-axis{display:flex;justify-content:space-between;margin-left:340px;color:#777}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0 14px}
"""


def render_report(data: ReportData) -> str:
    rows = remediation_rows(data.audit)
    body = "".join([
        "<h1>aiinfra alert report</h1>",
        f"<p class='period'>{escape(format_period(data.start, data.end))} &middot; generated "
        f"{escape(format_time(data.generated_at))} UTC &middot; step "
        f"{escape(format_duration(data.step))}</p>",
        _errors(data),
        _summary(data, rows),
        _timeline(data),
        _noisiest(data),
        _firings(data, rows),
        _resolve_times(data),
        _remediation(rows),
        _alertmanager(data),
        _anomalies(data),
        _sources(data),
    ])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>aiinfra alert report {escape(format_period(data.start, data.end))}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """rows hold cells already rendered as HTML (`<td ...>...</td>`)."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(text: object, css: str = "") -> str:
    css_attribute = f" class='{css}'" if css else ""
    return f"<td{css_attribute}>{escape(str(text))}</td>"


def _severity_cell(severity: str) -> str:
    return _cell(severity or "(none)", f"sev-{severity}" if severity in SEVERITY_COLOURS else "")


def _labels_text(labels: dict[str, str], skip: Iterable[str] = ("alertname",)) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items())
                     if name not in skip)


def _errors(data: ReportData) -> str:
    if not data.errors:
        return ""
    items = "".join(f"<li><b>{escape(name)}</b>: {escape(message)}</li>"
                    for name, message in data.errors.items())
    return (f"<div class='errors' id='source-errors'>Some sources could not be read; their "
            f"sections are incomplete:<ul>{items}</ul></div>")


def _summary(data: ReportData, rows: list[RemediationRow]) -> str:
    acted = sum(row.decision == "acted" for row in rows)
    still = sum(episode.resolved_at is None for episode in data.episodes)
    cards = [("firings", len(data.episodes)), ("still firing", still),
             ("alert names", len({episode.alertname for episode in data.episodes})),
             ("remediation actions", acted),
             ("dry runs", sum(row.decision == "dry run" for row in rows)),
             ("silences", len(data.silences))]
    html = "<h2>Summary</h2><div class='cards' id='cards'>" + "".join(
        f"<div class='card'><b>{count}</b>{escape(name)}</div>" for name, count in cards) + \
        "</div>"
    if not data.episodes:
        return html + "<p class='empty' id='no-alerts'>No alert fired in this period.</p>"
    tables = []
    for label, title in (("severity", "By severity"), ("alertname", "By alert"),
                         ("instance", "By instance")):
        counts = count_by(data.episodes, label)
        cell = _severity_cell if label == "severity" else (lambda text: _cell(text or "(none)"))
        tables.append(f"<div><h3>{title}</h3>" + _table(
            f"by-{label}", [label, "firings"],
            ([cell(value), _cell(count, "n")] for value, count in counts)) + "</div>")
    return html + "<div class='columns'>" + "".join(tables) + "</div>"


def _timeline(data: ReportData) -> str:
    if not data.episodes:
        return ""
    by_identity: dict[tuple, list[Episode]] = {}
    for episode in data.episodes:
        by_identity.setdefault(episode.identity, []).append(episode)
    ranked = sorted(by_identity.values(),
                    key=lambda group: -sum(firing_seconds(e, data) for e in group))
    period = max(data.end - data.start, 1.0)
    lines = []
    for group in ranked[:TIMELINE_ROWS]:
        first = group[0]
        bars = []
        for episode in group:
            left = max(0.0, (episode.started_at - data.start) / period * 100)
            right = ((episode.resolved_at if episode.resolved_at is not None else data.end)
                     - data.start) / period * 100
            colour = SEVERITY_COLOURS.get(episode.severity, "#757575")
            title = (f"{episode.alertname} {format_time(episode.started_at)} to "
                     f"{format_time(episode.resolved_at) if episode.resolved_at else 'end'}")
            bars.append(f"<div class='tl-bar' title='{escape(title, quote=True)}' style='left:"
                        f"{left:.3f}%;width:{max(right - left, 0.2):.3f}%;background:{colour}'>"
                        f"</div>")
        label = f"{first.alertname} {first.instance}".strip()
        lines.append(f"<div class='tl-row'><div class='tl-label' title='"
                     f"{escape(_labels_text(first.labels), quote=True)}'>{escape(label)}</div>"
                     f"<div class='tl-track'>{''.join(bars)}</div></div>")
    style = "%H:%M:%S" if period <= 3600 else "%m-%d %H:%M"
    ticks = "".join(f"<span>{escape(format_time(data.start + period * share, style))}</span>"
                    for share in (0, 0.25, 0.5, 0.75, 1))
    more = (f"<p class='muted'>{len(ranked) - TIMELINE_ROWS} more alert series not shown.</p>"
            if len(ranked) > TIMELINE_ROWS else "")
    return (f"<h2>Timeline</h2><div class='timeline' id='timeline'>{''.join(lines)}"
            f"<div class='tl-axis'>{ticks}</div></div>{more}")


def _noisiest(data: ReportData) -> str:
    if not data.episodes:
        return ""
    rows = ([_cell(noise.labels.get("alertname", "")), _cell(_labels_text(noise.labels)),
             _cell(noise.firings, "n"), _cell(format_duration(noise.firing_seconds), "n")]
            for noise in noisiest(data))
    return "<h2>Noisiest alerts</h2>" + _table("noisiest", ["alert", "labels", "firings",
                                                           "time firing"], rows)


def _firings(data: ReportData, rows: list[RemediationRow]) -> str:
    if not data.episodes:
        return ""
    table_rows = []
    for episode in data.episodes:
        resolved = (format_time(episode.resolved_at) if episode.resolved_at is not None
                    else "still firing")
        table_rows.append([
            _cell(episode.alertname), _severity_cell(episode.severity), _cell(episode.instance),
            _cell(format_time(episode.started_at)), _cell(resolved),
            _cell(format_duration(episode.time_to_resolve), "n"),
            _cell(outcome_summary(rows_for(episode, rows, data.step)) or "none")])
    return ("<h2>Firings and time to resolve</h2>" + _table(
        "firings", ["alert", "severity", "instance", "active since", "resolved",
                    "time to resolve", "remediation"], table_rows))


def _resolve_times(data: ReportData) -> str:
    if not data.episodes:
        return ""
    rows = ([_cell(row.alertname), _cell(row.firings, "n"), _cell(row.resolved, "n"),
             _cell(format_duration(row.median_seconds), "n"),
             _cell(format_duration(row.max_seconds), "n")]
            for row in resolve_times(data.episodes))
    return "<h3>Time to resolve by alert</h3>" + _table(
        "resolve-times", ["alert", "firings", "resolved", "median", "longest"], rows)


def _remediation(rows: list[RemediationRow]) -> str:
    if not rows:
        return ("<h2>Remediation</h2><p class='empty' id='no-remediation'>The remediator "
                "made no decision in this period.</p>")
    counts = totals(rows)
    summary = ", ".join(f"{count} {decision} ({outcome})"
                        for (decision, outcome), count in counts.most_common())
    table_rows = []
    for row in collapse_repeats(rows):
        css = ("ok" if row.outcome == "success" else
               "bad" if row.outcome in ("failure", "timeout", "error") else "")
        outcome = row.outcome
        if row.count > 1:
            outcome += f" x{row.count} (to {format_time(row.last_time, '%H:%M:%S')})"
        table_rows.append([
            _cell(format_time(row.time)), _cell(row.alertname), _cell(row.instance),
            _cell(row.rule), _cell(row.action), _cell(row.decision), _cell(outcome, css),
            _cell("" if row.duration_seconds is None else f"{row.duration_seconds:.2f} s", "n"),
            _cell(row.detail, "out")])
    return (f"<h2>Remediation</h2><p id='remediation-totals'>{escape(summary)}</p>" + _table(
        "remediation", ["time", "alert", "instance", "rule", "action", "decision", "result",
                        "duration", "detail"], table_rows))


def _alertmanager(data: ReportData) -> str:
    if data.sources.alertmanager_url is None:
        return ""
    current = ([_cell(alert.get("labels", {}).get("alertname", "")),
                _severity_cell(alert.get("labels", {}).get("severity", "")),
                _cell(alert.get("labels", {}).get("instance", "")),
                _cell(alert.get("status", {}).get("state", "")),
                _cell(", ".join(alert.get("status", {}).get("silencedBy", [])
                                + alert.get("status", {}).get("inhibitedBy", []))),
                _cell(alert.get("startsAt", ""))]
               for alert in data.current_alerts)
    silences = ([_cell(silence.get("status", {}).get("state", "")),
                 _cell(", ".join(_matcher_text(m) for m in silence.get("matchers", []))),
                 _cell(silence.get("createdBy", "")), _cell(silence.get("comment", "")),
                 _cell(silence.get("startsAt", "")), _cell(silence.get("endsAt", ""))]
                for silence in data.silences)
    html = "<h2>Alertmanager now</h2>"
    html += (_table("current-alerts", ["alert", "severity", "instance", "state",
                                       "silenced / inhibited by", "since"], current)
             if data.current_alerts else "<p class='empty'>No alerts in Alertmanager.</p>")
    html += "<h3>Silences active in or since the period</h3>"
    html += (_table("silences", ["state", "matchers", "created by", "comment", "starts",
                                 "ends"], silences)
             if data.silences else "<p class='empty'>No silences.</p>")
    return html


def _matcher_text(matcher: dict) -> str:
    operators = {(True, False): "=", (True, True): "=~", (False, False): "!=",
                 (False, True): "!~"}
    operator = operators[bool(matcher.get("isEqual", True)), bool(matcher.get("isRegex"))]
    return f"{matcher.get('name')}{operator}\"{matcher.get('value')}\""


def _anomalies(data: ReportData) -> str:
    html = "<h2>Most anomalous series</h2>"
    if not data.anomalies:
        return html + "<p class='empty' id='no-anomalies'>No series scored above 1.</p>"
    rows = ([_cell(_labels_text(series.labels, skip=())), _cell(f"{series.max_score:.2f}", "n")]
            for series in data.anomalies)
    html += _table("anomalies", ["series", "highest anomaly_score"], rows)
    for series in data.anomalies:
        html += f"<img class='plot' alt='{escape(_labels_text(series.labels, ()), True)}' " \
                f"src='data:image/png;base64,{_plot_png(series)}'>"
    return html


def _plot_png(series: AnomalySeries) -> str:
    buffer = io.BytesIO()
    draw_band_plot(buffer, series.seconds, series.y, series.yhat_lower, series.yhat_upper,
                   series.anomaly_score, title=_labels_text(series.labels, skip=()),
                   size_inches=(12, 3.4), legend_location="best", yhat=series.yhat)
    return base64.b64encode(buffer.getvalue()).decode()


def _sources(data: ReportData) -> str:
    sources = data.sources
    items = [f"Prometheus {sources.prometheus_url}",
             f"Alertmanager {sources.alertmanager_url or '(not given)'}",
             f"audit log {sources.audit_log or '(not given)'}"]
    return "<p class='muted' id='sources'>Read from " + escape("; ".join(items)) + ".</p>"

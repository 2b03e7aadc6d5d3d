"""What a report says, computed from its data: counts, the noisiest alerts, time to resolve, and
one row per remediator decision, joined to the firing it was about."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from remediator.audit import record_time
from remediator.report.episodes import Episode
from remediator.report.sources import ReportData


@dataclass(frozen=True)
class RemediationRow:
    """One decision of the remediator, its start and finish lines joined."""

    time: float
    alertname: str
    labels: dict[str, str]
    starts_at: float | None
    """The alert's startsAt (when Prometheus first sent it as firing)."""
    rule: str
    action: str
    decision: str
    """acted, dry run, skipped or rejected."""
    outcome: str
    """The result (success, failure, timeout, error, unfinished), what would have run, or why
    it was skipped or rejected."""
    detail: str
    duration_seconds: float | None
    count: int = 1
    """How many identical decisions this row stands for (Alertmanager's re-sends)."""
    last_time: float | None = None

    @property
    def instance(self) -> str:
        return self.labels.get("instance", "")


@dataclass(frozen=True)
class AlertNoise:
    labels: dict[str, str]
    firings: int
    firing_seconds: float


@dataclass(frozen=True)
class ResolveTimes:
    alertname: str
    firings: int
    resolved: int
    median_seconds: float | None
    max_seconds: float | None


def count_by(episodes: Iterable[Episode], label: str) -> list[tuple[str, int]]:
    counts = Counter(episode.labels.get(label, "") for episode in episodes)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def firing_seconds(episode: Episode, data: ReportData) -> float:
    """How long it fired inside the period."""
    end = episode.resolved_at if episode.resolved_at is not None else data.end
    return max(0.0, end - max(data.start, episode.started_at))


def noisiest(data: ReportData, limit: int = 10) -> list[AlertNoise]:
    """The alert series that fired most often (then longest)."""
    grouped: dict[tuple, list[Episode]] = {}
    for episode in data.episodes:
        grouped.setdefault(episode.identity, []).append(episode)
    noise = [AlertNoise(dict(identity), len(group),
                        sum(firing_seconds(episode, data) for episode in group))
             for identity, group in grouped.items()]
    return sorted(noise, key=lambda item: (-item.firings, -item.firing_seconds))[:limit]


def resolve_times(episodes: Iterable[Episode]) -> list[ResolveTimes]:
    by_name: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_name.setdefault(episode.alertname, []).append(episode)
    rows = []
    for name, group in sorted(by_name.items()):
        times = [episode.time_to_resolve for episode in group
                 if episode.time_to_resolve is not None]
        rows.append(ResolveTimes(name, len(group), len(times),
                                 statistics.median(times) if times else None,
                                 max(times) if times else None))
    return rows


def remediation_rows(audit: Iterable[dict[str, Any]]) -> list[RemediationRow]:
    """One row per decision, oldest first; an action's `finished` line completes its row."""
    finished = {record["run_id"]: record for record in audit
                if record.get("event") == "finished" and "run_id" in record}
    rows = []
    for record in audit:
        event = record.get("event")
        if event == "finished":
            continue
        if event == "started":
            result = finished.get(record.get("run_id"))
            decision, outcome, detail = "acted", "unfinished", _invocation(record)
            duration = None
            if result is not None:
                outcome, detail = result.get("result", "?"), _result_detail(result)
                duration = result.get("duration_seconds")
        elif event == "dry_run":
            decision, outcome, detail, duration = ("dry run", "would have run",
                                                   _invocation(record), None)
        elif event == "skipped":
            decision, outcome, detail, duration = ("skipped", record.get("reason", "?"),
                                                   record.get("detail", ""), None)
        elif event == "rejected":
            decision, outcome, duration = "rejected", record.get("reason", "?"), None
            detail = f"HTTP {record.get('http_status')} to {record.get('client')}: " \
                     f"{record.get('detail', '')}"
        else:
            continue
        rows.append(RemediationRow(
            time=record_time(record) or 0.0, alertname=record.get("alertname", ""),
            labels=record.get("labels", {}), starts_at=_epoch(record.get("starts_at")),
            rule=record.get("rule", ""), action=record.get("action", ""), decision=decision,
            outcome=outcome, detail=detail, duration_seconds=duration))
    return rows


def collapse_repeats(rows: Iterable[RemediationRow]) -> list[RemediationRow]:
    """Each run of duplicate skips for one alert and rule (Alertmanager re-sending a firing
    that already acted) as one row with a count, at the place of its first."""
    collapsed: list[RemediationRow] = []
    open_runs: dict[tuple, int] = {}
    for row in rows:
        if row.decision != "skipped" or row.outcome != "duplicate":
            collapsed.append(row)
            continue
        key = (row.alertname, tuple(sorted(row.labels.items())), row.rule, row.starts_at)
        index = open_runs.get(key)
        if index is None:
            open_runs[key] = len(collapsed)
            collapsed.append(row)
        else:
            first = collapsed[index]
            collapsed[index] = replace(first, count=first.count + 1, last_time=row.time)
    return collapsed


def rows_for(episode: Episode, rows: Iterable[RemediationRow], step: float) -> list[RemediationRow]:
    """The decisions about this firing: same labels (Alertmanager may add external labels),
    and an alert startsAt inside the episode (to one step)."""
    return [row for row in rows if row.starts_at is not None
            and all(row.labels.get(name) == value for name, value in episode.labels.items())
            and episode.started_at - step <= row.starts_at <= episode.last_seen + step]


def outcome_summary(rows: Iterable[RemediationRow]) -> str:
    """"restart: success; skipped (duplicate) x3" - what was done, then what was not."""
    counts = Counter((row.action, row.decision, row.outcome) for row in rows)
    parts = []
    for (action, decision, outcome), count in sorted(counts.items(), key=_acted_first):
        text = outcome if decision == "acted" else f"{decision} ({outcome})"
        if action:
            text = f"{action}: {text}"
        parts.append(text + (f" x{count}" if count > 1 else ""))
    return "; ".join(parts)


def totals(rows: Iterable[RemediationRow]) -> Counter:
    return Counter((row.decision, row.outcome) for row in rows)


def slack_summary(data: ReportData, rows: list[RemediationRow], link: str | None) -> str:
    severities = ", ".join(f"{name or 'no severity'} {count}"
                           for name, count in count_by(data.episodes, "severity"))
    still = sum(episode.resolved_at is None for episode in data.episodes)
    acted = [row for row in rows if row.decision == "acted"]
    results = Counter(row.outcome for row in acted)
    lines = [f"*aiinfra alert report* {format_period(data.start, data.end)}",
             f"{len(data.episodes)} firings" + (f" ({severities})" if severities else "")
             + (f", {still} still firing" if still else ""),
             f"Remediation: {len(acted)} actions"
             + (f" ({', '.join(f'{n} {r}' for r, n in results.most_common())})" if acted else "")
             + f", {sum(row.decision == 'dry run' for row in rows)} dry runs, "
               f"{sum(row.decision == 'skipped' for row in rows)} skipped, "
               f"{sum(row.decision == 'rejected' for row in rows)} requests rejected"]
    if data.errors:
        lines.append("Not read: " + ", ".join(data.errors))
    if link:
        lines.append(f"<{link}|Full report>")
    return "\n".join(lines)


def format_time(seconds: float, style: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(style)


def format_period(start: float, end: float) -> str:
    return f"{format_time(start)} to {format_time(end)} UTC"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _acted_first(item: tuple[tuple[str, str, str], int]) -> tuple:
    (action, decision, outcome), _ = item
    return (decision != "acted", action, decision, outcome)


def _invocation(record: dict[str, Any]) -> str:
    invocation = record.get("invocation", {})
    if "argv" in invocation:
        return " ".join(_quoted(item) for item in invocation["argv"])
    if "url" in invocation:
        return f"{invocation.get('method', '')} {invocation['url']}"
    if "text" in invocation:
        return f"Slack {invocation.get('channel', '')}: {invocation['text']}".strip()
    return str(invocation)


def _quoted(item: str) -> str:
    return item if item and all(c.isalnum() or c in "-_./:=@%+," for c in item) else repr(item)


def _result_detail(result: dict[str, Any]) -> str:
    parts = []
    if result.get("exit_code") is not None:
        parts.append(f"exit {result['exit_code']}")
    if result.get("http_status") is not None:
        parts.append(f"HTTP {result['http_status']}")
    if result.get("output"):
        parts.append(str(result["output"]))
    return " · ".join(parts)


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


